"""A clock that only moves when a test says so: grace, retention and the breaker's reset in milliseconds.

It implements `app.kit.clock.Clock`. Timers fire in order of their due time when `advance()` passes it,
synchronously, inside `advance()`; a test that needs the callbacks' own effects on tasks lets the event
loop turn afterwards (`await asyncio.sleep(0)`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class ManualTimer:
    when: float
    order: int
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._timers: list[ManualTimer] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self.now + max(0.0, delay), next(self._order), callback)
        heapq.heappush(self._timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, in order (each at its own due time)."""
        until = self.now + seconds
        while self._timers and self._timers[0].when <= until:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = until

    @property
    def pending(self) -> int:
        """Timers still armed (not fired, not cancelled)."""
        return sum(1 for timer in self._timers if not timer.cancelled)
