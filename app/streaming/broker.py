"""Event logs behind a small broker interface: a job appends, every reader keeps its own cursor.

A reader is a cursor (`read(after=seq)`), not a queue the job pushes into, so a slow reader never slows
the job or other readers, and a reader that reconnects resumes from its last id. The broker stores typed
events (`streaming/events.py`) and knows no wire format. The in-process broker keeps logs in memory; a
Redis Streams broker can implement the same interface for several instances.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from app.kit.clock import Clock, SystemClock, Timer
from app.streaming.events import Event, Payload


@dataclass(frozen=True)
class Batch:
    events: list[Event]
    closed: bool  # no event will follow the ones returned


class BrokerUnavailable(ConnectionError):
    """The broker's store (Redis) cannot be reached or timed out: the caller answers `broker_unavailable`."""


class LogLost(BrokerUnavailable):
    """The log is gone from the store while it was being written (Redis restarted or was flushed)."""


class AppendRefused(RuntimeError):
    pass


class StreamClosed(AppendRefused):
    pass


class StaleAppend(AppendRefused):
    """Another writer has written this seq: this writer was fenced out (its job was taken over) and must stop."""


class SeqGap(AppendRefused, ValueError):
    """`append_at` with a seq past the next one: the log would have a gap."""


class Broker(Protocol):
    async def create(self, stream_id: str) -> None: ...
    async def append(self, stream_id: str, payload: Payload) -> Event: ...
    async def append_at(self, stream_id: str, seq: int, payload: Payload) -> Event:
        """Append at exactly `seq`, or refuse: the owner of a job writes its own seqs, so a stale owner
        (its job taken over by another process) is fenced out by the first seq the new owner wrote."""
        ...

    async def close(self, stream_id: str, retention: float) -> None: ...
    async def read(self, stream_id: str, after: int, wait: float) -> Batch | None: ...
    async def last_seq(self, stream_id: str) -> int | None: ...


@dataclass
class _Log:
    """A stream's events and the readers waiting for the next one.

    Readers wait on plain futures, all woken by the next append. Instead of a timer per wait (one per
    token per reader), one heartbeat per log wakes them with nothing new once the log has been quiet for
    `wait` seconds, so they can send a ping.
    """

    events: list[Event] = field(default_factory=list)
    closed: bool = False
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    changed_at: float = 0.0
    heartbeat: asyncio.TimerHandle | None = None

    def notify(self, now: float) -> None:
        self.changed_at = now
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def wait(self, loop: asyncio.AbstractEventLoop, quiet: float) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        when = max(self.changed_at, loop.time()) + quiet
        if self.heartbeat is not None and self.heartbeat.when() > when:
            self.heartbeat.cancel()  # this reader asks for a shorter wait than the one the beat was set for
            self.heartbeat = None
        if self.heartbeat is None:
            self.heartbeat = loop.call_at(when, self._beat, loop, quiet)
        return waiter

    def _beat(self, loop: asyncio.AbstractEventLoop, quiet: float) -> None:
        self.heartbeat = None
        self.waiters = [waiter for waiter in self.waiters if not waiter.done()]  # readers gone meanwhile
        if not self.waiters:
            return
        now = loop.time()
        if now - self.changed_at >= quiet:
            self.notify(self.changed_at)  # quiet for long enough: wake them with nothing new
        else:
            self.heartbeat = loop.call_at(self.changed_at + quiet, self._beat, loop, quiet)

    def stop(self) -> None:
        """The log is going away: no more beats, and whoever still waits is woken (and finds no log)."""
        if self.heartbeat is not None:
            self.heartbeat.cancel()
            self.heartbeat = None
        self.notify(self.changed_at)


class InProcessBroker:
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._logs: dict[str, _Log] = {}
        self._expiry: dict[str, Timer] = {}

    async def create(self, stream_id: str) -> None:
        if stream_id in self._logs:
            raise ValueError(f"stream {stream_id} exists")  # ids are unique: a second log would mix two
        self._logs[stream_id] = _Log()

    async def append(self, stream_id: str, payload: Payload) -> Event:
        log = self._logs[stream_id]
        if log.closed:
            raise RuntimeError(f"stream {stream_id} is closed")
        event = Event(seq=len(log.events) + 1, payload=payload)
        log.events.append(event)
        log.notify(asyncio.get_running_loop().time())
        return event

    async def append_at(self, stream_id: str, seq: int, payload: Payload) -> Event:
        log = self._logs[stream_id]
        if log.closed:
            raise StreamClosed(f"stream {stream_id} is closed")
        if seq <= len(log.events):
            raise StaleAppend(f"seq {seq} of {stream_id} is taken")
        if seq > len(log.events) + 1:
            raise SeqGap(f"seq {seq} would leave a gap in {stream_id}")
        return await self.append(stream_id, payload)

    async def close(self, stream_id: str, retention: float) -> None:
        log = self._logs[stream_id]
        if log.closed:
            return  # closed once; its retention runs from then
        log.closed = True
        loop = asyncio.get_running_loop()
        log.notify(loop.time())
        log.stop()
        self._expiry[stream_id] = self._clock.call_later(retention, lambda: self._forget(stream_id))

    async def read(self, stream_id: str, after: int, wait: float) -> Batch | None:
        """Events with seq > `after`, waiting up to `wait` seconds for some; None for an unknown stream."""
        log = self._logs.get(stream_id)
        if log is None:
            return None
        if len(log.events) <= after and not log.closed:
            await log.wait(asyncio.get_running_loop(), wait)
        return Batch(events=log.events[after:], closed=log.closed)

    async def last_seq(self, stream_id: str) -> int | None:
        log = self._logs.get(stream_id)
        return None if log is None else len(log.events)

    def waiting(self, stream_id: str) -> int:
        """How many readers wait for the next event of `stream_id`."""
        log = self._logs.get(stream_id)
        return 0 if log is None else sum(not waiter.done() for waiter in log.waiters)

    def _forget(self, stream_id: str) -> None:
        log = self._logs.pop(stream_id, None)
        if log is not None:
            log.stop()
        self._expiry.pop(stream_id, None)

    async def aclose(self) -> None:
        for handle in self._expiry.values():
            handle.cancel()
        for log in self._logs.values():
            log.stop()
        self._expiry.clear()
        self._logs.clear()
