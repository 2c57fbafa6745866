"""RedisBroker: the in-process broker's behaviour (the contract tests below run on both brokers), plus what
only several processes sharing Redis have: a second broker (another process, its own client) reading what
the first writes, one follower task and a handful of connections for many readers, explicit seqs that
fence a stale owner, retention as a TTL, an outage (`BrokerUnavailable`) and a restart that lost everything.

Every test runs against a private redis-server on its own port (`tests/redis_server.py`), with a key
prefix per test; never the shared Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.streaming import codec, sse
from app.streaming.broker import Batch, Broker, InProcessBroker, LogLost
from app.streaming.events import Event, Metadata, Text
from app.streaming.redis_broker import (
    END_ID,
    LINGER,
    SWEEP_EVERY,
    BrokerUnavailable,
    RedisBroker,
    StaleAppend,
    StreamClosed,
    StreamExists,
)
from tests.fakes.clock import ManualClock
from tests.redis_server import RedisServer, redis_server, unique_prefix
from tests.streaming.samples import DONE, METADATA, PAYLOADS

T = TypeVar("T")
AnyBroker = InProcessBroker | RedisBroker
Run = Callable[[Callable[[Any], Awaitable[Any]]], Any]

RETENTION = 60.0


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def client(server: RedisServer, **options: Any) -> aredis.Redis:
    # One retry without backoff: a pooled connection the server dropped is replaced, an outage fails fast.
    return aredis.Redis.from_url(
        server.url, retry=Retry(NoBackoff(), 1), socket_connect_timeout=1, socket_timeout=2, **options
    )


@asynccontextmanager
async def redis_broker(
    server: RedisServer,
    prefix: str,
    *,
    linger: float = LINGER,
    sweep_every: float = SWEEP_EVERY,
    **options: Any,
) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker(
        client(server, **options), prefix, owns_client=True, linger=linger, sweep_every=sweep_every
    )
    try:
        yield broker
    finally:
        await broker.aclose()


@pytest.fixture(params=["in_process", "redis"])
def run(request: pytest.FixtureRequest) -> Run:
    """Run one scenario on a fresh broker of each kind, in its own event loop, and tear it down after."""
    if request.param == "in_process":

        def run_in_process(scenario: Callable[[Any], Awaitable[T]]) -> T:
            async def main() -> T:
                broker = InProcessBroker(ManualClock())
                try:
                    return await scenario(broker)
                finally:
                    await broker.aclose()

            return asyncio.run(main())

        return run_in_process

    server: RedisServer = request.getfixturevalue("private_redis")
    prefix = unique_prefix()

    def run_on_redis(scenario: Callable[[Any], Awaitable[T]]) -> T:
        async def main() -> T:
            async with redis_broker(server, prefix) as broker:
                return await scenario(broker)

        return asyncio.run(main())

    return run_on_redis


async def filled(broker: AnyBroker, stream_id: str = "s", texts: int = 3) -> None:
    """A log of `metadata` then `texts` text events: seq 1 .. texts + 1."""
    await broker.create(stream_id)
    await broker.append(stream_id, METADATA)
    for i in range(texts):
        await broker.append(stream_id, Text(f"w{i} "))


async def until(condition: Callable[[], bool], deadline: float = 2.0) -> None:
    """Wait for `condition` itself (checked each loop turn, bounded), never a guessed delay."""
    async with asyncio.timeout(deadline):
        while not condition():  # noqa: ASYNC110 - the broker's own state, which no event of ours announces
            await asyncio.sleep(0.001)


async def readers_waiting(broker: AnyBroker, stream_id: str = "s", count: int = 1) -> None:
    """Until `count` readers wait for the next event of `stream_id` (so an append now wakes them)."""
    await until(lambda: broker.waiting(stream_id) >= count)


def seqs(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [event.seq for event in batch.events]


async def follow(broker: AnyBroker, stream_id: str, after: int = 0, wait: float = 5) -> list[Event]:
    """Every event until the log is closed, the way `follow_log` reads."""
    events: list[Event] = []
    while True:
        batch = await broker.read(stream_id, after, wait)
        assert batch is not None
        events += batch.events
        if batch.events:
            after = batch.events[-1].seq
        if batch.closed:
            return events


# --- the contract, on both brokers -------------------------------------------------------------------


def test_broker_when_used_as_a_broker_then_has_the_protocols_methods(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> None:
        typed: Broker = broker
        assert typed is broker

    run(scenario)


def test_append_when_payloads_then_seq_one_to_n_and_payloads_kept_as_given(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[list[Event], Batch | None]:
        await broker.create("s")
        events = [await broker.append("s", payload) for payload in (METADATA, Text("Hello"), DONE)]
        return events, await broker.read("s", after=0, wait=0)

    events, batch = run(scenario)
    assert [event.seq for event in events] == [1, 2, 3]
    assert [event.type for event in events] == ["metadata", "text", "done"]
    assert events[0].payload is METADATA and events[2].payload is DONE
    assert batch is not None and [event.payload for event in batch.events] == [METADATA, Text("Hello"), DONE]
    assert events[0].wire is None


def test_append_when_two_streams_then_each_counts_from_one(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[int, int | None, int | None]:
        await broker.create("a")
        await broker.create("b")
        await broker.append("a", METADATA)
        await broker.append("a", Text("x"))
        event = await broker.append("b", METADATA)
        return event.seq, await broker.last_seq("a"), await broker.last_seq("b")

    assert run(scenario) == (1, 2, 1)


def test_append_when_closed_then_raises_and_log_unchanged(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> int | None:
        await filled(broker, texts=1)
        await broker.close("s", retention=RETENTION)
        with pytest.raises(RuntimeError, match="closed"):
            await broker.append("s", Text("too late"))
        return await broker.last_seq("s")

    assert run(scenario) == 2


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_read_when_events_after_cursor_then_exactly_those(run: Run, after: int) -> None:
    async def scenario(broker: AnyBroker) -> Batch | None:
        await filled(broker, texts=3)  # seq 1..4
        return await broker.read("s", after=after, wait=1)

    batch = run(scenario)
    assert seqs(batch) == list(range(after + 1, 5))
    assert batch is not None and batch.closed is False


def test_read_when_an_event_was_encoded_then_later_readers_get_the_same_event_and_memo(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[bytes, Batch | None, Batch | None]:
        await filled(broker, texts=1)
        first = await broker.read("s", after=1, wait=0)
        assert first is not None
        frame = sse.encode("s", first.events[0])
        return frame, first, await broker.read("s", after=1, wait=0)

    frame, first, second = run(scenario)
    assert first is not None and second is not None
    assert second.events[0] is first.events[0]
    assert second.events[0].wire is frame


def test_read_when_nothing_new_then_waits_about_wait_and_returns_empty(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.05)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert 0.045 <= waited < 0.4


def test_read_when_the_log_keeps_changing_then_no_empty_batch_and_nothing_lost(run: Run) -> None:
    writes = 20

    async def scenario(broker: AnyBroker) -> list[int]:
        await filled(broker, texts=0)

        async def writer() -> None:
            for i in range(writes):
                await asyncio.sleep(0.01)
                await broker.append("s", Text(f"w{i}"))

        writing = asyncio.create_task(writer())
        sizes: list[int] = []
        after = 1
        # Until the last event (on Redis the follower may deliver it before the writer's call returns).
        while after < writes + 1:
            batch = await broker.read("s", after=after, wait=0.05)
            assert batch is not None
            sizes.append(len(batch.events))
            after += len(batch.events)
        await writing
        return sizes

    sizes = run(scenario)
    assert 0 not in sizes
    assert sum(sizes) == writes


def test_read_when_a_later_reader_asks_for_a_shorter_wait_then_it_is_woken_in_time(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)
        patient = asyncio.create_task(broker.read("s", after=1, wait=5))
        await readers_waiting(broker)
        started = time.monotonic()
        batch = await broker.read("s", after=1, wait=0.05)
        patient.cancel()
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert waited < 0.4


def test_read_when_waiting_and_append_then_wakes_promptly_with_the_new_event(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)
        reader = asyncio.create_task(broker.read("s", after=1, wait=5))
        await readers_waiting(broker)
        assert not reader.done()
        appended_at = time.monotonic()
        await broker.append("s", Text("late"))
        batch = await asyncio.wait_for(reader, 1)
        return batch, time.monotonic() - appended_at

    batch, latency = run(scenario)
    assert latency < 0.1
    assert batch is not None
    assert [(event.seq, event.payload) for event in batch.events] == [(2, Text("late"))]


def test_read_when_many_readers_wait_then_all_wake_on_one_append(run: Run) -> None:
    readers = 200

    async def scenario(broker: AnyBroker) -> tuple[list[Batch | None], float]:
        await filled(broker, texts=0)
        tasks = [asyncio.create_task(broker.read("s", after=1, wait=5)) for _ in range(readers)]
        await readers_waiting(broker, count=readers)
        assert not any(task.done() for task in tasks)
        appended_at = time.monotonic()
        await broker.append("s", Text("all"))
        batches = await asyncio.wait_for(asyncio.gather(*tasks), 1)
        return batches, time.monotonic() - appended_at

    batches, latency = run(scenario)
    assert latency < 0.1
    assert all(seqs(batch) == [2] for batch in batches)
    assert len({id(batch.events[0]) for batch in batches if batch is not None}) == 1  # one shared event


def test_read_when_woken_then_a_reader_up_to_date_waits_again(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)
        first = asyncio.create_task(broker.read("s", after=1, wait=5))
        await readers_waiting(broker)
        await broker.append("s", Text("one"))
        await asyncio.wait_for(first, 1)
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.05)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert waited >= 0.045


def test_read_when_readers_have_different_cursors_then_each_gets_its_own(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, Batch | None]:
        await filled(broker, texts=0)
        slow = asyncio.create_task(broker.read("s", after=0, wait=5))
        fast = asyncio.create_task(broker.read("s", after=1, wait=5))
        slow_batch = await asyncio.wait_for(slow, 1)
        await readers_waiting(broker)
        assert not fast.done()
        await broker.append("s", Text("x"))
        return slow_batch, await asyncio.wait_for(fast, 1)

    slow_batch, fast_batch = run(scenario)
    assert seqs(slow_batch) == [1]
    assert seqs(fast_batch) == [2]


def test_read_when_stream_unknown_then_none_at_once(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        started = time.monotonic()
        batch = await broker.read("nope", after=0, wait=5)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch is None
    assert waited < 0.1


def test_read_when_waiting_and_terminal_event_appended_then_woken_with_it(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> Batch | None:
        await filled(broker, texts=1)
        reader = asyncio.create_task(broker.read("s", after=2, wait=5))
        await readers_waiting(broker)
        await broker.append("s", DONE)
        return await asyncio.wait_for(reader, 1)

    batch = run(scenario)
    assert batch is not None
    assert [(event.seq, event.type, event.terminal) for event in batch.events] == [(3, "done", True)]
    assert batch.closed is False  # the log ends on close, not on a terminal event


def test_close_when_a_reader_waits_then_it_wakes_at_once_with_a_closed_empty_batch(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)
        await broker.append("s", DONE)
        waiting = asyncio.create_task(broker.read("s", after=3, wait=5))
        await readers_waiting(broker)
        closed_at = time.monotonic()
        await broker.close("s", retention=RETENTION)
        batch = await asyncio.wait_for(waiting, 1)
        return batch, time.monotonic() - closed_at

    batch, latency = run(scenario)
    assert batch == Batch(events=[], closed=True)
    assert latency < 0.1


def test_read_when_log_closed_then_everything_after_cursor_at_once_whatever_the_wait(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)
        await broker.append("s", DONE)
        await broker.close("s", retention=RETENTION)
        started = time.monotonic()
        batch = await broker.read("s", after=0, wait=5)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert waited < 0.1
    assert batch is not None and batch.closed is True
    assert seqs(batch) == [1, 2, 3]


def test_last_seq_when_unknown_empty_filled_and_closed(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> list[int | None]:
        unknown = await broker.last_seq("s")
        await broker.create("s")
        empty = await broker.last_seq("s")
        await broker.append("s", METADATA)
        await broker.append("s", DONE)
        filled_ = await broker.last_seq("s")
        await broker.close("s", retention=RETENTION)
        return [unknown, empty, filled_, await broker.last_seq("s")]

    assert run(scenario) == [None, 0, 2, 2]


def test_create_when_the_stream_exists_then_refused_and_its_log_kept(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> int | None:
        await filled(broker, texts=2)
        with pytest.raises(ValueError):
            await broker.create("s")
        return await broker.last_seq("s")

    assert run(scenario) == 3


def test_close_when_closed_again_then_nothing_changes(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> tuple[int | None, Batch | None]:
        await filled(broker, texts=0)
        await broker.close("s", retention=RETENTION)
        await broker.close("s", retention=RETENTION)
        return await broker.last_seq("s"), await broker.read("s", after=0, wait=0)

    last, batch = run(scenario)
    assert last == 1
    assert batch is not None and batch.closed and seqs(batch) == [1]


def test_aclose_when_readers_wait_then_they_are_woken(run: Run) -> None:
    async def scenario(broker: AnyBroker) -> list[Batch | None]:
        await filled(broker, texts=0)
        readers = [asyncio.create_task(broker.read("s", after=1, wait=30)) for _ in range(3)]
        await readers_waiting(broker, count=3)
        await broker.aclose()
        return await asyncio.wait_for(asyncio.gather(*readers), 1)

    assert run(scenario) == [Batch(events=[], closed=False)] * 3


# --- the codec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
def test_codec_when_a_payload_round_trips_then_equal(payload: Any) -> None:
    fields = codec.encode(payload)
    assert codec.decode(fields) == payload
    as_redis_returns_it = {name.encode(): value.encode() for name, value in fields.items()}
    assert codec.decode(as_redis_returns_it) == payload


def test_codec_when_datetimes_usage_none_and_empty_values_then_exact() -> None:
    paris = timezone(timedelta(hours=2))
    for started_at in (datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=paris), datetime(2025, 6, 1, 12, 0)):
        metadata = replace(METADATA, started_at=started_at)
        decoded = codec.decode(codec.encode(metadata))
        assert isinstance(decoded, Metadata) and decoded == metadata
        assert decoded.started_at.utcoffset() == started_at.utcoffset()
    done = replace(DONE, usage=None, length_score=None)
    assert codec.decode(codec.encode(done)) == done
    assert codec.decode(codec.encode(Text(""))) == Text("")


def test_codec_when_the_entry_is_not_a_payload_then_codec_error() -> None:
    for entry in (
        {"t": "nope", "d": "{}"},
        {"d": "x"},
        {"t": "done", "d": "{not json"},
        {"t": "section", "d": "{}"},
    ):
        with pytest.raises(codec.CodecError):
            codec.decode(entry)  # type: ignore[arg-type]


# --- Redis only: layout, several processes, fencing, retention, outage --------------------------------


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


def test_layout_when_written_then_one_stream_with_seq_ids_and_the_end_marker(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[list[str], int, int]:
        async with redis_broker(private_redis, prefix, decode_responses=True) as broker:
            await filled(broker, "job1", texts=1)
            await broker.append("job1", DONE)
            key = f"{prefix}log:job1"
            running_ttl = await broker._redis.pttl(key)
            await broker.close("job1", retention=RETENTION)
            ids = [entry_id for entry_id, _ in await broker._redis.xrange(key)]
            return ids, running_ttl, await broker._redis.pttl(key)

    ids, running_ttl, closed_ttl = asyncio.run(main())
    assert ids == ["0-1", "0-2", "0-3", END_ID]
    assert running_ttl == -1  # a running log has no TTL
    assert RETENTION * 1000 - 2000 < closed_ttl <= RETENTION * 1000


def test_two_brokers_when_one_appends_then_the_other_reads_every_event_and_the_end(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[list[Event], list[float]]:
        async with (
            redis_broker(private_redis, prefix) as writer,
            redis_broker(private_redis, prefix) as reader,
        ):
            await writer.create("s")
            following = asyncio.create_task(follow(reader, "s"))
            latencies = []
            for payload in PAYLOADS:
                await readers_waiting(reader)  # the follower waits: the latency is the append's alone
                sent = time.monotonic()
                await writer.append("s", payload)
                batch = await reader.read("s", after=(await writer.last_seq("s") or 0) - 1, wait=1)
                assert batch is not None and batch.events
                latencies.append(time.monotonic() - sent)
            await writer.close("s", retention=RETENTION)
            return await asyncio.wait_for(following, 2), latencies

    events, latencies = asyncio.run(main())
    assert [event.seq for event in events] == list(range(1, len(PAYLOADS) + 1))
    assert [event.payload for event in events] == PAYLOADS  # every payload type, through Redis, exact
    assert max(latencies) < 0.2


def test_two_brokers_when_a_reader_waits_on_the_other_then_woken_promptly(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[Batch | None, float, Batch | None]:
        async with (
            redis_broker(private_redis, prefix) as writer,
            redis_broker(private_redis, prefix) as reader,
        ):
            await filled(writer, texts=0)
            assert seqs(await reader.read("s", after=0, wait=0)) == [1]
            # one XREAD block (block_ms = 50) and more: the next XREAD holds this log (not observable from
            # outside, and the join delay is what the test must leave out of the latency it asserts)
            await asyncio.sleep(0.12)
            waiting = asyncio.create_task(reader.read("s", after=1, wait=5))
            await readers_waiting(reader)
            sent = time.monotonic()
            await writer.append("s", Text("x"))
            batch = await asyncio.wait_for(waiting, 1)
            latency = time.monotonic() - sent
            closing = asyncio.create_task(reader.read("s", after=2, wait=5))
            await readers_waiting(reader)
            await writer.close("s", retention=RETENTION)
            return batch, latency, await asyncio.wait_for(closing, 1)

    batch, latency, closed = asyncio.run(main())
    assert seqs(batch) == [2]
    assert latency < 0.05
    assert closed == Batch(events=[], closed=True)


def test_many_readers_on_another_broker_when_streaming_then_all_get_everything_with_one_follower(
    private_redis: RedisServer, prefix: str
) -> None:
    readers, texts = 100, 50

    async def main() -> tuple[list[list[Event]], int, int, int]:
        admin = client(private_redis)
        try:
            before = len(await admin.client_list())
            async with (
                redis_broker(private_redis, prefix) as writer,
                redis_broker(private_redis, prefix) as reader,
            ):
                await writer.create("s")
                await writer.append("s", METADATA)
                tasks = [asyncio.create_task(follow(reader, "s")) for _ in range(readers)]
                await readers_waiting(reader, count=readers)
                peak = 0
                for i in range(texts):
                    await writer.append("s", Text(f"w{i} "))
                    if i % 10 == 0:
                        peak = max(peak, len(await admin.client_list()))
                        await asyncio.sleep(0.005)
                await writer.append("s", DONE)
                await writer.close("s", retention=RETENTION)
                results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
                followers = sum(
                    1 for task in asyncio.all_tasks() if task.get_name() == "redis-broker-follower"
                )
            return results, before, peak, followers
        finally:
            await admin.aclose()

    results, before, peak, followers = asyncio.run(main())
    expected = list(range(1, texts + 3))
    assert all([event.seq for event in events] == expected for events in results)
    assert followers == 1  # one for the readers' broker ("process"), whatever the number of readers; the
    # writer's broker, with no reader of its own, follows nothing
    assert peak - before <= 6, (before, peak)  # a few connections per broker, not one per reader
    firsts = {id(events[1]) for events in results}
    assert len(firsts) == 1  # every reader of the process got the same decoded event


def test_append_on_another_broker_when_taking_over_then_numbering_goes_on(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> list[int]:
        async with (
            redis_broker(private_redis, prefix) as first,
            redis_broker(private_redis, prefix) as second,
        ):
            await filled(first, texts=1)
            event = await second.append("s", Text("taken over"))
            return [event.seq, (await first.append("s", Text("still here"))).seq]

    assert asyncio.run(main()) == [3, 4]


def test_append_at_when_a_new_owner_wrote_the_seq_then_the_old_owner_gets_stale_append(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> list[Event]:
        async with redis_broker(private_redis, prefix) as old, redis_broker(private_redis, prefix) as new:
            await old.create("s")
            await old.append_at("s", 1, METADATA)
            await old.append_at("s", 2, Text("a"))
            await new.append_at("s", 3, Text("new owner"))  # the takeover
            with pytest.raises(StaleAppend):
                await old.append_at("s", 3, Text("old owner, back from a pause"))
            with pytest.raises(StaleAppend):
                await old.append_at("s", 1, Text("far behind"))
            # (no gap check on append_at: an owner writes each seq after its own last, and plain XADDs keep the
            # path to one command per event; `append`, which numbers for the caller, never leaves one)
            await new.append("s", DONE)
            await new.close("s", retention=RETENTION)
            with pytest.raises(StreamClosed):
                await old.append_at("s", 5, Text("after the end"))
            return await asyncio.wait_for(follow(old, "s"), 2)

    events = asyncio.run(main())
    assert [event.payload for event in events] == [METADATA, Text("a"), Text("new owner"), DONE]


def test_append_at_when_many_logs_append_in_one_turn_then_one_batch_in_order_and_a_lost_log_refused(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[list[list[Event]], BaseException | None]:
        async with redis_broker(private_redis, prefix) as broker:
            for index in range(20):
                await broker.create(f"s{index}")
            # every log's next append asked for at once: one pipeline, each log in its order
            for seq in (1, 2, 3):
                await asyncio.gather(
                    *(broker.append_at(f"s{index}", seq, Text(f"{index}.{seq}")) for index in range(20))
                )
            other = client(private_redis)
            await other.delete(broker.key("s7"))
            await other.aclose()  # lost (a Redis restart, for that log)
            lost = await asyncio.gather(
                broker.append_at("s7", 4, Text("gone")),
                broker.append_at("s8", 4, Text("8.4")),
                return_exceptions=True,
            )
            logs = []
            for index in (0, 8, 19):
                batch = await broker.read(f"s{index}", 0, wait=0)
                assert batch is not None
                logs.append(batch.events)
            return logs, lost[0] if isinstance(lost[0], BaseException) else None

    logs, lost = asyncio.run(main())
    assert [[event.payload for event in log] for log in logs] == [
        [Text("0.1"), Text("0.2"), Text("0.3")],
        [Text("8.1"), Text("8.2"), Text("8.3"), Text("8.4")],
        [Text("19.1"), Text("19.2"), Text("19.3")],
    ]
    assert isinstance(lost, LogLost)


def test_append_when_a_retry_repeats_an_append_that_landed_then_written_once(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[int, int, int, int | None]:
        async with redis_broker(private_redis, prefix) as broker:
            await broker.create("s")
            key = broker.key("s")
            fields = [item for pair in codec.encode(Text("x")).items() for item in pair]
            # What a client retry does after a lost reply: the same script call with the same nonce.
            first = await broker._append(keys=[key], args=["", "nonce-1", *fields])
            again = await broker._append(keys=[key], args=["", "nonce-1", *fields])
            at = await broker._append(keys=[key], args=["2", "nonce-2", *fields])
            at_again = await broker._append(keys=[key], args=["2", "nonce-2", *fields])
            assert (first, again) == (1, 1)
            return int(at), int(at_again), int(await broker._redis.xlen(key)), await broker.last_seq("s")

    assert asyncio.run(main()) == (2, 2, 2, 2)


def test_create_when_the_stream_exists_then_stream_exists_on_every_broker(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> None:
        async with (
            redis_broker(private_redis, prefix) as first,
            redis_broker(private_redis, prefix) as second,
        ):
            await first.create("s")
            with pytest.raises(StreamExists):
                await second.create("s")

    asyncio.run(main())


def test_close_when_retention_passes_then_the_key_is_gone_and_the_stream_unknown(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[Batch | None, list[Any]]:
        async with (
            redis_broker(private_redis, prefix) as broker,
            redis_broker(private_redis, prefix) as other,
        ):
            await filled(broker, texts=1)
            await broker.append("s", DONE)
            await broker.close("s", retention=0.2)
            kept = await other.read("s", after=0, wait=0)
            async with asyncio.timeout(2):  # the retention itself, bounded
                while await broker._redis.exists(broker.key("s")):  # noqa: ASYNC110 - Redis expires it
                    await asyncio.sleep(0.01)
            gone = [
                await broker._redis.exists(broker.key("s")),
                await broker.read("s", after=0, wait=1),
                await other.read("s", after=0, wait=1),
                await broker.last_seq("s"),
            ]
            return kept, gone

    kept, gone = asyncio.run(main())
    assert kept is not None and kept.closed and seqs(kept) == [1, 2, 3]
    assert gone == [0, None, None, None]


def test_close_when_closed_again_then_the_first_retention_holds(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> int:
        async with redis_broker(private_redis, prefix) as broker:
            await filled(broker, texts=0)
            await broker.close("s", retention=RETENTION)
            await broker.close("s", retention=0.001)  # ignored: had it applied, the key would be gone already
            return int(await broker._redis.pttl(broker.key("s")))

    assert asyncio.run(main()) > (RETENTION - 2) * 1000


def test_redis_down_when_called_then_broker_unavailable_and_back_after_a_restart() -> None:
    with redis_server() as server:
        prefix = unique_prefix()

        async def down() -> None:
            async with redis_broker(server, prefix) as broker, redis_broker(server, prefix) as other:
                await filled(broker, "old", texts=1)
                waiting = asyncio.create_task(other.read("old", after=2, wait=5))
                await readers_waiting(other, "old")
                server.stop()
                with pytest.raises(BrokerUnavailable):
                    await asyncio.wait_for(waiting, 2)  # a waiting reader learns it, not after `wait`
                for call in (
                    broker.create("new"),
                    broker.append("old", Text("x")),
                    broker.append_at("old", 3, Text("x")),
                    broker.close("old", retention=1),
                    broker.last_seq("old"),
                    other.read("old", after=0, wait=0),
                ):
                    started = time.monotonic()
                    with pytest.raises(BrokerUnavailable):
                        await call
                    assert time.monotonic() - started < 1.5
                server.start()  # this Redis keeps nothing: the old log is gone
                assert await other.read("old", after=0, wait=1) is None
                with pytest.raises(BrokerUnavailable):
                    await broker.append("old", Text("x"))  # LogLost: the job ends with broker_unavailable
                await broker.create("new")
                reading = asyncio.create_task(follow(other, "new"))
                await broker.append("new", METADATA)
                await broker.append("new", DONE)
                await broker.close("new", retention=RETENTION)
                events = await asyncio.wait_for(reading, 2)
                assert [event.payload for event in events] == [METADATA, DONE]

        asyncio.run(down())


def test_follower_when_readers_come_and_go_then_idle_logs_leave_the_xread(
    private_redis: RedisServer, prefix: str
) -> None:
    async def main() -> tuple[int, int]:
        async with (
            redis_broker(private_redis, prefix) as writer,
            redis_broker(private_redis, prefix, linger=0.05, sweep_every=0.02) as reader,
        ):
            for i in range(5):
                await filled(writer, f"s{i}", texts=0)
                await reader.read(f"s{i}", after=0, wait=0)
            held = reader.followed()
            await until(lambda: reader.followed() == 0)  # bounded: fails if the logs are never dropped
            return held, reader.followed()

    assert asyncio.run(main()) == (5, 0)
