"""The circuit breaker around upstream generations, made for streams under asyncio and for state that
several processes may share.

The rules, in pure functions over one `Circuit` value:
- `acquire()` before a generation: fails fast while open (`retry_after` = seconds until the trial); when
  the reset timeout has passed, moves to half-open and hands out exactly one trial permit; everyone else
  fails fast until the trial resolves.
- `Permit.succeed()` at the first text token; `Permit.fail()` on an upstream failure that counts (also
  after the first token: a call that breaks mid-stream failed, even when the portrait is continued);
  `Permit.release()` when nothing was learned (a reader left, our request was wrong): neither outcome.
- Only outcomes of calls made while closed, or of the trial while half-open, are recorded: a stale result
  from a generation that started before the circuit opened decides nothing (`period` numbers the states).

The state lives behind `CircuitStorage`, whose one operation applies a rule atomically: in memory that is
a plain assignment (nothing interleaves under asyncio); a shared store (Redis, a later issue) runs the same
rule in an optimistic transaction, so the single half-open trial holds across processes. Time comes from an
injected clock's wall time, comparable between processes.

Why not pybreaker (used until 2026-11-30): its storage is synchronous (its Redis storage would block the
event loop), it stamps `opened_at` from its own clock (tests had to sleep), it has no getter for that time
(we read its private storage), and its `call()` records outcomes at the wrong moment for a stream. What it
still gave us was a counter and three state names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar

from app.kit.clock import Clock, SystemClock
from app.llm import errors
from app.llm.errors import UpstreamError

log = logging.getLogger("atelier.breaker")

State = Literal["closed", "open", "half-open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half-open"
T = TypeVar("T")


@dataclass(frozen=True)
class Circuit:
    state: State = CLOSED
    failures: int = 0
    opened_at: float | None = None  # wall-clock seconds
    period: int = 0  # bumped at every transition
    trial_out: bool = False  # half-open: the one trial permit is taken
    trial_at: float | None = None  # wall-clock seconds when it was (a trial unresolved for long is lost)


class CircuitStoreError(RuntimeError):
    """A shared circuit could not be read or written (its store is unreachable, contended or corrupt)."""


class CircuitStorage(Protocol):
    async def load(self) -> Circuit: ...

    async def update(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        """Apply `rule` to the stored circuit as one atomic step; return what it returns."""
        ...


class MemoryCircuitStorage:
    """One process's circuit. `update` runs the rule with no await inside: atomic under asyncio."""

    def __init__(self) -> None:
        self._circuit = Circuit()

    async def load(self) -> Circuit:
        return self._circuit

    async def update(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        self._circuit, result = rule(self._circuit)
        return result


@dataclass(frozen=True)
class _Grant:
    trial: bool
    period: int


def _transition(circuit: Circuit, state: State, **changes: Any) -> Circuit:
    return replace(circuit, state=state, period=circuit.period + 1, trial_out=False, trial_at=None, **changes)


class _Logged:
    """Applies rules through the storage and logs the transitions they made, once each, after the
    storage committed them (a shared storage may run a rule more than once before one attempt commits)."""

    def __init__(self, storage: CircuitStorage, name: str) -> None:
        self.storage = storage
        self.name = name

    async def apply(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        def logged(circuit: Circuit) -> tuple[Circuit, tuple[T, Circuit, Circuit]]:
            after, result = rule(circuit)
            return after, (result, circuit, after)

        result, before, after = await self.storage.update(logged)
        if after.period != before.period:
            log.warning(
                "circuit %s: %s -> %s (failures: %d)", self.name, before.state, after.state, after.failures
            )
        return result


class Breaker:
    def __init__(
        self,
        fail_max: int,
        reset_timeout: float,
        *,
        clock: Clock | None = None,
        storage: CircuitStorage | None = None,
        name: str = "upstream",
        trial_timeout: float = 90.0,
    ) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        # A trial resolves at its first token, within the upstream's connect and idle timeouts; one out for
        # longer was lost (its process died, or its acquire was cancelled after the write): with a shared
        # circuit nothing else would ever free it, so after this long another trial may go.
        self.trial_timeout = trial_timeout
        self.clock = clock or SystemClock()
        self.storage = storage or MemoryCircuitStorage()
        self._rules = _Logged(self.storage, name)

    async def acquire(self) -> Permit:
        """A permit for one generation, or `UpstreamError('upstream_unavailable')` at once."""
        now = self.clock.time()

        def rule(circuit: Circuit) -> tuple[Circuit, _Grant | float]:
            if circuit.state == CLOSED:
                return circuit, _Grant(trial=False, period=circuit.period)
            if circuit.state == OPEN:
                # No opening time (a record written by hand) counts as long past: a trial may go.
                opened_at = circuit.opened_at if circuit.opened_at is not None else now - self.reset_timeout
                remaining = opened_at + self.reset_timeout - now
                if remaining > 0:
                    return circuit, remaining
                circuit = _transition(circuit, HALF_OPEN)
            if circuit.trial_out:
                lost = circuit.trial_at is not None and now - circuit.trial_at >= self.trial_timeout
                if not lost:
                    return circuit, 1.0  # the trial's outcome comes at its first token; ask again shortly
                circuit = _transition(circuit, HALF_OPEN)  # a new period: the lost trial decides nothing
            circuit = replace(circuit, trial_out=True, trial_at=now)
            return circuit, _Grant(trial=True, period=circuit.period)

        try:
            granted = await self._rules.apply(rule)
        except CircuitStoreError as exc:
            log.warning("circuit %s: its store failed (%s): no new generation", self._rules.name, exc)
            raise errors.broker_unavailable() from exc
        if not isinstance(granted, _Grant):
            raise errors.upstream_unavailable(retry_after=math.ceil(granted))
        return Permit(self, trial=granted.trial, period=granted.period)

    def _records(self, circuit: Circuit, permit: Permit) -> bool:
        if permit.period != circuit.period:
            return False  # acquired before the circuit changed state (even if it has closed again since)
        return circuit.state == CLOSED or (circuit.state == HALF_OPEN and permit.trial)

    async def _succeed(self, permit: Permit) -> int:
        """Record a success; the failures it reset (a call that breaks later takes them back)."""

        def rule(circuit: Circuit) -> tuple[Circuit, int]:
            if not self._records(circuit, permit):
                return circuit, 0
            if circuit.state == HALF_OPEN:
                return _transition(circuit, CLOSED, failures=0, opened_at=None), 0
            return replace(circuit, failures=0), circuit.failures

        return await self._rules.apply(rule)

    async def _fail(self, permit: Permit) -> None:
        now = self.clock.time()

        def rule(circuit: Circuit) -> tuple[Circuit, None]:
            if not self._records(circuit, permit):
                return circuit, None
            failures = circuit.failures + 1
            if circuit.state == HALF_OPEN or failures >= self.fail_max:
                return _transition(circuit, OPEN, failures=failures, opened_at=now), None
            return replace(circuit, failures=failures), None

        await self._rules.apply(rule)

    async def _fail_after_success(self, reset: int) -> None:
        """A call that had succeeded (its first token) broke later: counted while the circuit is closed
        (its success closed it, or it was closed), on top of the `reset` failures its success had cleared,
        so an upstream whose every stream breaks mid-way still opens the circuit; an opened circuit needs
        no more evidence."""
        now = self.clock.time()

        def rule(circuit: Circuit) -> tuple[Circuit, None]:
            if circuit.state != CLOSED:
                return circuit, None
            failures = max(circuit.failures, reset) + 1
            if failures >= self.fail_max:
                return _transition(circuit, OPEN, failures=failures, opened_at=now), None
            return replace(circuit, failures=failures), None

        await self._rules.apply(rule)

    async def _release(self, permit: Permit) -> None:
        def rule(circuit: Circuit) -> tuple[Circuit, None]:
            if permit.trial and circuit.period == permit.period and circuit.state == HALF_OPEN:
                return replace(circuit, trial_out=False), None
            return circuit, None

        await self._rules.apply(rule)

    async def describe(self) -> dict[str, Any]:
        circuit = await self.storage.load()
        described: dict[str, Any] = {"state": circuit.state, "failures": circuit.failures}
        if circuit.state == OPEN and circuit.opened_at is not None:
            remaining = circuit.opened_at + self.reset_timeout - self.clock.time()
            described["retry_after"] = max(0, math.ceil(remaining))
        return described


class Permit:
    """The right to make one upstream call; resolved exactly once (later calls do nothing)."""

    def __init__(self, breaker: Breaker, *, trial: bool, period: int) -> None:
        self.breaker = breaker
        self.trial = trial
        self.period = period
        self.resolved = False
        self.succeeded = False
        self._reset = 0  # the failures this permit's success cleared

    # An outcome that cannot be recorded (the shared store is down) is logged and dropped, never raised into
    # the generation that reports it: a portrait must not fail because its breaker's bookkeeping did. A
    # trial whose outcome was lost is freed by the breaker's trial_timeout.

    async def succeed(self) -> None:
        if self._resolve():
            self.succeeded = True
            try:
                self._reset = await self.breaker._succeed(self)
            except CircuitStoreError as exc:
                log.warning("a success could not be recorded: %s", exc)

    async def fail(self, exc: UpstreamError) -> None:
        """A counted failure; also after the call's first token (a stream that breaks mid-way is a failed
        call even when the portrait goes on with a continuation), then against the circuit as it is."""
        try:
            if not exc.counts:
                await self.release()
            elif self._resolve():
                await self.breaker._fail(self)
            elif self.succeeded:
                self.succeeded = False  # one call, one failure
                await self.breaker._fail_after_success(self._reset)
        except CircuitStoreError as store_error:
            log.warning("a failure could not be recorded: %s", store_error)

    async def release(self) -> None:
        if self._resolve():
            try:
                await self.breaker._release(self)
            except CircuitStoreError as exc:
                log.warning("a release could not be recorded: %s", exc)

    def _resolve(self) -> bool:
        if self.resolved:
            return False
        self.resolved = True
        return True
