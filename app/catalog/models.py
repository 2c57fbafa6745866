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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Integer, String, Text, event, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow
from app.kit.text import fold

GENRE_SEPARATOR = "|"
YEARS_IN_ORDER = "active_to IS NULL OR active_from IS NULL OR active_to >= active_from"
YEARS_CONSTRAINT = "ck_artists_active_years"  # the naming convention's name for "active_years"


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


def _refresh_folded_columns(_mapper: Any, _connection: Any, artist: Artist) -> None:
    """For rows written through the ORM unit of work (a create, the seed); `ArtistRepository.update`
    writes its own UPDATE and keeps these columns itself."""
    for column, value in name_columns(artist.name).items():
        setattr(artist, column, value)
    genres = artist.genres or []
    artist.search_text = search_text(artist.name, genres, artist.notable_works or [])
    artist.genre_keys = genre_keys(genres)


event.listen(Artist, "before_insert", _refresh_folded_columns)
event.listen(Artist, "before_update", _refresh_folded_columns)
