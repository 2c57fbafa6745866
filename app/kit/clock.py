"""Time, injected: the wall clock for what several processes compare (the breaker's opening time), and
timers for what one process waits for (a job's grace, a log's retention).

Production code gets `SystemClock`; tests get a manual clock they advance by hand, so grace, retention and
the breaker's reset are tested in milliseconds without sleeping (tests/fakes/clock.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (comparable across processes and hosts)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` once, `delay` seconds from now, unless the returned timer is cancelled first."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)
