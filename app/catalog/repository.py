"""Every SQL query of the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from app.catalog.models import Artist, genre_key, genre_keys, name_columns, name_hash, search_text
from app.catalog.schemas import unstorable_character
from app.db import utcnow
from app.errors import ValidationFailed
from app.kit.text import fold

# The columns a search is computed from: a change to any of them refreshes `search_text`.
SEARCHED = frozenset({"name", "genres", "notable_works"})


def _like_pattern(text: str) -> str:
    """A LIKE pattern that matches `text` literally anywhere (escape char: backslash)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class ArtistQuery:
    """A search. Text with a control character in it (a NUL, which PostgreSQL cannot even be sent) is
    refused here, as the 422 of the parameter it came from."""

    q: str | None = None
    genre: str | None = None
    page: int = 1
    per_page: int = 20

    def __post_init__(self) -> None:
        fields = [
            {
                "loc": f"query.{name}",
                "message": f"must not contain control characters (found U+{ord(bad):04X})",
            }
            for name, value in (("q", self.q), ("genre", self.genre))
            if value is not None and (bad := unstorable_character(value)) is not None
        ]
        if fields:
            raise ValidationFailed(fields=fields)


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
        return await self.session.scalar(select(Artist).where(Artist.name_hash == name_hash(name)))

    async def name_taken(self, name: str, *, except_id: int | None = None) -> bool:
        statement = select(Artist.id).where(Artist.name_hash == name_hash(name))
        if except_id is not None:
            statement = statement.where(Artist.id != except_id)
        return (await self.session.scalar(statement)) is not None

    async def add(self, artist: Artist) -> Artist:
        self.session.add(artist)
        await self.session.flush()
        return artist

    async def update(self, artist_id: int, changes: dict[str, Any]) -> Artist | None:
        """Apply `changes` (facts by field) as one UPDATE of only those columns (and the folded copies
        that follow from them), bumping `facts_version` in the same statement; the row as it is now, or
        None if it is gone. The database checks its rules on the row as it ends, whatever a concurrent
        writer changed meanwhile; the row stays locked until the transaction ends (PostgreSQL: the row;
        SQLite: the database), so the refresh of `search_text` below reads what it writes."""
        values: dict[str, Any] = dict(changes)
        if "name" in changes:
            values.update(name_columns(changes["name"]))
        if "genres" in changes:
            values["genre_keys"] = genre_keys(changes["genres"])
        now = utcnow()
        artist = await self._update(
            artist_id, **values, facts_version=Artist.facts_version + 1, updated_at=now
        )
        if artist is not None and SEARCHED & changes.keys():
            # from the row as it is now, not as this request read it: a concurrent change of another
            # searched field is in it
            searched = search_text(artist.name, artist.genres or [], artist.notable_works or [])
            if searched != artist.search_text:
                artist = await self._update(artist_id, search_text=searched, updated_at=now)
        return artist

    async def _update(self, artist_id: int, **values: Any) -> Artist | None:
        statement = (
            update(Artist)
            .where(Artist.id == artist_id)
            .values(**values)
            .returning(Artist)
            .execution_options(synchronize_session=False, populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

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
