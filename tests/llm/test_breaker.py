"""`Breaker`: pure unit tests of the rules in `app/llm/breaker.py` (no network, no event loop)."""

from __future__ import annotations

import logging
import time

import pytest

from app.llm import errors
from app.llm.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Permit
from app.llm.errors import UpstreamError

pytestmark = pytest.mark.timeout(10)

RESET = 0.2  # short enough to wait for
PAST_RESET = 0.25
LONG_RESET = 30.0  # never elapses during a test


def counted() -> UpstreamError:
    return errors.upstream_error("The writing service failed (HTTP 500).")


def not_counted() -> UpstreamError:
    return errors.upstream_error("The writing service rejected the request (HTTP 422).", counts=False)


def fail_times(breaker: Breaker, n: int, exc: UpstreamError | None = None) -> None:
    for _ in range(n):
        breaker.acquire().fail(exc or counted())


def unavailable(breaker: Breaker) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        breaker.acquire()
    assert caught.value.code == "upstream_unavailable"
    assert caught.value.counts is False
    return caught.value


def opened(reset_timeout: float = RESET, fail_max: int = 2) -> Breaker:
    breaker = Breaker(fail_max=fail_max, reset_timeout=reset_timeout)
    fail_times(breaker, fail_max)
    assert breaker.state == OPEN
    return breaker


def half_open_with_trial() -> tuple[Breaker, Permit]:
    breaker = opened()
    time.sleep(PAST_RESET)
    trial = breaker.acquire()
    assert trial.trial
    assert breaker.state == HALF_OPEN
    return breaker, trial


# --- closed ----------------------------------------------------------------------------------------------


def test_breaker_when_new_then_closed_with_no_failures() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)

    assert breaker.state == CLOSED
    assert breaker.describe() == {"state": "closed", "failures": 0}
    assert breaker.acquire().trial is False


def test_breaker_when_fewer_than_fail_max_consecutive_failures_then_stays_closed() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)

    fail_times(breaker, 2)

    assert breaker.state == CLOSED
    assert breaker.describe() == {"state": "closed", "failures": 2}
    breaker.acquire()


def test_breaker_when_fail_max_consecutive_counted_failures_then_opens() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)

    fail_times(breaker, 3)

    assert breaker.state == OPEN
    assert breaker.describe() == {"state": "open", "failures": 3, "retry_after": 30}
    unavailable(breaker)


def test_breaker_when_a_success_comes_between_failures_then_the_count_resets() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)

    fail_times(breaker, 2)
    breaker.acquire().succeed()
    assert breaker.describe() == {"state": "closed", "failures": 0}
    fail_times(breaker, 2)

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 2
    fail_times(breaker, 1)
    assert breaker.state == OPEN


def test_breaker_when_failures_do_not_count_then_they_neither_increment_nor_reset() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)
    fail_times(breaker, 2)

    fail_times(breaker, 5, not_counted())

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 2
    fail_times(breaker, 1)
    assert breaker.state == OPEN


def test_breaker_when_permits_are_released_then_they_neither_increment_nor_reset() -> None:
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)
    fail_times(breaker, 2)

    for _ in range(5):
        breaker.acquire().release()

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 2
    fail_times(breaker, 1)
    assert breaker.state == OPEN


def test_breaker_when_failures_overlap_then_each_counts_once() -> None:
    # Several generations run at once while closed; each failure is one count.
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)
    permits = [breaker.acquire() for _ in range(3)]

    permits[0].fail(counted())
    permits[1].fail(counted())
    assert breaker.state == CLOSED
    permits[2].fail(counted())

    assert breaker.state == OPEN


# --- open ------------------------------------------------------------------------------------------------


def test_breaker_when_open_then_acquire_fails_fast_with_seconds_until_the_trial() -> None:
    breaker = opened(reset_timeout=LONG_RESET)

    error = unavailable(breaker)

    assert error.retry_after is not None
    assert 0 < error.retry_after <= LONG_RESET
    assert error.retry_after >= LONG_RESET - 1
    assert error.retry_after == int(error.retry_after)  # ceil: whole seconds
    assert error.retryable is True


def test_breaker_when_open_with_a_fractional_reset_then_retry_after_is_its_ceiling() -> None:
    breaker = opened(reset_timeout=RESET)

    assert unavailable(breaker).retry_after == 1
    assert breaker.describe() == {"state": "open", "failures": 2, "retry_after": 1}


def test_breaker_when_open_then_acquire_never_hands_out_a_permit_before_the_reset_timeout() -> None:
    breaker = opened(reset_timeout=LONG_RESET)

    for _ in range(10):
        unavailable(breaker)

    assert breaker.state == OPEN


# --- half-open ------------------------------------------------------------------------------------------


def test_breaker_when_reset_timeout_passed_then_first_acquire_is_the_trial_and_state_half_open() -> None:
    breaker = opened()
    time.sleep(PAST_RESET)

    trial = breaker.acquire()

    assert trial.trial is True
    assert breaker.state == HALF_OPEN
    assert breaker.describe() == {"state": "half-open", "failures": 2}


def test_breaker_when_half_open_with_a_trial_running_then_a_second_acquire_fails_fast() -> None:
    breaker, _trial = half_open_with_trial()

    error = unavailable(breaker)

    assert error.retry_after == 1
    assert breaker.state == HALF_OPEN


