"""The event log's values: what a job appends and every reader receives, whatever the wire (SSE,
bare markdown, WebSocket messages).

Each payload is a typed value built in one place; `data()` is its JSON object, with `type` repeating
the event name so a reader that ignores event names still knows. `Event` numbers a payload within its
log (`seq` from 1). Nothing here knows a wire format: `streaming/sse.py` and `streaming/ws_wire.py` do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

EventType = Literal["metadata", "text", "continued", "outline", "section", "done", "error"]


@dataclass(frozen=True, slots=True)
class Metadata:
    type: ClassVar[EventType] = "metadata"
    job_id: str | None
    artist_id: int
    artist_name: str
    model: str
    writer: str
    cached: bool
    article_id: int | None
    version: int | None
    language: str
    length: str
    target_words: int
    started_at: datetime
    stale: bool = False

    def data(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "job_id": self.job_id,
            "artist": {"id": self.artist_id, "name": self.artist_name},
            "model": self.model,
            "writer": self.writer,
            "cached": self.cached,
            "article_id": self.article_id,
            "version": self.version,
            "language": self.language,
            "length": self.length,
            "target_words": self.target_words,
            "started_at": self.started_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "stale": self.stale,
        }


@dataclass(frozen=True, slots=True)
class Text:
    type: ClassVar[EventType] = "text"
    delta: str

    def data(self) -> dict[str, Any]:
        return {"type": self.type, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class Continued:
    """A seam: one upstream call ended and the next goes on with the same text."""

    type: ClassVar[EventType] = "continued"
    reason: str
    attempt: int

    def data(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, "attempt": self.attempt}


@dataclass(frozen=True, slots=True)
class OutlineSection:
    title: str
    target_words: int


@dataclass(frozen=True, slots=True)
class Outline:
    type: ClassVar[EventType] = "outline"
    sections: tuple[OutlineSection, ...]

    def data(self) -> dict[str, Any]:
        sections = [{"title": s.title, "target_words": s.target_words} for s in self.sections]
        return {"type": self.type, "sections": sections}


@dataclass(frozen=True, slots=True)
class Section:
    type: ClassVar[EventType] = "section"
    index: int
    title: str

    def data(self) -> dict[str, Any]:
        return {"type": self.type, "index": self.index, "title": self.title}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Done:
    type: ClassVar[EventType] = "done"
    article_id: int
    version: int
    words: int
    finish_reason: str
    truncated: bool
    usage: Usage | None
    duration_ms: int
    continuations: int = 0  # seams: calls made to go on after a cut
    length_score: float | None = None  # LongBench-Write's S_l against the target length

    def data(self) -> dict[str, Any]:
        usage = self.usage
        return {
            "type": self.type,
            "article_id": self.article_id,
            "version": self.version,
            "words": self.words,
            "finish_reason": self.finish_reason,
            "truncated": self.truncated,
            "usage": None
            if usage is None
            else {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
            "duration_ms": self.duration_ms,
            "continuations": self.continuations,
            "length_score": self.length_score,
        }


@dataclass(frozen=True, slots=True)
class Error:
    type: ClassVar[EventType] = "error"
    code: str
    message: str
    retryable: bool
    retry_after: int | None = None  # whole seconds

    def data(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "retry_after": self.retry_after,
        }


Payload = Metadata | Text | Continued | Outline | Section | Done | Error
TERMINAL: tuple[type[Payload], ...] = (Done, Error)


@dataclass(slots=True, eq=False)
class Event:
    """A payload at its place in one log. An event belongs to exactly one log (one stream id)."""

    seq: int
    payload: Payload
    # The encoder's memo (`streaming/sse.py`): the wire bytes of this event, made by the first reader
    # that sends it and shared by every other reader of the same log. Nothing else reads or writes it.
    wire: bytes | None = field(default=None, repr=False)
    # The WebSocket encoder's memo (`streaming/ws_wire.py`): this event's message up to the reader's own
    # `request_id`, shared the same way. Nothing else reads or writes it either.
    ws_wire: str | None = field(default=None, repr=False)

    @property
    def type(self) -> EventType:
        return self.payload.type

    @property
    def terminal(self) -> bool:
        return isinstance(self.payload, TERMINAL)


def merge_text(events: Iterable[Event]) -> Iterator[Event]:
    """Fold runs of consecutive `text` events into one carrying the last seq: a reader that fell behind
    gets fewer, larger events and loses nothing."""
    pending: list[Event] = []
    for event in events:
        if isinstance(event.payload, Text):
            pending.append(event)
            continue
        if pending:
            yield _joined(pending)
            pending = []
        yield event
    if pending:
        yield _joined(pending)


def _joined(run: list[Event]) -> Event:
    if len(run) == 1:
        return run[0]
    delta = "".join(event.payload.delta for event in run)  # type: ignore[union-attr]
    return Event(seq=run[-1].seq, payload=Text(delta))
