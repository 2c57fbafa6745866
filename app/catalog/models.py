"""The artist table.

`name_key`, `name_hash`, `search_text` and `genre_keys` are folded copies kept by the app (see
`folded_columns`): SQLite's LIKE folds only ASCII case and its JSON stores `\\u00e9` escapes, so case- and
accent-insensitive search and uniqueness need columns that are already folded, the same way, on every
database. Folding transliterates, so it can make a name much longer (200 × `ﷺ` folds to 5,800
characters): `name_key` is TEXT, for ordering only (not indexed: a B-tree entry on PostgreSQL holds at
most about 2.7 kB), and uniqueness is held by `name_hash`, the SHA-256 of the folded name.

The database holds the rules a race could break: the years in order (`ck_artists_active_years`) and one
artist per folded name (`uq_artists_name_hash`). `facts_version` counts the changes to an artist's facts;
a stored portrait records the version it was written from, which is how staleness is told (never clocks).

`artist_genres` holds each artist's genres one per row (position, spelling, folded key), kept with the
artist's row in the same transaction and removed with it (ON DELETE CASCADE): the list of genres reads one
row per genre from its index instead of every artist (`ArtistRepository.genres`). The search indexes
(`SEARCH_INDEX_OBJECTS`) are access paths only, made by migration 0005 per database, and not modelled
here: see docs/search.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    event,
    insert,
    inspect,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow
from app.kit.text import fold

GENRE_SEPARATOR = "|"
YEARS_IN_ORDER = "active_to IS NULL OR active_from IS NULL OR active_to >= active_from"
YEARS_CONSTRAINT = "ck_artists_active_years"  # the naming convention's name for "active_years"
# The objects migration 0005 makes for search and paging that the models do not describe (an FTS5 table
# and its shadow tables and triggers on SQLite, expression and trigram indexes): autogenerate skips them.
SEARCH_INDEX_OBJECTS = (
    "artists_search",
    "ix_artists_order",
    "ix_artists_search_text_trgm",
    "ix_artists_genre_keys_trgm",
)


class Artist(Base):
    __tablename__ = "artists"
    __table_args__ = (
        CheckConstraint("kind IN ('person', 'group')", name="kind"),
        CheckConstraint(YEARS_IN_ORDER, name="active_years"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(Text)
    name_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(10), default="person")
    country: Mapped[str | None] = mapped_column(String(100))
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    active_from: Mapped[int | None] = mapped_column(Integer)
    active_to: Mapped[int | None] = mapped_column(Integer)
    notable_works: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str | None] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text, default="")
    genre_keys: Mapped[str] = mapped_column(Text, default="")
    facts_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


artist_genres = Table(
    "artist_genres",
    Base.metadata,
    Column("artist_id", ForeignKey("artists.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("key", Text, nullable=False),  # fold(name): at most 60 characters × 29 (ASCII), fits a B-tree
    Column("name", String(60), nullable=False),
    # the genres list: a skip scan over the keys, and the first spelling of each (lowest artist id)
    Index("ix_artist_genres_key", "key", "artist_id", "position"),
)


def genre_key(genre: str) -> str:
    return f"{GENRE_SEPARATOR}{fold(genre)}{GENRE_SEPARATOR}"


def name_hash(name: str) -> str:
    """What makes two names the same artist: the SHA-256 (hex) of the folded name."""
    return hashlib.sha256(fold(name).encode()).hexdigest()


def name_columns(name: str) -> dict[str, str]:
    return {"name_key": fold(name), "name_hash": name_hash(name)}


def search_text(name: str, genres: Iterable[str], works: Iterable[str]) -> str:
    return "\n".join(fold(part) for part in [name, *genres, *works])


def genre_keys(genres: Iterable[str]) -> str:
    return "".join(genre_key(genre) for genre in genres)


def genre_rows(artist_id: int, genres: Iterable[str]) -> list[dict[str, Any]]:
    """The `artist_genres` rows of an artist."""
    return [
        {"artist_id": artist_id, "position": position, "key": fold(genre), "name": genre}
        for position, genre in enumerate(genres)
    ]


def replace_genre_rows(connection: Connection, artist_id: int, genres: Iterable[str]) -> None:
    """Synchronous (flush events, migrations); `ArtistRepository.update` does the same on its session."""
    connection.execute(delete(artist_genres).where(artist_genres.c.artist_id == artist_id))
    rows = genre_rows(artist_id, genres)
    if rows:
        connection.execute(insert(artist_genres), rows)


def _refresh_folded_columns(_mapper: Any, _connection: Any, artist: Artist) -> None:
    """For rows written through the ORM unit of work (a create, the seed); `ArtistRepository.update`
    writes its own UPDATE and keeps these columns itself."""
    for column, value in name_columns(artist.name).items():
        setattr(artist, column, value)
    genres = artist.genres or []
    artist.search_text = search_text(artist.name, genres, artist.notable_works or [])
    artist.genre_keys = genre_keys(genres)


def _insert_genre_rows(_mapper: Any, connection: Connection, artist: Artist) -> None:
    rows = genre_rows(artist.id, artist.genres or [])
    if rows:
        connection.execute(insert(artist_genres), rows)


def _update_genre_rows(_mapper: Any, connection: Connection, artist: Artist) -> None:
    if inspect(artist).attrs.genres.history.has_changes():
        replace_genre_rows(connection, artist.id, artist.genres or [])


event.listen(Artist, "before_insert", _refresh_folded_columns)
event.listen(Artist, "before_update", _refresh_folded_columns)
# Rows written through the unit of work keep `artist_genres` in step (a delete cascades in the database).
event.listen(Artist, "after_insert", _insert_genre_rows)
event.listen(Artist, "after_update", _update_genre_rows)
