"""One event model flows from a job to every reader: `metadata`, `text`…, then `done` or `error`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

EventType = Literal["metadata", "text", "done", "error"]
TERMINAL: frozenset[str] = frozenset({"done", "error"})


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    type: EventType
    data: dict[str, Any]  # carries "type" too, so a reader that ignores SSE event names still knows
    # The SSE frame, encoded once when the event is appended: a thousand readers of one job share it.
    frame: bytes | None = None

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL


def merge_text(events: Iterable[Event]) -> Iterator[Event]:
    """Fold runs of consecutive `text` events into one carrying the last seq: a reader that fell behind
    gets fewer, larger events and loses nothing."""
    pending: list[Event] = []
    for event in events:
        if event.type == "text":
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
    delta = "".join(event.data["delta"] for event in run)
    return Event(seq=run[-1].seq, type="text", data={"type": "text", "delta": delta})
