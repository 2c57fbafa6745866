"""The catalog's shapes, named by role: ArtistFacts (the fields, listed once), ArtistCreate, ArtistUpdate,
ArtistRecord; and the rules on text every field and search parameter share.

Text is refused (422) when a database could not store it or it could not be told apart from others:
control characters (NUL first: PostgreSQL's TEXT cannot hold it) anywhere but line breaks and tabs in
`notes` (NUL never), lone surrogates (no UTF-8 exists for them), and a name that folds to nothing (only
characters the transliteration drops), which could neither be searched nor compared for uniqueness.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from app.kit.text import fold

NOTES_LAYOUT = frozenset("\n\r\t")  # line breaks (CRLF too, as a textarea sends them) and tabs


def unstorable_character(text: str, allowed: frozenset[str] = frozenset()) -> str | None:
    """The first character of `text` no text field may hold (a control character not in `allowed`, or a
    lone surrogate), or None."""
    for character in text:
        if character not in allowed and unicodedata.category(character) in ("Cc", "Cs"):
            return character
    return None


def _refused(character: str) -> ValueError:
    return ValueError(f"must not contain control characters (found U+{ord(character):04X})")


def plain_text(text: str) -> str:
    """A single-line text: no control character at all."""
    character = unstorable_character(text)
    if character is not None:
        raise _refused(character)
    return text


def plain_query(text: str | None) -> str | None:
    """`plain_text` for an optional query parameter (`q`, `genre`): a router declares it as
    `Annotated[str | None, Query(...), AfterValidator(plain_query)]`, so a NUL is a 422 there."""
    return None if text is None else plain_text(text)


def _notes_text(text: str) -> str:
    character = unstorable_character(text, NOTES_LAYOUT)
    if character is not None:
        raise _refused(character)
    return text


def _name_text(text: str) -> str:
    plain_text(text)
    if not fold(text):
        raise ValueError("must contain letters, digits or symbols that can be searched")
    return text


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_name_text)
]
ShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(plain_text)
]
Genre = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60), AfterValidator(plain_text)
]
Work = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300), AfterValidator(plain_text)
]
Notes = Annotated[str, StringConstraints(max_length=5000), AfterValidator(_notes_text)]
Year = Annotated[int, Field(ge=1000, le=2100)]
Kind = Literal["person", "group"]


def _years_in_order(start: int | None, end: int | None) -> None:
    if start is not None and end is not None and end < start:
        raise ValueError("active_to must not be before active_from")


class ArtistFacts(BaseModel):
    """An artist's own fields, listed once: what the catalog stores, the API accepts and shows, and the
    writer is given (as quoted data) when a portrait starts."""

    # strict: a year sent as "1950" or a name sent as 42 is a client bug worth reporting, not guessing.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    kind: Kind = "person"
    country: ShortText | None = None
    genres: list[Genre] = Field(default_factory=list, max_length=20)
    active_from: Year | None = None
    active_to: Year | None = None
    notable_works: list[Work] = Field(default_factory=list, max_length=50)
    notes: Notes | None = None

    @model_validator(mode="after")
    def _years_in_order(self) -> ArtistFacts:
        _years_in_order(self.active_from, self.active_to)
        return self

    @classmethod
    def of(cls, artist: Any) -> ArtistFacts:
        """A snapshot of a stored artist's facts (copied: later changes to the row do not reach it)."""
        return cls.model_validate({name: getattr(artist, name) for name in cls.model_fields})


class ArtistCreate(ArtistFacts):
    """The body of `POST /artists`."""


class ArtistUpdate(BaseModel):
    """The body of `PATCH`: only the fields sent are changed; `name` and `kind` cannot be cleared."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name | None = None
    kind: Kind | None = None
    country: ShortText | None = None
    genres: list[Genre] | None = Field(None, max_length=20)
    active_from: Year | None = None
    active_to: Year | None = None
    notable_works: list[Work] | None = Field(None, max_length=50)
    notes: Notes | None = None

    @model_validator(mode="after")
    def _valid_changes(self) -> ArtistUpdate:
        _years_in_order(self.active_from, self.active_to)
        for field in ("name", "kind", "genres", "notable_works"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class ArtistRecord(ArtistFacts):
    """A stored artist: its facts, its id and its timestamps."""

    model_config = ConfigDict(from_attributes=True, strict=False, extra="ignore")

    id: int
    created_at: datetime
    updated_at: datetime
