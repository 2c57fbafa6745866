"""Artists as the API shows them: the catalog's record plus the summary of the stored portrait in the
default language at the default length (`long`)."""

from __future__ import annotations

from collections.abc import Sequence

from app.articles.service import ArticleService
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery
from app.catalog.schemas import ArtistCreate, ArtistUpdate
from app.catalog.service import CatalogService
from app.collection.schemas import ArtistPublic, ArtistsPublic

SUMMARY_LENGTH = "long"


class CollectionService:
    def __init__(self, catalog: CatalogService, articles: ArticleService, default_language: str) -> None:
        self.catalog = catalog
        self.articles = articles
        self.default_language = default_language

    async def search(self, query: ArtistQuery) -> ArtistsPublic:
        artists, total = await self.catalog.search(query)
        return ArtistsPublic(
            items=await self._public(artists), total=total, page=query.page, per_page=query.per_page
        )

    async def get(self, artist_id: int) -> ArtistPublic:
        return (await self._public([await self.catalog.get(artist_id)]))[0]

    async def create(self, data: ArtistCreate) -> ArtistPublic:
        return ArtistPublic.model_validate(await self.catalog.create(data))  # new: no portrait yet

    async def update(self, artist_id: int, data: ArtistUpdate) -> ArtistPublic:
        return (await self._public([await self.catalog.update(artist_id, data)]))[0]

    async def delete(self, artist_id: int) -> None:
        await self.catalog.delete(artist_id)

    async def _public(self, artists: Sequence[Artist]) -> list[ArtistPublic]:
        summaries = await self.articles.summaries(artists, self.default_language, SUMMARY_LENGTH)
        return [
            ArtistPublic.model_validate(artist).model_copy(update={"article": summaries.get(artist.id)})
            for artist in artists
        ]
