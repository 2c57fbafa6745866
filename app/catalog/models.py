"""The artist table.

`name_key`, `search_text` and `genre_keys` are folded copies kept by the app (see `_refresh_folded_columns`):
SQLite's LIKE folds only ASCII case and its JSON stores `\\u00e9` escapes, so case- and accent-insensitive
search and uniqueness need columns that are already folded, the same way, on every database.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow
from app.kit.text import fold

GENRE_SEPARATOR = "|"


class Artist(Base):
    __tablename__ = "artists"
    __table_args__ = (CheckConstraint("kind IN ('person', 'group')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10), default="person")
    country: Mapped[str | None] = mapped_column(String(100))
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    active_from: Mapped[int | None] = mapped_column(Integer)
    active_to: Mapped[int | None] = mapped_column(Integer)
    notable_works: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str | None] = mapped_column(Text)
    search_text: Mapped[str] = mapped_column(Text, default="")
    genre_keys: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def genre_key(genre: str) -> str:
    return f"{GENRE_SEPARATOR}{fold(genre)}{GENRE_SEPARATOR}"


def _refresh_folded_columns(_mapper: Any, _connection: Any, artist: Artist) -> None:
    artist.name_key = fold(artist.name)
    genres = artist.genres or []
    works = artist.notable_works or []
    artist.search_text = "\n".join(fold(part) for part in [artist.name, *genres, *works])
    artist.genre_keys = "".join(genre_key(genre) for genre in genres)


event.listen(Artist, "before_insert", _refresh_folded_columns)
event.listen(Artist, "before_update", _refresh_folded_columns)
