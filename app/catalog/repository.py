"""Every SQL query of the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from app.catalog.models import Artist, genre_key
from app.kit.text import fold


def _like_pattern(text: str) -> str:
    """A LIKE pattern that matches `text` literally anywhere (escape char: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class ArtistQuery:
    q: str | None = None
    genre: str | None = None
    page: int = 1
    per_page: int = 20


class ArtistRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _filtered(self, query: ArtistQuery) -> Select[Artist]:
        statement = select(Artist)
        if query.q and fold(query.q):
            for word in fold(query.q).split(" "):
                statement = statement.where(Artist.search_text.like(_like_pattern(word), escape="\\"))
        if query.genre and fold(query.genre):
            statement = statement.where(
                Artist.genre_keys.like(_like_pattern(genre_key(query.genre)), escape="\\")
            )
        return statement

    async def search(self, query: ArtistQuery) -> tuple[Sequence[Artist], int]:
        filtered = self._filtered(query)
        total = await self.session.scalar(select(func.count()).select_from(filtered.subquery()))
        page = await self.session.scalars(
            filtered.order_by(Artist.name_key, Artist.id)
            .limit(query.per_page)
            .offset((query.page - 1) * query.per_page)
        )
        return page.all(), total or 0

    async def get(self, artist_id: int) -> Artist | None:
        return await self.session.get(Artist, artist_id)

    async def get_by_name(self, name: str) -> Artist | None:
        return await self.session.scalar(select(Artist).where(Artist.name_key == fold(name)))

    async def name_taken(self, name: str, *, except_id: int | None = None) -> bool:
        statement = select(Artist.id).where(Artist.name_key == fold(name))
        if except_id is not None:
            statement = statement.where(Artist.id != except_id)
        return (await self.session.scalar(statement)) is not None

    async def add(self, artist: Artist) -> Artist:
        self.session.add(artist)
        await self.session.flush()
        return artist

    async def delete(self, artist: Artist) -> None:
        await self.session.delete(artist)
        await self.session.flush()

    async def genres(self) -> list[str]:
        """Every genre in the catalog, for the search page's filter."""
        rows = await self.session.scalars(select(Artist.genres))
        seen: dict[str, str] = {}
        for genres in rows:
            for genre in genres or []:
                seen.setdefault(fold(genre), genre)
        return sorted(seen.values(), key=fold)
