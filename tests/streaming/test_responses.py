"""Following an event log: pings during silence, merged text for a reader that fell behind, a clean end."""

from __future__ import annotations

import asyncio
import time

from app.streaming.broker import InProcessBroker
from app.streaming.events import Event
from app.streaming.responses import follow_log


async def collect(broker: InProcessBroker, after: int, ping_interval: float) -> list[list[Event] | None]:
    return [batch async for batch in follow_log(broker, "s", after, ping_interval=ping_interval)]


def test_follow_when_silent_then_pings_until_the_log_closes() -> None:
    async def scenario() -> tuple[list[list[Event] | None], float]:
        broker = InProcessBroker()
        await broker.create("s")
        await broker.append("s", "metadata", {})
        reader = asyncio.create_task(collect(broker, 1, ping_interval=0.05))
        await asyncio.sleep(0.18)
        await broker.append("s", "done", {})
        closed_at = time.monotonic()
        await broker.close("s", retention=60)
        batches = await asyncio.wait_for(reader, 1)
        await broker.aclose()
        return batches, time.monotonic() - closed_at

    batches, ended_after = asyncio.run(scenario())
    pings = [batch for batch in batches if batch is None]
    assert len(pings) >= 2  # ~0.18 s of silence at one ping per 0.05 s
    assert batches[-1] is not None and [event.type for event in batches[-1]] == ["done"]
    assert ended_after < 0.1


def test_follow_when_reader_fell_behind_then_text_merged_and_nothing_lost() -> None:
    async def scenario() -> list[list[Event] | None]:
        broker = InProcessBroker()
        await broker.create("s")
        await broker.append("s", "metadata", {})
        for word in ("a ", "b ", "c "):
            await broker.append("s", "text", {"delta": word})
        await broker.append("s", "done", {})
        await broker.close("s", retention=60)
        batches = await collect(broker, 0, ping_interval=1)
        await broker.aclose()
        return batches

    (batch,) = asyncio.run(scenario())
    assert batch is not None
    assert [(event.seq, event.type) for event in batch] == [(1, "metadata"), (4, "text"), (5, "done")]
    assert batch[1].data == {"type": "text", "delta": "a b c "}


def test_follow_when_stream_unknown_then_ends_at_once() -> None:
    async def scenario() -> list[list[Event] | None]:
        return await collect(InProcessBroker(), 0, ping_interval=1)

    assert asyncio.run(scenario()) == []
