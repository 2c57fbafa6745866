"""InProcessBroker: seq numbering, cursor reads, bounded waits, prompt wake-ups, close and retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from app.streaming.broker import Batch, Broker, InProcessBroker

T = TypeVar("T")


def run(scenario: Callable[[InProcessBroker], Awaitable[T]]) -> T:
    """Run one scenario on a fresh broker in its own event loop, and tear the broker down after."""

    async def main() -> T:
        broker = InProcessBroker()
        try:
            return await scenario(broker)
        finally:
            await broker.aclose()

    return asyncio.run(main())


async def filled(broker: InProcessBroker, stream_id: str = "s", texts: int = 3) -> None:
    await broker.create(stream_id)
    await broker.append(stream_id, "metadata", {"artist_id": 1})
    for i in range(texts):
        await broker.append(stream_id, "text", {"delta": f"w{i} "})


def test_in_process_broker_satisfies_the_protocol() -> None:
    broker: Broker = InProcessBroker()
    assert broker is not None


def test_append_then_seq_one_to_n_and_type_in_data() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await broker.create("s")
        first = await broker.append("s", "metadata", {"artist_id": 7})
        second = await broker.append("s", "text", {"delta": "Hello"})
        third = await broker.append("s", "done", {"words": 1})
        assert [e.seq for e in (first, second, third)] == [1, 2, 3]
        assert first.type == "metadata" and first.data == {"type": "metadata", "artist_id": 7}
        assert second.data == {"type": "text", "delta": "Hello"}
        assert third.data == {"type": "done", "words": 1}

    run(scenario)


def test_append_when_two_streams_then_each_counts_from_one() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await broker.create("a")
        await broker.create("b")
        await broker.append("a", "metadata", {})
        await broker.append("a", "text", {"delta": "x"})
        event = await broker.append("b", "metadata", {})
        assert event.seq == 1
        assert await broker.last_seq("a") == 2
        assert await broker.last_seq("b") == 1

    run(scenario)


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_read_when_events_after_cursor_then_exactly_those(after: int) -> None:
    async def scenario(broker: InProcessBroker) -> Batch | None:
        await filled(broker, texts=3)  # seq 1..4
        return await broker.read("s", after=after, wait=1)

    batch = run(scenario)
    assert batch is not None
    assert [e.seq for e in batch.events] == list(range(after + 1, 5))
    assert batch.closed is False


def test_read_when_nothing_new_then_waits_about_wait_and_returns_empty() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)  # seq 1..2
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.1)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert 0.09 <= waited < 0.5


def test_read_when_the_log_keeps_changing_then_no_empty_batch_and_quiet_logs_still_wake() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[list[int], list[float]]:
        await filled(broker, texts=0)  # seq 1

        async def writer() -> None:
            for i in range(25):  # 0.5 s of text, every 20 ms: never quiet for the 0.1 s wait
                await asyncio.sleep(0.02)
                await broker.append("s", "text", {"delta": f"w{i}"})

        writing = asyncio.create_task(writer())
        sizes: list[int] = []
        after = 1
        while not writing.done() or after < 26:
            batch = await broker.read("s", after=after, wait=0.1)
            assert batch is not None
            sizes.append(len(batch.events))
            after += len(batch.events)
        # then quiet: the waits return empty, each after about the wait
        quiet: list[float] = []
        for _ in range(3):
            started = time.monotonic()
            batch = await broker.read("s", after=after, wait=0.1)
            assert batch == Batch(events=[], closed=False)
            quiet.append(time.monotonic() - started)
        return sizes, quiet

    sizes, quiet = run(scenario)
    assert 0 not in sizes and sum(sizes) == 25
    assert all(0.05 <= waited < 0.5 for waited in quiet), quiet


def test_read_when_a_later_reader_asks_for_a_shorter_wait_then_it_is_woken_in_time() -> None:
    async def scenario(broker: InProcessBroker) -> float:
        await filled(broker, texts=0)
        patient = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0)  # one turn of the loop: the patient reader is now waiting
        started = time.monotonic()
        batch = await broker.read("s", after=1, wait=0.1)
        assert batch == Batch(events=[], closed=False)
        patient.cancel()
        return time.monotonic() - started

    assert run(scenario) < 0.5


def test_aclose_when_readers_wait_then_they_are_woken() -> None:
    async def main() -> list[Batch | None]:
        broker = InProcessBroker()
        await filled(broker, texts=0)
        readers = [asyncio.create_task(broker.read("s", after=1, wait=30)) for _ in range(3)]
        await asyncio.sleep(0)  # one turn of the loop: they are all waiting
        await broker.aclose()
        return await asyncio.wait_for(asyncio.gather(*readers), 1)

    assert all(batch is not None and batch.events == [] for batch in asyncio.run(main()))


def test_read_when_waiting_and_append_then_wakes_promptly() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)  # seq 1
        reader = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0.05)
        assert not reader.done()
        appended_at = time.monotonic()
        await broker.append("s", "text", {"delta": "late"})
        batch = await asyncio.wait_for(reader, 1)
        return batch, time.monotonic() - appended_at

    batch, latency = run(scenario)
    assert latency < 0.1
    assert batch is not None
    assert [(e.seq, e.data["delta"]) for e in batch.events] == [(2, "late")]


def test_read_when_many_readers_wait_then_all_wake_on_one_append() -> None:
    readers = 200

    async def scenario(broker: InProcessBroker) -> tuple[list[Batch | None], float]:
        await filled(broker, texts=0)
        tasks = [asyncio.create_task(broker.read("s", after=1, wait=5)) for _ in range(readers)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in tasks)
        appended_at = time.monotonic()
        await broker.append("s", "text", {"delta": "all"})
        batches = await asyncio.wait_for(asyncio.gather(*tasks), 1)
        return batches, time.monotonic() - appended_at

    batches, latency = run(scenario)
    assert latency < 0.1
    assert len(batches) == readers
    for batch in batches:
        assert batch is not None and [e.seq for e in batch.events] == [2]


def test_read_when_woken_then_later_waiters_wait_again() -> None:
    async def scenario(broker: InProcessBroker) -> float:
        await filled(broker, texts=0)
        first = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0.01)
        await broker.append("s", "text", {"delta": "one"})
        await asyncio.wait_for(first, 1)
        # A reader that is up to date now must wait, not spin on the event that was already set.
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.1)
        assert batch == Batch(events=[], closed=False)
        return time.monotonic() - started

    assert run(scenario) >= 0.09


def test_read_when_readers_have_different_cursors_then_each_gets_its_own() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, texts=0)
        slow = asyncio.create_task(broker.read("s", after=0, wait=5))
        fast = asyncio.create_task(broker.read("s", after=1, wait=5))
        slow_batch = await asyncio.wait_for(slow, 1)  # has event 1 already: no wait
        await asyncio.sleep(0.01)
        assert not fast.done()
        await broker.append("s", "text", {"delta": "x"})
        fast_batch = await asyncio.wait_for(fast, 1)
        assert slow_batch is not None and [e.seq for e in slow_batch.events] == [1]
        assert fast_batch is not None and [e.seq for e in fast_batch.events] == [2]

    run(scenario)


def test_close_then_batch_closed_and_waiting_readers_wake() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, texts=1)
        reader = asyncio.create_task(broker.read("s", after=2, wait=5))
        await asyncio.sleep(0.02)
        await broker.append("s", "done", {})
        woken = await asyncio.wait_for(reader, 1)
        assert woken is not None and [e.type for e in woken.events] == ["done"]

        waiting = asyncio.create_task(broker.read("s", after=3, wait=5))
        await asyncio.sleep(0.02)
        closed_at = time.monotonic()
        await broker.close("s", retention=60)
        batch = await asyncio.wait_for(waiting, 1)
        assert time.monotonic() - closed_at < 0.1
        assert batch == Batch(events=[], closed=True)

        # A closed log answers at once, whatever the wait, with everything after the cursor.
        started = time.monotonic()
        everything = await broker.read("s", after=0, wait=5)
        assert time.monotonic() - started < 0.1
        assert everything is not None and everything.closed is True
        assert [e.seq for e in everything.events] == [1, 2, 3]

    run(scenario)


def test_append_when_closed_then_raises_and_log_unchanged() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, texts=1)
        await broker.close("s", retention=60)
        with pytest.raises(RuntimeError, match="closed"):
            await broker.append("s", "text", {"delta": "too late"})
        assert await broker.last_seq("s") == 2

    run(scenario)


def test_close_when_retention_passes_then_stream_forgotten() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, texts=1)
        await broker.close("s", retention=0.05)
        kept = await broker.read("s", after=0, wait=0)
        assert kept is not None and kept.closed and len(kept.events) == 2
        await asyncio.sleep(0.1)
        assert await broker.read("s", after=0, wait=1) is None
        assert await broker.last_seq("s") is None

    run(scenario)


def test_close_when_retention_passes_then_other_streams_kept() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, "short", texts=0)
        await filled(broker, "long", texts=0)
        await broker.close("short", retention=0.02)
        await broker.close("long", retention=60)
        await asyncio.sleep(0.08)
        assert await broker.last_seq("short") is None
        assert await broker.last_seq("long") == 1

    run(scenario)


def test_read_when_stream_unknown_then_none_at_once() -> None:
    async def scenario(broker: InProcessBroker) -> float:
        started = time.monotonic()
        assert await broker.read("nope", after=0, wait=5) is None
        return time.monotonic() - started

    assert run(scenario) < 0.1


def test_last_seq() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        assert await broker.last_seq("s") is None
        await broker.create("s")
        assert await broker.last_seq("s") == 0
        await broker.append("s", "metadata", {})
        await broker.append("s", "text", {"delta": "x"})
        assert await broker.last_seq("s") == 2
        await broker.close("s", retention=60)
        assert await broker.last_seq("s") == 2

    run(scenario)


def test_aclose_then_everything_forgotten_and_timers_cancelled() -> None:
    async def scenario(broker: InProcessBroker) -> None:
        await filled(broker, texts=0)
        await broker.close("s", retention=0.01)
        await broker.aclose()
        assert await broker.read("s", after=0, wait=0) is None
        await asyncio.sleep(0.03)  # a cancelled timer does not fire (nothing left to forget anyway)

    run(scenario)
