"""The catalog's shapes, named by role: ArtistFacts (the fields, listed once), ArtistCreate, ArtistUpdate,
ArtistRecord."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Genre = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
Work = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Notes = Annotated[str, StringConstraints(max_length=5000)]
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
