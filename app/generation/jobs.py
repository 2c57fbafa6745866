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
from app.streaming.events import Continued, Done, Error, Event, Metadata, Outline, Section, Text

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


@dataclass(frozen=True)
class Revision:
    """What a revision job rewrites (`POST .../article/revisions`, docs/revisions.md): the reader's
    instruction, and the stored version it revises with its markdown, which is the assistant's turn of the
    conversation the new version is written from. A process taking the job over rebuilds the same messages
    from it (the board keeps it in the job's record)."""

    instruction: str
    revises_version: int
    markdown: str  # the revised version's text, as stored
    article_id: int | None = None  # the revised version's id (for a person reading the record)


@dataclass(eq=False)
class Job:
    id: str
    artist_id: int
    facts: ArtistFacts  # the snapshot the writer is given, taken when the job starts
    language: str
    length: Length
    origin: Origin
    # A revision of the latest stored version (None: a portrait written from the facts alone).
    revision: Revision | None = None
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
    continuations: int = 0  # seams so far (`continued` events), takeovers included
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    grace: Timer | None = None
    cancel_requested: bool = False  # a job is cancelled once: a second cancel must not cut its last steps
    # Several processes (board.py): the last seq this process wrote or read of the job's log; `remote` for a
    # job another process runs (this one mirrors it from its log); `abandoned` once this process stopped
    # running it without ending it (taken over while stalled, or handed over at shutdown).
    seq: int = 0
    remote: bool = False
    abandoned: bool = False
    watcher: asyncio.Task[None] | None = None

    def apply(self, event: Event) -> None:
        """What an event of its log says of the job: how a mirror (or a process taking it over) knows it."""
        payload = event.payload
        self.seq = event.seq
        if isinstance(payload, Metadata):
            self.status = "running"
        elif isinstance(payload, Text):
            self.parts.append(payload.delta)
        elif isinstance(payload, Continued):
            self.continuations = payload.attempt
        elif isinstance(payload, Done):
            self.status, self.article_id, self.version = "done", payload.article_id, payload.version
        elif isinstance(payload, Error):
            self.status = "cancelled" if payload.code == "cancelled" else "error"
            self.error = JobError(payload.code, payload.message)

    @property
    def ended(self) -> bool:
        """Its log holds its last event (`done` or `error`)."""
        return self.status in ("done", "error", "cancelled")

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


@dataclass
class Recovery:
    """Where a job's log left it, for the process taking it over: whether it began (its `metadata`), and,
    for a planned portrait, its outline and the section it was in (where that section's text begins)."""

    began: bool = False
    outline: Outline | None = None
    section: int | None = None
    section_start: int = 0
    starts: dict[int, int] = field(default_factory=dict)  # each begun section's start in the text

    def read(self, job: Job, events: list[Event]) -> None:
        for event in events:
            job.apply(event)
            payload = event.payload
            if isinstance(payload, Metadata):
                self.began = True
            elif isinstance(payload, Outline):
                self.outline = payload
            elif isinstance(payload, Section):
                self.section, self.section_start = payload.index, len(job.text)
                self.starts[payload.index] = self.section_start
