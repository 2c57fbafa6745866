"""InProcessBroker's own behaviour: what it does beyond the broker contract (no wire memo on a new event, the
last event and retention on the injected clock, aclose). The contract every broker keeps (numbering, cursor
reads, bounded waits, prompt wake-ups, close, create) runs on both brokers, in-process and Redis, in
tests/streaming/test_redis_broker.py (the `run` fixture), and is not written twice here.

Retention runs on a `ManualClock` the tests advance by hand. The read waits and the heartbeat run on the
event loop's own timer by design, so those tests wait for real, for a few tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.streaming.broker import Batch, Broker, InProcessBroker
from app.streaming.events import Event, Text
from tests.fakes.clock import ManualClock
from tests.streaming.samples import METADATA

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


def test_append_when_appended_then_event_has_no_wire_memo() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Event, Batch | None]:
        await broker.create("s")
        event = await broker.append("s", Text("w0 "))
        return event, await broker.read("s", after=0, wait=0)

    event, batch = run(scenario)
    assert event.wire is None
    assert batch is not None and batch.events == [event] and batch.events[0].wire is None


# --- read --------------------------------------------------------------------------------------------


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


# --- close -------------------------------------------------------------------------------------------


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
