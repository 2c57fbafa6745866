"""The wire shapes of stored portraits."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ArticleVersion(BaseModel):
    """A stored version, without its text."""

    article_id: int
    artist_id: int
    version: int
    language: str
    length: str
    words: int
    model: str
    writer: str
    stale: bool
    truncated: bool
    finish_reason: str
    # Long portraits: the calls made to go on after a cut, and LongBench-Write's S_l against the target
    # (null for a version stored before it was recorded and never scored).
    continuations: int
    length_score: float | None
    # A revision (`POST .../article/revisions`): the reader's instruction and the version it rewrote; null
    # for a portrait written from the facts alone.
    instruction: str | None
    revises_version: int | None
    created_at: datetime
    url: str


class OutlineEntry(BaseModel):
    title: str
    target_words: int


class ArticlePublic(ArticleVersion):
    markdown: str
    html: str
    usage: dict[str, Any] | None
    duration_ms: int
    ttft_ms: int | None
    # A planned portrait's sections, in order (null when it was written without a plan).
    outline: list[OutlineEntry] | None


class ArticleVersions(BaseModel):
    items: list[ArticleVersion]


class ArticleSummary(BaseModel):
    """What an artist shows of its stored portrait (default language, long)."""

    article_id: int
    version: int
    language: str
    length: str
    words: int
    stale: bool
    truncated: bool
    created_at: datetime
    url: str
