"""The circuit breaker around upstream generations: pybreaker's state machine, made correct for streams
under asyncio.

pybreaker alone does not fit (checked on 1.4.1): `call_async` needs Tornado; a decorated coroutine records
success before it even runs; inside `calling()` a `CancelledError` counts as a failure, and excluding it
turns it into a success; half-open lets every concurrent caller through. So pybreaker keeps the state, the
counters, the storage and the listeners, and this module decides *when* an outcome is recorded:

- `acquire()` before a generation: fails fast while open (`retry_after` = seconds until the trial); when
  the reset timeout has passed, moves to half-open and hands out exactly one trial permit; everyone else
  fails fast until the trial resolves.
- `Permit.succeed()` at the first text token; `Permit.fail()` on an upstream failure that counts;
  `Permit.release()` when nothing was learned (a reader left, our request was wrong): neither outcome.
- Only outcomes of calls made while closed, or of the trial while half-open, are recorded: a stale result
  from a generation that started before the circuit opened decides nothing.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pybreaker

from app.llm import errors
from app.llm.errors import UpstreamError

log = logging.getLogger("atelier.breaker")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


class _LogTransitions(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else "none"
        log.warning("circuit %s: %s -> %s (failures: %d)", cb.name, old, new_state.name, cb.fail_counter)


class _CountTransitions(pybreaker.CircuitBreakerListener):
    """Numbers the state periods: a permit records only in the period it was acquired in."""

    def __init__(self) -> None:
        self.count = 0

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self.count += 1


class _Recorded(Exception):
    """Carries an upstream failure through pybreaker's `call()`, which records it and re-raises it."""


def _raise(exc: BaseException) -> None:
    raise exc


def _ok() -> None:
    return None


class Permit:
    """The right to make one upstream call; resolved exactly once (later calls do nothing)."""

    def __init__(self, breaker: Breaker, *, trial: bool) -> None:
        self.breaker = breaker
        self.trial = trial
        self.resolved = False
        self.period = breaker.transitions.count

    def succeed(self) -> None:
        if not self._resolve():
            return
        if self.breaker.records(self):
            self.breaker.cb.call(_ok)

    def fail(self, exc: UpstreamError) -> None:
        if not exc.counts:
            self.release()
            return
        if not self._resolve():
            return
        if self.breaker.records(self):
            try:
                self.breaker.cb.call(_raise, _Recorded(exc.code))
            except _Recorded:
                pass

    def release(self) -> None:
        self._resolve()

    def _resolve(self) -> bool:
        if self.resolved:
            return False
        self.resolved = True
        if self.trial:
            self.breaker.trial_running = False
        return True


class Breaker:
    def __init__(self, fail_max: int, reset_timeout: float, name: str = "upstream") -> None:
        self.transitions = _CountTransitions()
        self.cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            name=name,
            listeners=[_LogTransitions(), self.transitions],
            throw_new_error_on_trip=False,  # the call that trips raises its own error, recorded as such
        )
        self.trial_running = False

    @property
    def state(self) -> str:
        return str(self.cb.current_state)

    def seconds_until_trial(self) -> float:
        # pybreaker keeps the opening time in its storage (memory or Redis) but has no public getter.
        opened_at: datetime | None = self.cb._state_storage.opened_at
        if opened_at is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(0.0, self.cb.reset_timeout - elapsed)

    def acquire(self) -> Permit:
        """A permit for one generation, or `UpstreamError('upstream_unavailable')` at once.

        Synchronous on purpose: under asyncio nothing can interleave between the check and the grant."""
        state = self.state
        if state == OPEN:
            remaining = self.seconds_until_trial()
            if remaining > 0:
                raise errors.upstream_unavailable(retry_after=math.ceil(remaining))
            self.cb.half_open()
            state = HALF_OPEN
        if state == HALF_OPEN:
            if self.trial_running:
                # The trial's outcome comes at its first token; ask again shortly.
                raise errors.upstream_unavailable(retry_after=1)
            self.trial_running = True
            return Permit(self, trial=True)
        return Permit(self, trial=False)

    def records(self, permit: Permit) -> bool:
        if permit.period != self.transitions.count:
            return False  # acquired before the circuit opened (even if it has closed again since)
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and permit.trial)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {"state": self.state, "failures": self.cb.fail_counter}
        if self.state == OPEN:
            described["retry_after"] = math.ceil(self.seconds_until_trial())
        return described
