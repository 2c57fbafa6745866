"""InProcessBroker: seq numbering, typed events kept as appended, cursor reads, bounded waits, prompt
wake-ups, close, and retention on the injected clock.

Retention runs on a `ManualClock` the tests advance by hand. The read waits and the heartbeat run on the
event loop's own timer by design, so those tests wait for real, for a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from app.streaming import sse
from app.streaming.broker import Batch, Broker, InProcessBroker
from app.streaming.events import Event, Text
from tests.fakes.clock import ManualClock
from tests.streaming.samples import DONE, METADATA

T = TypeVar("T")

RETENTION = 60.0


def run(scenario: Callable[[InProcessBroker], Awaitable[T]], clock: ManualClock | None = None) -> T:
    """Run one scenario on a fresh broker (on `clock`, else a manual clock nobody advances) in its own event
    loop, and tear the broker down after."""

    async def main() -> T:
        broker = InProcessBroker(clock or ManualClock())
        try:
            return await scenario(broker)
        finally:
            await broker.aclose()

    return asyncio.run(main())


async def filled(broker: InProcessBroker, stream_id: str = "s", texts: int = 3) -> None:
    """A log of `metadata` then `texts` text events: seq 1 .. texts + 1."""
    await broker.create(stream_id)
    await broker.append(stream_id, METADATA)
    for i in range(texts):
        await broker.append(stream_id, Text(f"w{i} "))


def seqs(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [event.seq for event in batch.events]


def test_in_process_broker_when_used_as_a_broker_then_has_the_protocols_methods() -> None:
    broker: Broker = InProcessBroker(ManualClock())
    methods = ("create", "append", "close", "read", "last_seq")
    assert all(inspect.iscoroutinefunction(getattr(broker, name)) for name in methods)


# --- append ------------------------------------------------------------------------------------------


def test_append_when_payloads_then_seq_one_to_n_and_payloads_kept_as_given() -> None:
    async def scenario(broker: InProcessBroker) -> list[Event]:
        await broker.create("s")
        return [await broker.append("s", payload) for payload in (METADATA, Text("Hello"), DONE)]

    events = run(scenario)
    assert [event.seq for event in events] == [1, 2, 3]
    assert [event.type for event in events] == ["metadata", "text", "done"]
    assert events[0].payload is METADATA and events[2].payload is DONE
    assert events[1].payload == Text("Hello")


def test_append_when_two_streams_then_each_counts_from_one() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[int, int | None, int | None]:
        await broker.create("a")
        await broker.create("b")
        await broker.append("a", METADATA)
        await broker.append("a", Text("x"))
        event = await broker.append("b", METADATA)
        return event.seq, await broker.last_seq("a"), await broker.last_seq("b")

    assert run(scenario) == (1, 2, 1)


def test_append_when_appended_then_event_has_no_wire_memo() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Event, Batch | None]:
        await broker.create("s")
        event = await broker.append("s", Text("w0 "))
        return event, await broker.read("s", after=0, wait=0)

    event, batch = run(scenario)
    assert event.wire is None
    assert batch is not None and batch.events == [event] and batch.events[0].wire is None


def test_append_when_closed_then_raises_and_log_unchanged() -> None:
    async def scenario(broker: InProcessBroker) -> int | None:
        await filled(broker, texts=1)
        await broker.close("s", retention=RETENTION)
        with pytest.raises(RuntimeError, match="closed"):
            await broker.append("s", Text("too late"))
        return await broker.last_seq("s")

    assert run(scenario) == 2


# --- read --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_read_when_events_after_cursor_then_exactly_those(after: int) -> None:
    async def scenario(broker: InProcessBroker) -> Batch | None:
        await filled(broker, texts=3)  # seq 1..4
        return await broker.read("s", after=after, wait=1)

    batch = run(scenario)
    assert seqs(batch) == list(range(after + 1, 5))
    assert batch is not None and batch.closed is False


def test_read_when_an_event_was_encoded_then_later_readers_get_the_same_event_and_memo() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[bytes, Batch | None, Batch | None]:
        await filled(broker, texts=1)
        first = await broker.read("s", after=1, wait=0)
        assert first is not None
        frame = sse.encode("s", first.events[0])  # the first reader sends it
        return frame, first, await broker.read("s", after=1, wait=0)

    frame, first, second = run(scenario)
    assert first is not None and second is not None
    assert second.events[0] is first.events[0]
    assert second.events[0].wire is frame


def test_read_when_nothing_new_then_waits_about_wait_and_returns_empty() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)  # seq 1..2
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.05)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert 0.045 <= waited < 0.4


def test_read_when_the_log_keeps_changing_then_no_empty_batch_and_nothing_lost() -> None:
    writes = 20

    async def scenario(broker: InProcessBroker) -> list[int]:
        await filled(broker, texts=0)  # seq 1

        async def writer() -> None:
            for i in range(writes):  # every 10 ms: never quiet for the 50 ms wait
                await asyncio.sleep(0.01)
                await broker.append("s", Text(f"w{i}"))

        writing = asyncio.create_task(writer())
        sizes: list[int] = []
        after = 1
        while not writing.done() or after < writes + 1:
            batch = await broker.read("s", after=after, wait=0.05)
            assert batch is not None
            sizes.append(len(batch.events))
            after += len(batch.events)
        return sizes

    sizes = run(scenario)
    assert 0 not in sizes
    assert sum(sizes) == writes


def test_read_when_the_log_went_quiet_after_writes_then_each_wait_returns_empty_after_about_wait() -> None:
    async def scenario(broker: InProcessBroker) -> list[float]:
        await filled(broker, texts=0)
        for i in range(3):  # the heartbeat was armed for these readers, then the log goes quiet
            reader = asyncio.create_task(broker.read("s", after=1 + i, wait=0.05))
            await asyncio.sleep(0)  # one loop turn: the reader is waiting
            await broker.append("s", Text(f"w{i}"))
            await reader
        quiet: list[float] = []
        for _ in range(3):
            started = time.monotonic()
            batch = await broker.read("s", after=4, wait=0.05)
            assert batch == Batch(events=[], closed=False)
            quiet.append(time.monotonic() - started)
        return quiet

    quiet = run(scenario)
    assert all(0.045 <= waited < 0.4 for waited in quiet), quiet


def test_read_when_a_later_reader_asks_for_a_shorter_wait_then_it_is_woken_in_time() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)
        patient = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0)  # one turn of the loop: the patient reader is now waiting
        started = time.monotonic()
        batch = await broker.read("s", after=1, wait=0.05)
        patient.cancel()
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert waited < 0.4


def test_read_when_waiting_and_append_then_wakes_promptly_with_the_new_event() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)  # seq 1
        reader = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0)
        assert not reader.done()
        appended_at = time.monotonic()
        await broker.append("s", Text("late"))
        batch = await asyncio.wait_for(reader, 1)
        return batch, time.monotonic() - appended_at

    batch, latency = run(scenario)
    assert latency < 0.1
    assert batch is not None
    assert [(event.seq, event.payload) for event in batch.events] == [(2, Text("late"))]


def test_read_when_many_readers_wait_then_all_wake_on_one_append() -> None:
    readers = 200

    async def scenario(broker: InProcessBroker) -> tuple[list[Batch | None], float]:
        await filled(broker, texts=0)
        tasks = [asyncio.create_task(broker.read("s", after=1, wait=5)) for _ in range(readers)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in tasks)
        appended_at = time.monotonic()
        await broker.append("s", Text("all"))
        batches = await asyncio.wait_for(asyncio.gather(*tasks), 1)
        return batches, time.monotonic() - appended_at

    batches, latency = run(scenario)
    assert latency < 0.1
    assert len(batches) == readers
    assert all(seqs(batch) == [2] for batch in batches)
    assert len({id(batch.events[0]) for batch in batches if batch is not None}) == 1  # one shared event


def test_read_when_woken_then_a_reader_up_to_date_waits_again() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=0)
        first = asyncio.create_task(broker.read("s", after=1, wait=5))
        await asyncio.sleep(0)
        await broker.append("s", Text("one"))
        await asyncio.wait_for(first, 1)
        # A reader that is up to date now must wait, not spin on the wake-up that was already given.
        started = time.monotonic()
        batch = await broker.read("s", after=2, wait=0.05)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch == Batch(events=[], closed=False)
    assert waited >= 0.045


def test_read_when_readers_have_different_cursors_then_each_gets_its_own() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, Batch | None]:
        await filled(broker, texts=0)
        slow = asyncio.create_task(broker.read("s", after=0, wait=5))
        fast = asyncio.create_task(broker.read("s", after=1, wait=5))
        slow_batch = await asyncio.wait_for(slow, 1)  # has event 1 already: no wait
        await asyncio.sleep(0)
        assert not fast.done()
        await broker.append("s", Text("x"))
        return slow_batch, await asyncio.wait_for(fast, 1)

    slow_batch, fast_batch = run(scenario)
    assert seqs(slow_batch) == [1]
    assert seqs(fast_batch) == [2]


def test_read_when_stream_unknown_then_none_at_once() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        started = time.monotonic()
        batch = await broker.read("nope", after=0, wait=5)
        return batch, time.monotonic() - started

    batch, waited = run(scenario)
    assert batch is None
    assert waited < 0.1


# --- close -------------------------------------------------------------------------------------------


def test_read_when_waiting_and_terminal_event_appended_then_woken_with_it() -> None:
    async def scenario(broker: InProcessBroker) -> Batch | None:
        await filled(broker, texts=1)
        reader = asyncio.create_task(broker.read("s", after=2, wait=5))
        await asyncio.sleep(0)
        await broker.append("s", DONE)
        return await asyncio.wait_for(reader, 1)

    batch = run(scenario)
    assert batch is not None
    assert [(event.seq, event.type, event.terminal) for event in batch.events] == [(3, "done", True)]
    assert batch.closed is False  # the log ends on close, not on a terminal event


def test_close_when_a_reader_waits_then_it_wakes_at_once_with_a_closed_empty_batch() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
        await filled(broker, texts=1)
        await broker.append("s", DONE)
        waiting = asyncio.create_task(broker.read("s", after=3, wait=5))
        await asyncio.sleep(0)
        closed_at = time.monotonic()
        await broker.close("s", retention=RETENTION)
        batch = await asyncio.wait_for(waiting, 1)
        return batch, time.monotonic() - closed_at

    batch, latency = run(scenario)
    assert batch == Batch(events=[], closed=True)
    assert latency < 0.1


def test_read_when_log_closed_then_everything_after_cursor_at_once_whatever_the_wait() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, float]:
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


# --- retention (on the manual clock) -----------------------------------------------------------------


def test_close_when_retention_not_yet_passed_then_log_still_readable() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> Batch | None:
        await filled(broker, texts=1)
        await broker.close("s", retention=RETENTION)
        clock.advance(RETENTION - 0.001)
        return await broker.read("s", after=0, wait=0)

    batch = run(scenario, clock)
    assert batch is not None and batch.closed is True
    assert seqs(batch) == [1, 2]


def test_close_when_retention_passes_then_stream_forgotten() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> tuple[Batch | None, int | None]:
        await filled(broker, texts=1)
        await broker.close("s", retention=RETENTION)
        clock.advance(RETENTION)
        return await broker.read("s", after=0, wait=1), await broker.last_seq("s")

    assert run(scenario, clock) == (None, None)
    assert clock.pending == 0


def test_close_when_retention_passes_then_other_streams_kept() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> tuple[int | None, int | None]:
        await filled(broker, "short", texts=0)
        await filled(broker, "long", texts=0)
        await broker.close("short", retention=1)
        await broker.close("long", retention=RETENTION)
        clock.advance(2)
        return await broker.last_seq("short"), await broker.last_seq("long")

    assert run(scenario, clock) == (None, 1)


def test_close_when_only_real_time_passes_then_retention_waits_for_the_injected_clock() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> tuple[int | None, int | None]:
        await filled(broker, texts=0)
        await broker.close("s", retention=0)
        for _ in range(3):  # loop turns: a timer on the event loop (delay 0) would have run by now
            await asyncio.sleep(0)
        kept = await broker.last_seq("s")
        clock.advance(0)
        return kept, await broker.last_seq("s")

    assert run(scenario, clock) == (1, None)


def test_aclose_when_retention_pending_then_everything_forgotten_and_timer_cancelled() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> Batch | None:
        await filled(broker, texts=0)
        await broker.close("s", retention=RETENTION)
        await broker.aclose()
        assert clock.pending == 0
        clock.advance(RETENTION)  # nothing left to fire
        return await broker.read("s", after=0, wait=0)

    assert run(scenario, clock) is None


def test_aclose_when_readers_wait_then_they_are_woken() -> None:
    async def main() -> list[Batch | None]:
        broker = InProcessBroker(ManualClock())
        await filled(broker, texts=0)
        readers = [asyncio.create_task(broker.read("s", after=1, wait=30)) for _ in range(3)]
        await asyncio.sleep(0)  # one turn of the loop: they are all waiting
        await broker.aclose()
        return await asyncio.wait_for(asyncio.gather(*readers), 1)

    batches = asyncio.run(main())
    assert batches == [Batch(events=[], closed=False)] * 3


# --- last_seq ----------------------------------------------------------------------------------------


def test_last_seq_when_stream_unknown_then_none() -> None:
    async def scenario(broker: InProcessBroker) -> int | None:
        return await broker.last_seq("s")

    assert run(scenario) is None


def test_last_seq_when_created_empty_then_zero() -> None:
    async def scenario(broker: InProcessBroker) -> int | None:
        await broker.create("s")
        return await broker.last_seq("s")

    assert run(scenario) == 0


def test_last_seq_when_closed_then_still_the_last_appended() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[int | None, int | None]:
        await filled(broker, texts=1)
        before = await broker.last_seq("s")
        await broker.close("s", retention=RETENTION)
        return before, await broker.last_seq("s")

    assert run(scenario) == (2, 2)


def test_create_when_the_stream_exists_then_refused_and_its_log_kept() -> None:
    async def scenario(broker: InProcessBroker) -> int | None:
        await filled(broker, texts=2)
        with pytest.raises(ValueError):
            await broker.create("s")
        return await broker.last_seq("s")

    assert run(scenario) == 3


def test_close_when_closed_again_then_the_first_retention_holds() -> None:
    clock = ManualClock()

    async def scenario(broker: InProcessBroker) -> tuple[int | None, int | None]:
        await filled(broker, texts=0)
        await broker.close("s", retention=RETENTION)
        await broker.close("s", retention=1)  # a second close neither shortens nor adds a timer
        clock.advance(2)
        kept = await broker.last_seq("s")
        clock.advance(RETENTION)
        return kept, await broker.last_seq("s")

    assert run(scenario, clock) == (1, None)
    assert clock.pending == 0
