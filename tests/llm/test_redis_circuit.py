"""`RedisCircuitStorage` (app/llm/redis_circuit.py): the breaker's circuit in Redis, shared by processes.

On a private redis-server started by this module (never the shared one on 6379); each test has its own key.
A "process" is a `Breaker` with its own Redis client (its own connections); all share one `ManualClock`,
since the opening time is wall time from the clock.

Covered: the contract rules of tests/llm/test_breaker.py, a representative subset run on both storages
(`MemoryCircuitStorage` and Redis, each scenario with two processes where it matters); across processes:
failures on one open the circuit for the other, exactly one trial when 50 acquires race over two processes
(and over five), the trial's success closes it for all; the optimistic transaction: a write by another
process between read and commit makes the rule run again on the new value, transitions are still logged
once, a rule that changes nothing writes nothing, bounded attempts end in `CircuitStoreContended`; the
record (round trip, hand-written, unreadable, wrong type); Redis unreachable -> `CircuitStoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import redis as sync_redis
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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
from app.llm.redis_circuit import (
    CircuitStoreContended,
    CircuitStoreError,
    CircuitStoreUnavailable,
    RedisCircuitStorage,
    decode,
    encode,
)
from tests.fakes.clock import ManualClock
from tests.llm.test_breaker import LONG_RESET, RESET, counted, fail_times, not_counted, unavailable
from tests.redis_server import RedisServer, free_port
from tests.redis_server import redis_server as private_redis_server

pytestmark = pytest.mark.timeout(20)

T = TypeVar("T")


# --- a private redis-server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with private_redis_server() as server:
        yield server


def client(port: int, **options: Any) -> Redis:
    return Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, **options)


# --- processes sharing one circuit ----------------------------------------------------------------------


class Circuits:
    """Breakers on one shared circuit: with a port, each its own client on one Redis key (a process each);
    without, one `MemoryCircuitStorage` (the in-process reference)."""

    def __init__(self, port: int | None) -> None:
        self.port = port
        self.key = f"test:circuit:{uuid.uuid4().hex}"
        self.clock = ManualClock()
        self.clients: list[Redis] = []
        self._memory = MemoryCircuitStorage()

    def storage(self, **options: Any) -> CircuitStorage:
        if self.port is None:
            return self._memory
        redis = client(self.port)
        self.clients.append(redis)
        return RedisCircuitStorage(redis, self.key, **options)

    def breaker(self, fail_max: int = 2, reset_timeout: float = RESET) -> Breaker:
        return Breaker(
            fail_max=fail_max, reset_timeout=reset_timeout, clock=self.clock, storage=self.storage()
        )

    async def aclose(self) -> None:
        for redis in self.clients:
            await redis.aclose()


Scenario = Callable[[Circuits], Coroutine[Any, Any, None]]


def run_with(port: int | None, scenario: Scenario) -> None:
    async def main() -> None:
        circuits = Circuits(port)
        try:
            await scenario(circuits)
        finally:
            await circuits.aclose()

    asyncio.run(main())


@pytest.fixture(params=["memory", "redis"])
def shared(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario on each storage."""
    port = request.getfixturevalue("redis_server").port if request.param == "redis" else None
    return lambda scenario: run_with(port, scenario)


@pytest.fixture
def on_redis(redis_server: RedisServer) -> Callable[[Scenario], None]:
    return lambda scenario: run_with(redis_server.port, scenario)


async def state(breaker: Breaker) -> Circuit:
    return await breaker.storage.load()


# --- the contract, on both storages ---------------------------------------------------------------------


