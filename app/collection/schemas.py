"""The collection's wire shapes: an artist with its portrait's summary, and a page of them."""

from __future__ import annotations

from pydantic import BaseModel

from app.articles.schemas import ArticleSummary
from app.catalog.schemas import ArtistRecord


class ArtistPublic(ArtistRecord):
    article: ArticleSummary | None = None


class ArtistsPublic(BaseModel):
    items: list[ArtistPublic]
    total: int
    page: int
    per_page: int