def test_breaker_when_the_trial_succeeds_then_closed_and_next_acquires_work() -> None:
    breaker, trial = half_open_with_trial()

    trial.succeed()

    assert breaker.state == CLOSED
    assert breaker.describe() == {"state": "closed", "failures": 0}
    permits = [breaker.acquire() for _ in range(3)]
    assert not any(permit.trial for permit in permits)


def test_breaker_when_the_trial_fails_then_open_again_with_a_fresh_timeout() -> None:
    breaker, trial = half_open_with_trial()
    failed_at = time.monotonic()

    trial.fail(counted())

    assert breaker.state == OPEN
    assert unavailable(breaker).retry_after == 1
    assert breaker.seconds_until_trial() > RESET - (time.monotonic() - failed_at) - 0.05
    time.sleep(PAST_RESET)
    assert breaker.acquire().trial is True
    assert breaker.state == HALF_OPEN


def test_breaker_when_the_trial_is_released_then_still_half_open_and_next_acquire_is_the_trial() -> None:
    breaker, trial = half_open_with_trial()

    trial.release()

    assert breaker.state == HALF_OPEN
    second = breaker.acquire()
    assert second.trial is True
    unavailable(breaker)
    second.succeed()
    assert breaker.state == CLOSED


def test_breaker_when_the_trial_fails_with_an_uncounted_error_then_it_is_a_release() -> None:
    breaker, trial = half_open_with_trial()

    trial.fail(not_counted())

    assert breaker.state == HALF_OPEN
    assert breaker.acquire().trial is True


# --- stale and repeated outcomes ------------------------------------------------------------------------


def test_breaker_when_a_stale_permit_succeeds_after_opening_then_it_decides_nothing() -> None:
    breaker = Breaker(fail_max=2, reset_timeout=LONG_RESET)
    stale = breaker.acquire()
    fail_times(breaker, 2)

    stale.succeed()

    assert breaker.state == OPEN
    unavailable(breaker)


def test_breaker_when_a_stale_permit_resolves_during_the_trial_then_it_decides_nothing() -> None:
    breaker = Breaker(fail_max=2, reset_timeout=RESET)
    stale_ok, stale_ko = breaker.acquire(), breaker.acquire()
    fail_times(breaker, 2)
    time.sleep(PAST_RESET)
    trial = breaker.acquire()

    stale_ok.succeed()
    stale_ko.fail(counted())

    assert breaker.state == HALF_OPEN
    unavailable(breaker)  # the trial is still the one running
    trial.succeed()
    assert breaker.state == CLOSED


def test_breaker_when_a_stale_permit_resolves_after_the_circuit_closed_again_then_it_decides_nothing() -> (
    None
):
    breaker = Breaker(fail_max=2, reset_timeout=RESET)
    stale = [breaker.acquire() for _ in range(2)]  # long generations started before the outage
    fail_times(breaker, 2)
    time.sleep(PAST_RESET)
    breaker.acquire().succeed()  # the trial: recovered
    assert breaker.state == CLOSED

    for permit in stale:
        permit.fail(counted())

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 0


def test_breaker_when_a_permit_is_resolved_twice_then_the_second_has_no_effect() -> None:
    breaker = Breaker(fail_max=2, reset_timeout=LONG_RESET)
    permit = breaker.acquire()

    permit.fail(counted())
    permit.fail(counted())
    permit.succeed()
    permit.release()

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 1


def test_breaker_when_a_success_is_resolved_again_as_failure_then_the_failure_is_ignored() -> None:
    breaker = Breaker(fail_max=1, reset_timeout=LONG_RESET)
    permit = breaker.acquire()

    permit.succeed()
    permit.fail(counted())

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 0


def test_breaker_when_the_trial_is_resolved_twice_then_the_second_has_no_effect() -> None:
    breaker, trial = half_open_with_trial()
    trial.succeed()

    trial.fail(counted())
    trial.release()

    assert breaker.state == CLOSED
    assert breaker.cb.fail_counter == 0
    assert breaker.acquire().trial is False


def test_breaker_when_a_released_trial_is_released_again_then_a_new_trial_is_not_freed() -> None:
    breaker, trial = half_open_with_trial()
    trial.release()
    second = breaker.acquire()

    trial.release()  # must not mark the second trial as finished

    assert second.trial is True
    unavailable(breaker)


# --- logging --------------------------------------------------------------------------------------------


def test_breaker_when_the_state_changes_then_each_transition_is_logged_as_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")
    breaker = Breaker(fail_max=2, reset_timeout=RESET, name="upstream")

    fail_times(breaker, 2)
    time.sleep(PAST_RESET)
    breaker.acquire().fail(counted())
    time.sleep(PAST_RESET)
    breaker.acquire().succeed()

    transitions = [record.getMessage() for record in caplog.records if record.name == "atelier.breaker"]
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    assert [message.split(" (")[0] for message in transitions] == [
        "circuit upstream: closed -> open",
        "circuit upstream: open -> half-open",
        "circuit upstream: half-open -> open",
        "circuit upstream: open -> half-open",
        "circuit upstream: half-open -> closed",
    ]
    assert transitions[0].endswith("(failures: 2)")


def test_breaker_when_outcomes_change_no_state_then_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")
    breaker = Breaker(fail_max=3, reset_timeout=LONG_RESET)

    fail_times(breaker, 2)
    breaker.acquire().succeed()
    breaker.acquire().release()

    assert [record for record in caplog.records if record.name == "atelier.breaker"] == []
