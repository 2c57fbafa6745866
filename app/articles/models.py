"""Stored portraits: every finished generation is a new version, never overwritten."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class Article(Base):
    __tablename__ = "articles"
    __table_args__ = (
        # Also the index that finds the latest version of (artist, language, length).
        UniqueConstraint("artist_id", "language", "length", "version", name="uq_articles_version"),
        # One article per job, whichever process stored it (a job taken over: alembic 0007).
        Index("uq_articles_job_id", "job_id", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    artist_id: Mapped[int] = mapped_column(ForeignKey("artists.id", ondelete="CASCADE"))
    language: Mapped[str] = mapped_column(String(10))
    length: Mapped[str] = mapped_column(String(10))
    version: Mapped[int] = mapped_column(Integer)
    markdown: Mapped[str] = mapped_column(Text)
    # The markdown rendered once, when it was stored (a version never changes), by the renderer at
    # `renderer_version` (app/articles/render.py RENDERER_VERSION); re-rendered when that is bumped.
    html: Mapped[str] = mapped_column(Text)
    renderer_version: Mapped[int] = mapped_column(Integer)
    words: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200))
    writer: Mapped[str] = mapped_column(String(20))  # "demo" or "upstream"
    finish_reason: Mapped[str] = mapped_column(String(20))
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    duration_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(40))
    # The artist's `facts_version` the text was written from: stale once the artist's is higher (0: unknown,
    # so stale as soon as the artist has any version).
    facts_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Long portraits (docs/longform.md): the calls made to go on after a cut, LongBench-Write's length score
    # against the target, and a planned portrait's outline (title, sections with their start in `markdown`).
    continuations: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    length_score: Mapped[float | None] = mapped_column(Float)
    outline: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # A revision (docs/revisions.md): the reader's instruction and the version of the same (artist, language,
    # length) it rewrote; both NULL for a portrait written from the facts alone (alembic 0008).
    instruction: Mapped[str | None] = mapped_column(Text)
    revises_version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
