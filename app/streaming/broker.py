"""Event logs behind a small broker interface: a job appends, every reader keeps its own cursor.

A reader is a cursor (`read(after=seq)`), not a queue the job pushes into, so a slow reader never slows
the job or other readers, and a reader that reconnects resumes from its last id. The in-process broker
keeps logs in memory; a Redis Streams broker can implement the same interface for several instances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.streaming import sse
from app.streaming.events import Event, EventType


@dataclass(frozen=True)
class Batch:
    events: list[Event]
    closed: bool  # no event will follow the ones returned


class Broker(Protocol):
    async def create(self, stream_id: str) -> None: ...
    async def append(self, stream_id: str, type_: EventType, data: dict[str, Any]) -> Event: ...
    async def close(self, stream_id: str, retention: float) -> None: ...
    async def read(self, stream_id: str, after: int, wait: float) -> Batch | None: ...
    async def last_seq(self, stream_id: str) -> int | None: ...


@dataclass
class _Log:
    events: list[Event] = field(default_factory=list)
    closed: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        # Wake every waiting reader at once, then give later waiters a fresh event to wait on.
        self.changed.set()
        self.changed = asyncio.Event()


class InProcessBroker:
    def __init__(self) -> None:
        self._logs: dict[str, _Log] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}

    async def create(self, stream_id: str) -> None:
        self._logs[stream_id] = _Log()

    async def append(self, stream_id: str, type_: EventType, data: dict[str, Any]) -> Event:
        log = self._logs[stream_id]
        if log.closed:
            raise RuntimeError(f"stream {stream_id} is closed")
        seq = len(log.events) + 1
        payload = {"type": type_, **data}
        event = Event(
            seq=seq, type=type_, data=payload, frame=sse.encode_frame(stream_id, seq, type_, payload)
        )
        log.events.append(event)
        log.notify()
        return event

    async def close(self, stream_id: str, retention: float) -> None:
        log = self._logs[stream_id]
        log.closed = True
        log.notify()
        loop = asyncio.get_running_loop()
        self._expiry[stream_id] = loop.call_later(retention, self._forget, stream_id)

    async def read(self, stream_id: str, after: int, wait: float) -> Batch | None:
        """Events with seq > `after`, waiting up to `wait` seconds for some; None for an unknown stream."""
        log = self._logs.get(stream_id)
        if log is None:
            return None
        if len(log.events) <= after and not log.closed:
            try:
                async with asyncio.timeout(wait):
                    await log.changed.wait()
            except TimeoutError:
                pass
        return Batch(events=log.events[after:], closed=log.closed)

    async def last_seq(self, stream_id: str) -> int | None:
        log = self._logs.get(stream_id)
        return None if log is None else len(log.events)

    def _forget(self, stream_id: str) -> None:
        self._logs.pop(stream_id, None)
        self._expiry.pop(stream_id, None)

    async def aclose(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()
        self._expiry.clear()
        self._logs.clear()
