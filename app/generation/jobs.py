"""A generation job: what one running (or recently finished) portrait is, as the registry keeps it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from app.articles.params import Length
from app.catalog.schemas import ArtistFacts
from app.kit.clock import Timer
from app.kit.text import count_words

JobKey = tuple[int, str, str]  # (artist id, language, length): at most one running job per key
# Who started it: a stream's job is cancelled once no reader is left (after the grace); a job started by
# `POST .../jobs`, the synchronous route, the page's form or the command line runs to its end.
Origin = Literal["stream", "job", "sync"]
Status = Literal["queued", "running", "done", "error", "cancelled"]
CANCELLED_MESSAGE = "The generation was cancelled."


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(eq=False)
class Job:
    id: str
    artist_id: int
    facts: ArtistFacts  # the snapshot the writer is given, taken when the job starts
    language: str
    length: Length
    origin: Origin
    # The artist's facts_version the snapshot was taken at, stored with the article (its staleness);
    # 0 (unknown) makes the article stale at once: a job must be built with the version it read.
    facts_version: int = 0
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: Status = "queued"
    readers: int = 0
    parts: list[str] = field(default_factory=list)  # the text so far
    article_id: int | None = None
    version: int | None = None
    error: JobError | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    grace: Timer | None = None
    cancel_requested: bool = False  # a job is cancelled once: a second cancel must not cut its last steps

    @property
    def key(self) -> JobKey:
        return (self.artist_id, self.language, self.length)

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    @property
    def runs_to_end(self) -> bool:
        return self.origin != "stream"

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def words(self) -> int:
        return count_words(self.text)
