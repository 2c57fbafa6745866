"""Every SQL query of the catalog."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from app.catalog.models import (
    Artist,
    artist_genres,
    genre_key,
    genre_keys,
    genre_rows,
    name_columns,
    name_hash,
    search_text,
)
from app.catalog.schemas import unstorable_character
from app.db import utcnow
from app.errors import ValidationFailed
from app.kit.text import fold

# The columns a search is computed from: a change to any of them refreshes `search_text`.
SEARCHED = frozenset({"name", "genres", "notable_works"})
# A trigram index answers a word of at least this many characters; shorter ones are checked row by row.
TRIGRAM = 3
# PostgreSQL orders by left(name_key, ORDER_PREFIX), name_key, id: the index `ix_artists_order` holds the
# bounded prefix (a B-tree entry holds ~2.7 kB there), and under a bytewise collation (C.UTF-8; folded text
# is ASCII anyway) two keys that differ in their prefix compare as their prefixes do, so the order is that
# of name_key, id. Migration 0005 makes the index with the same number.
ORDER_PREFIX = 200
# The FTS5 table of migration 0005 (SQLite): rowid is the artist's id.
artists_search = table("artists_search", column("rowid"))
# Every genre, each with its first spelling (lowest artist id, then position): a skip scan over
# ix_artist_genres_key, two index probes per genre instead of a read of every artist.
GENRES_SQL = text(
    """
    WITH RECURSIVE keys(key) AS (
        SELECT min(key) FROM artist_genres
        UNION ALL
        SELECT (SELECT min(key) FROM artist_genres WHERE key > keys.key) FROM keys WHERE keys.key IS NOT NULL
    )
    SELECT (
        SELECT name FROM artist_genres AS first
        WHERE first.key = keys.key ORDER BY first.artist_id, first.position LIMIT 1
    )
    FROM keys WHERE keys.key IS NOT NULL
    """
)


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
        """The definition of a search: every folded word a substring of `search_text`, the genre key one
        of `genre_keys`. PostgreSQL's trigram indexes serve these LIKEs as they are."""
        statement = select(Artist).where(*(_contains(Artist.search_text, word) for word in _words(query)))
        if (genre := _genre_key(query)) is not None:
            statement = statement.where(_contains(Artist.genre_keys, genre))
        return statement

    def _sqlite_indexed(self, query: ArtistQuery) -> tuple[Select[Artist], ColumnElement[bool]] | None:
        """The same rows found through SQLite's FTS5 table, or None when no word has 3+ characters and
        there is no genre: the words of 3+ characters and the genre key (`|x|`: always 3+) become one
        FTS5 trigram query, whose phrases match exactly where the substrings are (text and words are
        folded: ASCII, lower case); words of 1-2 characters, which no trigram index can answer, stay
        LIKEs over the rows found. Also the FTS5 condition alone when it is the whole filter, to count
        without reading the artists table."""
        words = _words(query)
        phrases = [f"search_text : {_fts_string(word)}" for word in words if len(word) >= TRIGRAM]
        if (genre := _genre_key(query)) is not None:
            phrases.append(f"genre_keys : {_fts_string(genre)}")
        if not phrases:
            return None
        match = literal_column("artists_search").op("MATCH")(" AND ".join(phrases))
        statement = select(Artist).where(
            Artist.id.in_(select(artists_search.c.rowid).where(match)),
            *(_contains(Artist.search_text, word) for word in words if len(word) < TRIGRAM),
        )
        return statement, match

    async def search(self, query: ArtistQuery) -> tuple[Sequence[Artist], int]:
        """The page and the exact total. PostgreSQL plans both from its statistics (trigram GIN indexes
        for the count, the order index for a page of a common word). SQLite counts through FTS5, then
        picks the page's plan itself: walking `ix_artists_order` and testing each row (cheap when
        matches are dense: (offset + page) × rows / total steps) or fetching every match and sorting
        them (cheap when they are few)."""
        filtered = self._filtered(query)
        offset = (query.page - 1) * query.per_page
        if self.session.get_bind().dialect.name == "postgresql":
            # asyncpg prepares statements: a generic plan (after 5 runs) cannot see that '%ab%' has no
            # trigram and would scan the whole GIN index (300+ ms); plan each search for its words.
            await self.session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            total = await self._count(filtered)
            order: list[Any] = [
                func.left(Artist.name_key, ORDER_PREFIX),
                Artist.name_key,
                Artist.id,
            ]
        else:
            indexed = self._sqlite_indexed(query)
            if indexed is None:
                total = await self._count(filtered)
            elif any(len(word) < TRIGRAM for word in _words(query)):
                total = await self._count(indexed[0])
            else:
                total = (
                    await self.session.scalar(
                        select(func.count()).select_from(artists_search).where(indexed[1])
                    )
                    or 0
                )
            order = [Artist.name_key, Artist.id]
            if offset >= total:  # past the last match: LIMIT/OFFSET would return nothing too
                return [], total
            rows = await self.session.scalar(select(func.max(Artist.id))) or 0
            if (offset + query.per_page) * rows >= total * total:  # sparse matches: fetch them, sort
                if indexed is not None:
                    filtered = indexed[0]  # rowid lookups of the FTS5 matches
                else:  # a scan of the table, not of the index ("+" keeps SQLite off ix_artists_order)
                    order = [literal_column("+artists.name_key"), literal_column("+artists.id")]
        page = await self.session.scalars(filtered.order_by(*order).limit(query.per_page).offset(offset))
        return page.all(), total

    async def _count(self, statement: Select[Artist]) -> int:
        return await self.session.scalar(select(func.count()).select_from(statement.subquery())) or 0

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
        if artist is not None and "genres" in changes:
            await self.session.execute(delete(artist_genres).where(artist_genres.c.artist_id == artist_id))
            if rows := genre_rows(artist_id, artist.genres or []):
                await self.session.execute(insert(artist_genres), rows)
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
        """Every genre in the catalog, for the search page's filter: one spelling per folded genre, the
        first one met reading the artists by id, sorted by folded genre (from `artist_genres`)."""
        names = await self.session.scalars(GENRES_SQL)
        return sorted(names, key=fold)


def _words(query: ArtistQuery) -> list[str]:
    """The folded words of `q` (folding leaves single spaces, none at the ends)."""
    folded = fold(query.q) if query.q else ""
    return folded.split(" ") if folded else []


def _contains(column: Any, text: str) -> ColumnElement[bool]:
    return column.like(_like_pattern(text), escape="\\")  # type: ignore[no-any-return]


def _genre_key(query: ArtistQuery) -> str | None:
    return genre_key(query.genre) if query.genre and fold(query.genre) else None


def _fts_string(text: str) -> str:
    """An FTS5 string: every character literal, a double quote doubled."""
    return '"' + text.replace('"', '""') + '"'
