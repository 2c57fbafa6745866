"""The catalog's wire shapes, named by role: ArtistCreate, ArtistUpdate, ArtistPublic, ArtistsPublic."""

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


class _Input(BaseModel):
    # strict: a year sent as "1950" or a name sent as 42 is a client bug worth reporting, not guessing.
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _years_in_order(self) -> Any:
        start, end = getattr(self, "active_from", None), getattr(self, "active_to", None)
        if start is not None and end is not None and end < start:
            raise ValueError("active_to must not be before active_from")
        return self


class ArtistCreate(_Input):
    name: Name
    kind: Kind = "person"
    country: ShortText | None = None
    genres: list[Genre] = Field(default_factory=list, max_length=20)
    active_from: Year | None = None
    active_to: Year | None = None
    notable_works: list[Work] = Field(default_factory=list, max_length=50)
    notes: Notes | None = None


class ArtistUpdate(_Input):
    """Only the fields sent are changed; `name` and `kind` cannot be cleared."""

    name: Name | None = None
    kind: Kind | None = None
    country: ShortText | None = None
    genres: list[Genre] | None = Field(None, max_length=20)
    active_from: Year | None = None
    active_to: Year | None = None
    notable_works: list[Work] | None = Field(None, max_length=50)
    notes: Notes | None = None

    @model_validator(mode="after")
    def _required_fields_not_cleared(self) -> ArtistUpdate:
        for field in ("name", "kind", "genres", "notable_works"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class ArticleSummary(BaseModel):
    """What an artist shows of its stored portrait; filled in by the articles package."""

    article_id: int
    version: int
    language: str
    length: str
    words: int
    stale: bool
    truncated: bool
    created_at: datetime
    url: str


class ArtistPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    kind: Kind
    country: str | None
    genres: list[str]
    active_from: int | None
    active_to: int | None
    notable_works: list[str]
    notes: str | None
    created_at: datetime
    updated_at: datetime
    article: ArticleSummary | None = None


class ArtistsPublic(BaseModel):
    items: list[ArtistPublic]
    total: int
    page: int
    per_page: int