def test_when_fail_max_failures_through_two_processes_then_open_for_both(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(fail_max=3), circuits.breaker(fail_max=3)
        await fail_times(first, 2)
        assert await second.describe() == {"state": "closed", "failures": 2}

        await fail_times(second, 1)

        assert (await state(first)).state == OPEN
        assert (await state(first)).opened_at == circuits.clock.time()  # exact: the float round-trips
        assert (await unavailable(first)).retry_after == RESET
        assert (await unavailable(second)).retry_after == RESET
        assert await first.describe() == {"state": "open", "failures": 3, "retry_after": 10}

    shared(scenario)


def test_when_a_success_comes_between_failures_then_the_count_resets(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(fail_max=3), circuits.breaker(fail_max=3)
        await fail_times(first, 2)

        await (await second.acquire()).succeed()

        assert (await state(first)).failures == 0
        await fail_times(first, 2)
        assert (await state(second)).state == CLOSED

    shared(scenario)


def test_when_failures_do_not_count_or_permits_are_released_then_neither_outcome(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker(fail_max=3)
        await fail_times(breaker, 2)

        await fail_times(breaker, 5, not_counted())
        for _ in range(3):
            await (await breaker.acquire()).release()

        assert (await state(breaker)).failures == 2
        await fail_times(breaker, 1)
        assert (await state(breaker)).state == OPEN

    shared(scenario)


def test_when_open_then_no_permit_before_the_reset_timeout_and_retry_after_counts_down(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker(reset_timeout=LONG_RESET)
        await fail_times(breaker, 2)

        circuits.clock.advance(12.5)
        assert (await unavailable(breaker)).retry_after == 18
        circuits.clock.advance(17.49)
        assert (await unavailable(breaker)).retry_after == 1
        assert (await state(breaker)).state == OPEN

    shared(scenario)


def test_when_many_acquire_at_once_after_the_reset_timeout_then_exactly_one_trial(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()
        await fail_times(breaker, 2)
        circuits.clock.advance(RESET)

        outcomes = await asyncio.gather(*(breaker.acquire() for _ in range(10)), return_exceptions=True)

        assert [o.trial for o in outcomes if isinstance(o, Permit)] == [True]
        assert sum(isinstance(o, UpstreamError) for o in outcomes) == 9
        assert (await state(breaker)).state == HALF_OPEN

    shared(scenario)


def test_when_the_trial_succeeds_through_one_process_then_closed_for_the_other(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(), circuits.breaker()
        await fail_times(first, 2)
        circuits.clock.advance(RESET)
        trial = await second.acquire()
        assert trial.trial is True
        assert (await unavailable(first)).retry_after == 1

        await trial.succeed()

        assert await first.describe() == {"state": "closed", "failures": 0}
        assert (await state(first)).opened_at is None
        assert (await first.acquire()).trial is False

    shared(scenario)


def test_when_the_trial_fails_then_open_again_with_a_fresh_timer(shared: Callable[[Scenario], None]) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(), circuits.breaker()
        await fail_times(first, 2)
        circuits.clock.advance(RESET)
        trial = await first.acquire()
        circuits.clock.advance(7)

        await trial.fail(counted())

        assert (await state(second)).opened_at == circuits.clock.time()
        assert (await unavailable(second)).retry_after == RESET
        circuits.clock.advance(RESET)
        assert (await second.acquire()).trial is True

    shared(scenario)


def test_when_the_trial_is_released_then_the_next_acquire_anywhere_is_the_trial(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(), circuits.breaker()
        await fail_times(first, 2)
        circuits.clock.advance(RESET)
        trial = await first.acquire()

        await trial.release()
        await trial.release()  # resolved once: must not free a later trial

        again = await second.acquire()
        assert again.trial is True
        await unavailable(first)
        await unavailable(second)

    shared(scenario)


def test_when_stale_permits_resolve_after_the_circuit_changed_then_they_decide_nothing(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(), circuits.breaker()
        stale = [await first.acquire() for _ in range(3)]  # started before the outage
        await fail_times(second, 2)
        opened_at = (await state(first)).opened_at
        circuits.clock.advance(RESET)
        trial = await second.acquire()

        await stale[0].succeed()  # during the trial: decides nothing
        await stale[1].release()  # must not free the trial
        assert (await state(first)).trial_out is True
        await trial.succeed()
        await stale[2].fail(counted())  # closed again, but in a later period

        assert await first.describe() == {"state": "closed", "failures": 0}
        assert opened_at is not None

    shared(scenario)


def test_when_a_call_breaks_after_its_first_token_then_one_failure(
    shared: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()
        permit = await breaker.acquire()

        await permit.succeed()
        await permit.fail(counted())
        await permit.fail(counted())

        assert await breaker.describe() == {"state": "closed", "failures": 1}

    shared(scenario)


def test_when_transitions_happen_then_each_is_logged_once(
    shared: Callable[[Scenario], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")

    async def scenario(circuits: Circuits) -> None:
        first, second = circuits.breaker(), circuits.breaker()
        await fail_times(first, 2)
        circuits.clock.advance(RESET)
        await asyncio.gather(*(b.acquire() for b in (first, second) * 5), return_exceptions=True)

    shared(scenario)

    assert [r.getMessage() for r in caplog.records if r.name == "atelier.breaker"] == [
        "circuit upstream: closed -> open (failures: 2)",
        "circuit upstream: open -> half-open (failures: 2)",
    ]


# --- across processes, on Redis -------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [2, 5])
def test_when_50_acquires_race_over_processes_after_the_reset_then_exactly_one_trial(
    on_redis: Callable[[Scenario], None], processes: int
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breakers = [circuits.breaker() for _ in range(processes)]
        await fail_times(breakers[0], 2)
        for breaker in breakers[1:]:
            await unavailable(breaker)  # failures on one process opened it for every other
        circuits.clock.advance(RESET)

        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(breakers[i % processes].acquire() for i in range(50)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started

        trials = [o for o in outcomes if isinstance(o, Permit)]
        assert [permit.trial for permit in trials] == [True]
        assert [o.code for o in outcomes if isinstance(o, UpstreamError)] == ["upstream_unavailable"] * 49
        assert (await state(breakers[-1])).state == HALF_OPEN
        conflicts = sum(b.storage.conflicts for b in breakers if isinstance(b.storage, RedisCircuitStorage))
        print(f"50 acquires over {processes} processes: {elapsed * 1000:.1f} ms, {conflicts} lost races")

        await trials[0].succeed()
        for breaker in breakers:
            assert (await breaker.acquire()).trial is False

    on_redis(scenario)


class SyncWriter:
    """Another process writing the key between our read and our commit: a synchronous client, so it can
    run inside a rule (rules are plain functions)."""

    def __init__(self, port: int, key: str) -> None:
        self.redis = sync_redis.Redis(host="127.0.0.1", port=port)
        self.key = key

    def write(self, circuit: Circuit) -> None:
        self.redis.hset(self.key, mapping=encode(circuit))  # type: ignore[arg-type]

    def close(self) -> None:
        self.redis.close()


def test_when_another_process_commits_between_read_and_write_then_the_rule_runs_again_on_its_value(
    on_redis: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        assert circuits.port is not None
        storage = circuits.storage()
        assert isinstance(storage, RedisCircuitStorage)
        writer = SyncWriter(circuits.port, circuits.key)
        seen: list[int] = []

        def rule(circuit: Circuit) -> tuple[Circuit, int]:
            seen.append(circuit.failures)
            if len(seen) == 1:
                writer.write(Circuit(failures=5))  # the other process wins the race
            return Circuit(failures=circuit.failures + 1), circuit.failures

        try:
            result = await storage.update(rule)
        finally:
            writer.close()

        assert seen == [0, 5]  # ran twice: the second time on what the other process wrote
        assert result == 5
        assert (await storage.load()).failures == 6  # its increment is kept, ours added on top
        assert storage.conflicts == 1

    on_redis(scenario)


def test_when_a_transition_rule_runs_twice_before_it_commits_then_it_is_logged_once(
    on_redis: Callable[[Scenario], None], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.breaker")

    async def scenario(circuits: Circuits) -> None:
        assert circuits.port is not None
        storage = circuits.storage()
        assert isinstance(storage, RedisCircuitStorage)
        writer = SyncWriter(circuits.port, circuits.key)
        original = storage.update
        runs = 0

        async def contended(rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
            def first_loses(circuit: Circuit) -> tuple[Circuit, T]:
                nonlocal runs
                runs += 1
                if runs == 2:  # the failure's first run: another process writes in between
                    writer.write(circuit)  # an unchanged write still changes the watched key
                return rule(circuit)

            return await original(first_loses)

        storage.update = contended  # type: ignore[method-assign]
        breaker = Breaker(fail_max=1, reset_timeout=RESET, clock=circuits.clock, storage=storage)
        permit = await breaker.acquire()  # the first run: a read, nothing to commit
        try:
            await permit.fail(counted())  # the opening: its first run loses the race, the second commits
        finally:
            writer.close()

        assert runs == 3
        assert storage.conflicts == 1
        assert (await storage.load()).state == OPEN

    on_redis(scenario)

    assert [r.getMessage() for r in caplog.records if r.name == "atelier.breaker"] == [
        "circuit upstream: closed -> open (failures: 1)"
    ]


def test_when_every_attempt_loses_then_contended_after_max_attempts(
    on_redis: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        assert circuits.port is not None
        storage = circuits.storage(max_attempts=3)
        writer = SyncWriter(circuits.port, circuits.key)
        runs = 0

        def always_loses(circuit: Circuit) -> tuple[Circuit, None]:
            nonlocal runs
            runs += 1
            writer.write(Circuit(failures=runs))
            return Circuit(failures=100), None

        try:
            with pytest.raises(CircuitStoreContended, match="3 attempts"):
                await storage.update(always_loses)
        finally:
            writer.close()

        assert runs == 3
        assert (await storage.load()).failures == 3  # the other writer's last value: ours never committed

    on_redis(scenario)


def test_when_a_rule_changes_nothing_then_nothing_is_written(on_redis: Callable[[Scenario], None]) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()

        await (await breaker.acquire()).release()  # closed: both rules leave the circuit as it is

        assert await circuits.clients[0].exists(circuits.key) == 0

    on_redis(scenario)


# --- the record ----------------------------------------------------------------------------------------


def test_record_round_trips_every_field() -> None:
    circuit = Circuit(
        state=HALF_OPEN, failures=7, opened_at=1_800_000_012.123456789, period=41, trial_out=True
    )

    assert decode(encode(circuit)) == circuit
    assert decode({k.encode(): v.encode() for k, v in encode(circuit).items()}) == circuit
    assert decode(encode(Circuit())) == Circuit() == decode({})


def test_when_a_record_is_written_by_hand_then_missing_fields_take_their_defaults(
    on_redis: Callable[[Scenario], None],
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()
        await circuits.clients[0].hset(circuits.key, "state", "open")

        assert await state(breaker) == Circuit(state=OPEN)
        assert (await breaker.acquire()).trial is True  # no opening time: long past, the trial may go

    on_redis(scenario)


async def refused_by_store(breaker: Breaker) -> BaseException | None:
    """What the breaker's store raised, as `acquire` refuses for it: `broker_unavailable`, never counted."""
    with pytest.raises(UpstreamError) as refused:
        await breaker.acquire()
    assert refused.value.code == "broker_unavailable" and not refused.value.counts
    return refused.value.__cause__


@pytest.mark.parametrize(
    ("field", "value"), [("state", "ajar"), ("failures", "x"), ("opened_at", "noon"), ("trial_out", "yes")]
)
def test_when_a_field_cannot_be_read_then_an_error_names_it(
    on_redis: Callable[[Scenario], None], field: str, value: str
) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()
        await circuits.clients[0].hset(circuits.key, field, value)

        assert f"unreadable '{field}'" in str(await refused_by_store(breaker))
        with pytest.raises(CircuitStoreError, match=f"unreadable '{field}'"):
            await breaker.describe()

    on_redis(scenario)


def test_when_the_key_holds_another_type_then_a_store_error(on_redis: Callable[[Scenario], None]) -> None:
    async def scenario(circuits: Circuits) -> None:
        breaker = circuits.breaker()
        await circuits.clients[0].set(circuits.key, "{}")

        cause = await refused_by_store(breaker)
        assert "WRONGTYPE" in str(cause)
        assert not isinstance(cause, CircuitStoreUnavailable)

    on_redis(scenario)


# --- Redis unreachable ----------------------------------------------------------------------------------


def test_when_redis_is_unreachable_then_circuit_store_unavailable() -> None:
    async def scenario() -> None:
        # Nothing listens there; no client-side retries, so the test does not wait out redis-py's backoff.
        redis = client(free_port(), retry=Retry(NoBackoff(), 0))
        breaker = Breaker(
            fail_max=2, reset_timeout=RESET, clock=ManualClock(), storage=RedisCircuitStorage(redis)
        )
        try:
            cause = await refused_by_store(breaker)
            assert isinstance(cause, CircuitStoreUnavailable) and "unreachable" in str(cause)
            with pytest.raises(CircuitStoreUnavailable):
                await breaker.describe()
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_when_redis_stops_and_comes_back_then_unavailable_meanwhile_and_the_circuit_after(
    on_redis: Callable[[Scenario], None], redis_server: RedisServer
) -> None:
    """Stopping the module's server loses its data (no persistence): the circuit is closed afterwards."""

    async def scenario(circuits: Circuits) -> None:
        assert circuits.port is not None
        redis = client(circuits.port, retry=Retry(NoBackoff(), 0))
        circuits.clients.append(redis)
        breaker = Breaker(
            fail_max=1, reset_timeout=RESET, clock=circuits.clock, storage=RedisCircuitStorage(redis)
        )
        await fail_times(breaker, 1)

        redis_server.stop()
        try:
            assert isinstance(await refused_by_store(breaker), CircuitStoreUnavailable)
        finally:
            redis_server.start()

        assert (await breaker.acquire()).trial is False  # a new server, a new (closed) circuit

    on_redis(scenario)
