"""`Breaker`: unit tests of the circuit rules in `app/llm/breaker.py`, on a manual clock (no network, no
sleeping).

Covered: closed (failures counted up to `fail_max`, a success resets the count, an uncounted error or a
release is neither outcome); open (fails fast with `upstream_unavailable` and whole-second `retry_after`,
until the reset timeout); half-open (exactly one trial, its success closes, its failure re-opens with a
fresh timer, its release frees the trial); stale permits acquired before the circuit changed state record
nothing; a permit resolves once; `describe()`; the transitions logged; and the storage: two breakers sharing
one `MemoryCircuitStorage` (two processes) behave as one circuit, and a custom `CircuitStorage` is the only
place the state lives.

Each scenario runs in its own event loop through `run()` (the project uses no pytest async plugin).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from app.llm import errors
from app.llm.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breaker,
    Circuit,
    CircuitStorage,
    MemoryCircuitStorage,
    Permit,
)
from app.llm.errors import UpstreamError
from tests.fakes.clock import ManualClock

# Nothing here waits on real time: a scenario that takes longer than this is hanging.
pytestmark = pytest.mark.timeout(5)

T = TypeVar("T")

RESET = 10.0
LONG_RESET = 30.0  # longer than any advance a test makes unless it says so


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def counted() -> UpstreamError:
    return errors.upstream_error("The writing service failed (HTTP 500).")


def not_counted() -> UpstreamError:
    return errors.upstream_error("The writing service rejected the request (HTTP 422).", counts=False)


async def fail_times(breaker: Breaker, n: int, exc: UpstreamError | None = None) -> None:
    for _ in range(n):
        await (await breaker.acquire()).fail(exc or counted())


async def unavailable(breaker: Breaker) -> UpstreamError:
    """Assert that `acquire()` fails fast the way the contract says, and return the error."""
    with pytest.raises(UpstreamError) as caught:
        await breaker.acquire()
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.counts is False  # our own refusal says nothing about the upstream's health
    assert caught.value.retryable is True
    return caught.value


async def circuit(breaker: Breaker) -> Circuit:
    return await breaker.storage.load()


async def opened(clock: ManualClock, reset_timeout: float = RESET, fail_max: int = 2) -> Breaker:
    breaker = Breaker(fail_max=fail_max, reset_timeout=reset_timeout, clock=clock)
    await fail_times(breaker, fail_max)
    assert (await circuit(breaker)).state == OPEN
    return breaker


async def half_open_with_trial(clock: ManualClock) -> tuple[Breaker, Permit]:
    breaker = await opened(clock)
    clock.advance(RESET)
    trial = await breaker.acquire()
    assert trial.trial
    assert (await circuit(breaker)).state == HALF_OPEN
    return breaker, trial


class RecordingStorage:
    """A `CircuitStorage` that keeps the circuit in a public attribute and records every rule applied, as
    (circuit before, circuit after)."""

    def __init__(self) -> None:
        self.circuit = Circuit()
        self.applied: list[tuple[Circuit, Circuit]] = []

    async def load(self) -> Circuit:
        return self.circuit

    async def update(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        before = self.circuit
        self.circuit, result = rule(before)
        self.applied.append((before, self.circuit))
        return result


# --- closed ----------------------------------------------------------------------------------------------


def test_breaker_when_new_then_closed_with_no_failures() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())

        assert (await circuit(breaker)).state == CLOSED
        assert await breaker.describe() == {"state": "closed", "failures": 0}
        assert (await breaker.acquire()).trial is False

    run(scenario())


def test_breaker_when_fewer_than_fail_max_consecutive_failures_then_stays_closed() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())

        await fail_times(breaker, 2)

        assert (await circuit(breaker)).state == CLOSED
        assert await breaker.describe() == {"state": "closed", "failures": 2}
        assert (await breaker.acquire()).trial is False  # still hands out ordinary permits

    run(scenario())


def test_breaker_when_fail_max_consecutive_counted_failures_then_opens() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())

        await fail_times(breaker, 3)

        assert (await circuit(breaker)).state == OPEN
        assert await breaker.describe() == {"state": "open", "failures": 3, "retry_after": 30}
        await unavailable(breaker)

    run(scenario())


def test_breaker_when_it_opens_then_opened_at_is_the_clocks_time_of_the_last_failure() -> None:
    # The opening time is what other processes compare against, so it must come from the injected clock.
    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        await fail_times(breaker, 1)
        clock.advance(3)

        await fail_times(breaker, 1)

        assert (await circuit(breaker)).opened_at == clock.time()

    run(scenario())


def test_breaker_when_a_success_comes_between_failures_then_the_count_resets() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())
        await fail_times(breaker, 2)

        await (await breaker.acquire()).succeed()

        assert await breaker.describe() == {"state": "closed", "failures": 0}
        # Two more failures would have opened it without the reset; it takes three again.
        await fail_times(breaker, 2)
        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 2
        await fail_times(breaker, 1)
        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_failures_do_not_count_then_they_neither_increment_nor_reset() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())
        await fail_times(breaker, 2)

        await fail_times(breaker, 5, not_counted())

        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 2  # not 7 (counted) and not 0 (a success)
        await fail_times(breaker, 1)
        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_permits_are_released_then_they_neither_increment_nor_reset() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())
        await fail_times(breaker, 2)

        for _ in range(5):
            await (await breaker.acquire()).release()

        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 2
        await fail_times(breaker, 1)
        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_failures_overlap_then_each_counts_once() -> None:
    # Several generations run at once while closed; each failure is one count.
    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())
        permits = [await breaker.acquire() for _ in range(3)]

        await permits[0].fail(counted())
        await permits[1].fail(counted())
        assert (await circuit(breaker)).state == CLOSED
        await permits[2].fail(counted())

        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_built_without_storage_then_each_breaker_has_its_own_circuit() -> None:
    # The default storage must be per instance: one process's breakers for different upstreams (or
    # different tests) must not share a circuit by accident.
    async def scenario() -> None:
        clock = ManualClock()
        failing = Breaker(fail_max=1, reset_timeout=LONG_RESET, clock=clock)
        other = Breaker(fail_max=1, reset_timeout=LONG_RESET, clock=clock)

        await fail_times(failing, 1)

        assert isinstance(other.storage, MemoryCircuitStorage)
        assert other.storage is not failing.storage
        assert (await other.acquire()).trial is False
        await unavailable(failing)

    run(scenario())


# --- open ------------------------------------------------------------------------------------------------


def test_breaker_when_open_then_acquire_fails_fast_with_whole_seconds_until_the_trial() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock, reset_timeout=LONG_RESET)

        assert (await unavailable(breaker)).retry_after == 30

    run(scenario())


def test_breaker_when_open_and_time_passes_then_retry_after_counts_down_rounded_up() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock, reset_timeout=LONG_RESET)

        clock.advance(12.5)

        assert (await unavailable(breaker)).retry_after == 18  # 17.5 s left: ceil, never promise too soon
        assert (await breaker.describe())["retry_after"] == 18

    run(scenario())


def test_breaker_when_open_with_a_fractional_reset_then_retry_after_is_its_ceiling() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock, reset_timeout=0.2)

        error = await unavailable(breaker)

        assert error.retry_after == 1
        assert isinstance(error.retry_after, int)  # whole seconds, as a Retry-After header needs
        assert await breaker.describe() == {"state": "open", "failures": 2, "retry_after": 1}

    run(scenario())


def test_breaker_when_open_then_acquire_never_hands_out_a_permit_before_the_reset_timeout() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock)

        for _ in range(10):
            await unavailable(breaker)
            clock.advance((RESET - 0.01) / 10)  # ends 0.01 s short of the reset timeout

        assert (await unavailable(breaker)).retry_after == 1
        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_open_and_the_reset_timeout_passed_unasked_then_describe_says_retry_after_zero() -> None:
    # The move to half-open happens at the next acquire; until then /ready must not show a negative wait.
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock)

        clock.advance(RESET + 5)

        assert await breaker.describe() == {"state": "open", "failures": 2, "retry_after": 0}

    run(scenario())


# --- half-open ------------------------------------------------------------------------------------------


def test_breaker_when_reset_timeout_passed_then_first_acquire_is_the_trial_and_state_half_open() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock)
        clock.advance(RESET)  # exactly the reset timeout: the trial is due

        trial = await breaker.acquire()

        assert trial.trial is True
        assert (await circuit(breaker)).state == HALF_OPEN
        assert await breaker.describe() == {"state": "half-open", "failures": 2}

    run(scenario())


def test_breaker_when_half_open_with_a_trial_running_then_a_second_acquire_fails_fast() -> None:
    async def scenario() -> None:
        breaker, _trial = await half_open_with_trial(ManualClock())

        error = await unavailable(breaker)

        assert error.retry_after == 1  # the trial's outcome comes at its first token: ask again shortly
        assert (await circuit(breaker)).state == HALF_OPEN

    run(scenario())


def test_breaker_when_many_acquire_at_once_after_the_reset_timeout_then_exactly_one_gets_the_trial() -> None:
    # Concurrent tasks racing for the trial: the rule is applied atomically, so only one wins.
    async def scenario() -> None:
        clock = ManualClock()
        breaker = await opened(clock)
        clock.advance(RESET)

        outcomes = await asyncio.gather(*(breaker.acquire() for _ in range(10)), return_exceptions=True)

        permits = [outcome for outcome in outcomes if isinstance(outcome, Permit)]
        refusals = [outcome for outcome in outcomes if isinstance(outcome, UpstreamError)]
        assert [permit.trial for permit in permits] == [True]
        assert len(refusals) == 9
        assert {refusal.code for refusal in refusals} == {"upstream_unavailable"}

    run(scenario())


def test_breaker_when_the_trial_succeeds_then_closed_and_next_acquires_work() -> None:
    async def scenario() -> None:
        breaker, trial = await half_open_with_trial(ManualClock())

        await trial.succeed()

        assert (await circuit(breaker)).state == CLOSED
        assert await breaker.describe() == {"state": "closed", "failures": 0}
        assert (await circuit(breaker)).opened_at is None
        permits = [await breaker.acquire() for _ in range(3)]
        assert not any(permit.trial for permit in permits)

    run(scenario())


def test_breaker_when_the_trial_fails_then_open_again_with_a_fresh_reset_timer() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker, trial = await half_open_with_trial(clock)
        clock.advance(7)  # the trial took a while to fail

        await trial.fail(counted())

        assert (await circuit(breaker)).state == OPEN
        assert (await circuit(breaker)).opened_at == clock.time()
        # A full reset timeout from the failure, not from the first opening (which is 17 s ago).
        assert (await unavailable(breaker)).retry_after == RESET
        clock.advance(RESET - 0.5)
        await unavailable(breaker)
        clock.advance(0.5)
        assert (await breaker.acquire()).trial is True
        assert (await circuit(breaker)).state == HALF_OPEN

    run(scenario())


def test_breaker_when_the_trial_is_released_then_still_half_open_and_next_acquire_is_the_trial() -> None:
    async def scenario() -> None:
        breaker, trial = await half_open_with_trial(ManualClock())

        await trial.release()

        assert (await circuit(breaker)).state == HALF_OPEN
        second = await breaker.acquire()
        assert second.trial is True
        await unavailable(breaker)  # the new trial is out: still only one
        await second.succeed()
        assert (await circuit(breaker)).state == CLOSED

    run(scenario())


def test_breaker_when_the_trial_fails_with_an_uncounted_error_then_it_is_a_release() -> None:
    async def scenario() -> None:
        breaker, trial = await half_open_with_trial(ManualClock())

        await trial.fail(not_counted())

        assert (await circuit(breaker)).state == HALF_OPEN
        assert (await breaker.acquire()).trial is True

    run(scenario())


# --- stale and repeated outcomes ------------------------------------------------------------------------


def test_breaker_when_a_stale_permit_succeeds_after_opening_then_it_decides_nothing() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=2, reset_timeout=LONG_RESET, clock=ManualClock())
        stale = await breaker.acquire()
        await fail_times(breaker, 2)

        await stale.succeed()

        assert (await circuit(breaker)).state == OPEN
        await unavailable(breaker)

    run(scenario())


def test_breaker_when_a_stale_permit_fails_after_opening_then_the_reset_timer_is_not_restarted() -> None:
    # A long generation started before the outage fails late: it must neither count nor push the trial back.
    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        stale = await breaker.acquire()
        await fail_times(breaker, 2)
        opened_at = (await circuit(breaker)).opened_at
        clock.advance(4)

        await stale.fail(counted())

        assert (await circuit(breaker)).opened_at == opened_at
        assert (await circuit(breaker)).failures == 2
        clock.advance(RESET - 4)
        assert (await breaker.acquire()).trial is True

    run(scenario())


def test_breaker_when_a_stale_permit_resolves_during_the_trial_then_it_decides_nothing() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        stale_ok, stale_ko = await breaker.acquire(), await breaker.acquire()
        await fail_times(breaker, 2)
        clock.advance(RESET)
        trial = await breaker.acquire()

        await stale_ok.succeed()
        await stale_ko.fail(counted())

        assert (await circuit(breaker)).state == HALF_OPEN
        await unavailable(breaker)  # the trial is still the one running
        await trial.succeed()
        assert (await circuit(breaker)).state == CLOSED

    run(scenario())


def test_breaker_when_a_stale_permit_is_released_during_the_trial_then_no_second_trial_is_freed() -> None:
    # Only the trial's own release may free the trial slot; an old permit's release must not.
    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        stale = await breaker.acquire()
        await fail_times(breaker, 2)
        clock.advance(RESET)
        await breaker.acquire()  # the trial, still running

        await stale.release()

        assert (await circuit(breaker)).trial_out is True
        await unavailable(breaker)

    run(scenario())


def test_breaker_when_a_stale_permit_resolves_after_the_circuit_closed_again_then_it_decides_nothing() -> (
    None
):
    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        stale = [await breaker.acquire() for _ in range(2)]  # long generations started before the outage
        await fail_times(breaker, 2)
        clock.advance(RESET)
        await (await breaker.acquire()).succeed()  # the trial: recovered
        assert (await circuit(breaker)).state == CLOSED

        for permit in stale:
            await permit.fail(counted())

        # Closed again, but in a later period: enough stale failures to re-open it, yet none counted.
        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 0

    run(scenario())


def test_breaker_when_a_permit_is_resolved_twice_then_the_second_has_no_effect() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=2, reset_timeout=LONG_RESET, clock=ManualClock())
        permit = await breaker.acquire()

        await permit.fail(counted())
        await permit.fail(counted())  # would open the circuit if it counted
        await permit.succeed()  # would reset the count if it counted
        await permit.release()

        assert permit.resolved is True
        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 1

    run(scenario())


def test_breaker_when_a_call_breaks_after_its_first_token_then_a_failure_counts_once() -> None:
    """A stream that breaks mid-way failed (the contract: even when the portrait is continued): counted
    once, however often the permit is told; its success earlier still reset the count."""

    async def scenario() -> None:
        breaker = Breaker(fail_max=2, reset_timeout=LONG_RESET, clock=ManualClock())
        permit = await breaker.acquire()

        await permit.succeed()
        await permit.fail(counted())
        await permit.fail(counted())

        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 1

        second = await breaker.acquire()
        await second.succeed()
        await second.fail(counted())  # the second in a row: the circuit opens
        assert (await circuit(breaker)).state == OPEN

    run(scenario())


def test_breaker_when_a_call_breaks_after_its_first_token_with_an_uncounted_error_then_nothing() -> None:
    async def scenario() -> None:
        breaker = Breaker(fail_max=1, reset_timeout=LONG_RESET, clock=ManualClock())
        permit = await breaker.acquire()
        await permit.succeed()
        await permit.fail(UpstreamError("upstream_error", "our request was wrong", counts=False))
        assert (await circuit(breaker)).failures == 0

    run(scenario())


def test_breaker_when_the_trial_succeeds_then_breaks_then_one_failure_in_the_closed_circuit() -> None:
    async def scenario() -> None:
        breaker, trial = await half_open_with_trial(ManualClock())
        await trial.succeed()  # the first token closes the circuit

        await trial.fail(counted())  # then the stream breaks: one failure, the circuit stays closed
        await trial.release()

        assert (await circuit(breaker)).state == CLOSED
        assert (await circuit(breaker)).failures == 1
        assert (await breaker.acquire()).trial is False

    run(scenario())


def test_breaker_when_a_released_trial_is_released_again_then_a_new_trial_is_not_freed() -> None:
    async def scenario() -> None:
        breaker, trial = await half_open_with_trial(ManualClock())
        await trial.release()
        second = await breaker.acquire()

        await trial.release()  # must not mark the second trial as finished

        assert second.trial is True
        await unavailable(breaker)

    run(scenario())


# --- storage ---------------------------------------------------------------------------------------------


def test_breakers_when_sharing_one_storage_then_failures_through_either_open_both() -> None:
    # Two processes, one shared circuit: each process's failures add up, and both see it open.
    async def scenario() -> None:
        clock = ManualClock()
        storage = MemoryCircuitStorage()
        first = Breaker(fail_max=2, reset_timeout=RESET, clock=clock, storage=storage)
        second = Breaker(fail_max=2, reset_timeout=RESET, clock=clock, storage=storage)

        await fail_times(first, 1)
        await fail_times(second, 1)

        assert (await storage.load()).state == OPEN
        assert (await unavailable(first)).retry_after == RESET
        assert (await unavailable(second)).retry_after == RESET
        described = {"state": "open", "failures": 2, "retry_after": 10}
        assert await first.describe() == described
        assert await second.describe() == described

    run(scenario())


def test_breakers_when_sharing_one_storage_then_they_hand_out_exactly_one_trial_between_them() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        storage = MemoryCircuitStorage()
        first = Breaker(fail_max=2, reset_timeout=RESET, clock=clock, storage=storage)
        second = Breaker(fail_max=2, reset_timeout=RESET, clock=clock, storage=storage)
        await fail_times(first, 2)
        clock.advance(RESET)

        trial = await second.acquire()

        assert trial.trial is True
        assert (await unavailable(first)).retry_after == 1
        assert (await unavailable(second)).retry_after == 1
        # The trial's success, recorded through one process, closes the circuit for the other.
        await trial.succeed()
        assert (await first.acquire()).trial is False

    run(scenario())


def test_breaker_when_given_a_custom_storage_then_every_change_is_a_rule_applied_there() -> None:
    async def scenario() -> None:
        storage = RecordingStorage()
        checked: CircuitStorage = storage  # the fake satisfies the protocol the breaker is typed against
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=ManualClock(), storage=checked)

        await fail_times(breaker, 2)

        # acquire, fail, acquire, fail: four rules, and the stored circuit is the result of the last.
        assert [(before.failures, after.failures) for before, after in storage.applied] == [
            (0, 0),
            (0, 1),
            (1, 1),
            (1, 2),
        ]
        assert storage.applied[-1][1].state == OPEN
        assert storage.circuit is storage.applied[-1][1]

    run(scenario())


def test_breaker_when_the_custom_storage_is_changed_from_outside_then_it_follows_the_stored_circuit() -> None:
    # Another process writes the shared circuit: the breaker must keep no state of its own to disagree with.
    async def scenario() -> None:
        clock = ManualClock()
        storage = RecordingStorage()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock, storage=storage)
        assert (await breaker.acquire()).trial is False

        storage.circuit = Circuit(state=OPEN, failures=5, opened_at=clock.time() - 4, period=7)

        assert (await unavailable(breaker)).retry_after == 6
        assert await breaker.describe() == {"state": "open", "failures": 5, "retry_after": 6}
        storage.circuit = replace(storage.circuit, state=CLOSED, failures=0, opened_at=None, period=8)
        assert (await breaker.acquire()).trial is False

    run(scenario())


# --- logging --------------------------------------------------------------------------------------------


def transitions(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "atelier.breaker"]


def test_breaker_when_the_state_changes_then_each_transition_is_logged_as_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")

    async def scenario() -> None:
        clock = ManualClock()
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=clock)
        await fail_times(breaker, 2)
        clock.advance(RESET)
        await (await breaker.acquire()).fail(counted())
        clock.advance(RESET)
        await (await breaker.acquire()).succeed()

    run(scenario())

    records = transitions(caplog)
    assert all(record.levelno == logging.WARNING for record in records)
    assert [record.getMessage().split(" (")[0] for record in records] == [
        "circuit upstream: closed -> open",
        "circuit upstream: open -> half-open",
        "circuit upstream: half-open -> open",
        "circuit upstream: open -> half-open",
        "circuit upstream: half-open -> closed",
    ]


def test_breaker_when_it_opens_then_the_log_gives_the_failures_that_opened_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The old breaker logged "(failures: 2)" here; an operator reading the log needs the count that tripped it.
    caplog.set_level(logging.WARNING, logger="atelier.breaker")

    async def scenario() -> None:
        breaker = Breaker(fail_max=2, reset_timeout=RESET, clock=ManualClock())
        await fail_times(breaker, 2)

    run(scenario())

    (opening,) = transitions(caplog)
    assert opening.getMessage() == "circuit upstream: closed -> open (failures: 2)"


def test_breaker_when_outcomes_change_no_state_then_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")

    async def scenario() -> None:
        breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET, clock=ManualClock())
        await fail_times(breaker, 2)
        await (await breaker.acquire()).succeed()
        await (await breaker.acquire()).release()
        await fail_times(breaker, 1, not_counted())
        assert (await circuit(breaker)).state == CLOSED  # the scenario really changed no state

    run(scenario())

    assert transitions(caplog) == []


class RetryingStorage:
    """A shared storage whose first attempt at every rule loses an optimistic race (as Redis' WATCH would
    make it) and is retried: a rule may run twice, but only the second attempt is committed."""

    def __init__(self) -> None:
        self.inner = MemoryCircuitStorage()
        self.attempts = 0

    async def load(self) -> Circuit:
        return await self.inner.load()

    async def update(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        current = await self.inner.load()
        rule(current)  # the losing attempt: computed, never written
        self.attempts += 1
        return await self.inner.update(rule)


def test_breaker_when_the_storage_retries_a_rule_then_each_transition_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")
    storage = RetryingStorage()

    async def scenario() -> None:
        breaker = Breaker(fail_max=1, reset_timeout=RESET, clock=ManualClock(), storage=storage)
        await fail_times(breaker, 1)

    run(scenario())

    assert storage.attempts == 2  # acquire and fail each ran their rule twice
    assert [record.getMessage() for record in transitions(caplog)] == [
        "circuit upstream: closed -> open (failures: 1)"
    ]


def test_breaker_when_the_trial_is_never_resolved_then_after_the_trial_timeout_another_goes() -> None:
    """A trial whose process died (or whose acquire was cancelled after the write) is lost: with a shared
    circuit nothing would free it, so after `trial_timeout` another trial goes, and the lost one, should it
    come back, decides nothing."""

    async def scenario() -> None:
        clock = ManualClock()
        breaker, lost = await half_open_with_trial(clock)
        breaker.trial_timeout = 90.0
        clock.advance(89)
        await unavailable(breaker)
        clock.advance(1)
        second = await breaker.acquire()
        assert second.trial is True
        await lost.succeed()  # too late: a trial of an earlier period
        assert (await circuit(breaker)).state == HALF_OPEN
        await second.succeed()
        assert (await circuit(breaker)).state == CLOSED

    run(scenario())
