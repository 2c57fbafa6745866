"""Following an event log and sending it: pings during silence, merged text for a reader that fell behind,
a clean end; the SSE body (retry, frames, pings, the shared memo) and the bare markdown body.

Pings come from the broker's heartbeat on the event loop's own timer, so the ping test waits for real, for
a few tens of milliseconds; nothing else here waits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import httpx
import pytest
from httpx_sse import EventSource
from starlette.responses import StreamingResponse

from app.streaming import sse
from app.streaming.broker import InProcessBroker
from app.streaming.events import Error, Event, Payload, Text
from app.streaming.responses import StreamAborted, follow_list, follow_log, markdown_response, sse_response
from tests.fakes.clock import ManualClock
from tests.streaming.samples import DONE, METADATA

T = TypeVar("T")

Batches = list[list[Event] | None]


def run(scenario: Callable[[InProcessBroker], Awaitable[T]]) -> T:
    """Run one scenario on a fresh broker in its own event loop, and tear the broker down after."""

    async def main() -> T:
        broker = InProcessBroker(ManualClock())
        try:
            return await scenario(broker)
        finally:
            await broker.aclose()

    return asyncio.run(main())


async def closed_log(broker: InProcessBroker, payloads: Sequence[Payload], stream_id: str = "s") -> None:
    await broker.create(stream_id)
    for payload in payloads:
        await broker.append(stream_id, payload)
    await broker.close(stream_id, retention=60)


async def collect(broker: InProcessBroker, after: int, ping_interval: float) -> Batches:
    return [batch async for batch in follow_log(broker, "s", after, ping_interval=ping_interval)]


async def scripted(*batches: list[Event] | None) -> AsyncIterator[list[Event] | None]:
    for batch in batches:
        yield batch


async def body_of(response: StreamingResponse) -> list[bytes]:
    return [chunk async for chunk in response.body_iterator]  # type: ignore[misc]


def sse_events(body: bytes) -> list[tuple[str, str, dict[str, object]]]:
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return [(e.id, e.event, json.loads(e.data)) for e in EventSource(response).iter_sse() if e.data]


# --- follow_log --------------------------------------------------------------------------------------


def test_follow_log_when_silent_then_pings_until_the_log_closes() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[Batches, float]:
        await broker.create("s")
        await broker.append("s", METADATA)
        reader = asyncio.create_task(collect(broker, 1, ping_interval=0.03))
        await asyncio.sleep(0.1)
        await broker.append("s", DONE)
        closed_at = time.monotonic()
        await broker.close("s", retention=60)
        batches = await asyncio.wait_for(reader, 1)
        return batches, time.monotonic() - closed_at

    batches, ended_after = run(scenario)
    pings = [batch for batch in batches if batch is None]
    assert len(pings) >= 2  # ~0.1 s of silence at one ping per 0.03 s
    assert batches[-1] is not None and [event.type for event in batches[-1]] == ["done"]
    assert ended_after < 0.1


def test_follow_log_when_reader_fell_behind_then_text_merged_and_nothing_lost() -> None:
    async def scenario(broker: InProcessBroker) -> Batches:
        await closed_log(broker, [METADATA, Text("a "), Text("b "), Text("c "), DONE])
        return await collect(broker, 0, ping_interval=1)

    (batch,) = run(scenario)
    assert batch is not None
    assert [(event.seq, event.type) for event in batch] == [(1, "metadata"), (4, "text"), (5, "done")]
    assert batch[1].payload == Text("a b c ")


def test_follow_log_when_resuming_after_a_seq_then_only_later_events() -> None:
    async def scenario(broker: InProcessBroker) -> Batches:
        await closed_log(broker, [METADATA, Text("a "), Text("b "), DONE])
        return await collect(broker, 2, ping_interval=1)

    (batch,) = run(scenario)
    assert batch is not None
    assert [(event.seq, event.payload) for event in batch] == [(3, Text("b ")), (4, DONE)]


def test_follow_log_when_stream_unknown_then_ends_at_once() -> None:
    async def scenario(broker: InProcessBroker) -> Batches:
        return await collect(broker, 0, ping_interval=1)

    assert run(scenario) == []


def test_follow_log_when_reader_has_everything_of_a_closed_log_then_ends_without_a_ping() -> None:
    async def scenario(broker: InProcessBroker) -> Batches:
        await closed_log(broker, [METADATA, DONE])
        return await collect(broker, 2, ping_interval=1)

    assert run(scenario) == []


# --- follow_list -------------------------------------------------------------------------------------


def test_follow_list_when_after_a_seq_then_the_rest_in_one_batch() -> None:
    events = [Event(seq=1, payload=METADATA), Event(seq=2, payload=Text("x")), Event(seq=3, payload=DONE)]

    async def scenario() -> Batches:
        return [batch async for batch in follow_list(events, after=1)]

    (batch,) = asyncio.run(scenario())
    assert batch == events[1:]


def test_follow_list_when_after_the_last_seq_then_nothing() -> None:
    events = [Event(seq=1, payload=METADATA), Event(seq=2, payload=DONE)]

    async def scenario() -> Batches:
        return [batch async for batch in follow_list(events, after=2)]

    assert asyncio.run(scenario()) == []


# --- sse_response ------------------------------------------------------------------------------------


def test_sse_response_when_batches_then_retry_first_then_one_chunk_per_batch() -> None:
    events = [Event(seq=1, payload=METADATA), Event(seq=2, payload=Text("Hello")), Event(seq=3, payload=DONE)]
    response = sse_response("job-1", scripted(events[:2], events[2:]), retry_ms=2500)

    chunks = asyncio.run(body_of(response))
    assert chunks[0] == b"retry: 2500\n\n"
    assert chunks[1:] == [
        sse.encode("job-1", events[0]) + sse.encode("job-1", events[1]),
        sse.encode("job-1", events[2]),
    ]


def test_sse_response_when_built_then_event_stream_uncached_unbuffered() -> None:
    response = sse_response("s", scripted(), retry_ms=1000)
    assert response.media_type == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"


def test_sse_response_when_silence_then_ping_comment() -> None:
    response = sse_response("s", scripted(None, [Event(seq=1, payload=DONE)]), retry_ms=1000)
    chunks = asyncio.run(body_of(response))
    assert chunks[1] == sse.PING
    assert sse_events(b"".join(chunks)) == [("s:1", "done", DONE.data())]


def test_sse_response_when_body_ends_then_on_close_called_once() -> None:
    closed: list[str] = []
    response = sse_response(
        "s", scripted([Event(seq=1, payload=DONE)]), 1000, on_close=lambda: closed.append("s")
    )
    asyncio.run(body_of(response))
    assert closed == ["s"]


def test_sse_response_when_two_readers_of_one_log_then_the_second_sends_the_firsts_frames() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[bytes, bytes]:
        await closed_log(broker, [METADATA, Text("Hello"), DONE])
        first = b"".join(await body_of(sse_response("s", follow_log(broker, "s", 0), retry_ms=1000)))
        batch = await broker.read("s", after=0, wait=0)
        assert batch is not None
        for event in batch.events:  # mark each kept frame: the second reader must send these bytes
            assert event.wire is not None and event.wire in first
            event.wire = f": kept {event.seq}\n\n".encode()
        second = b"".join(await body_of(sse_response("s", follow_log(broker, "s", 0), retry_ms=1000)))
        return first, second

    first, second = run(scenario)
    assert [(seq, kind) for seq, kind, _ in sse_events(first)] == [
        ("s:1", "metadata"),
        ("s:2", "text"),
        ("s:3", "done"),
    ]
    assert second == sse.encode_retry(1000) + b": kept 1\n\n: kept 2\n\n: kept 3\n\n"


def test_sse_response_when_reader_fell_behind_then_one_text_frame_and_log_texts_keep_no_memo() -> None:
    async def scenario(broker: InProcessBroker) -> tuple[bytes, list[Event]]:
        await closed_log(broker, [METADATA, Text("a "), Text("b"), DONE])
        body = b"".join(await body_of(sse_response("s", follow_log(broker, "s", 0), retry_ms=1000)))
        batch = await broker.read("s", after=0, wait=0)
        assert batch is not None
        return body, batch.events

    body, log = run(scenario)
    assert sse_events(body) == [
        ("s:1", "metadata", METADATA.data()),
        ("s:3", "text", {"type": "text", "delta": "a b"}),
        ("s:4", "done", DONE.data()),
    ]
    assert [event.wire is None for event in log] == [False, True, True, False]


# --- markdown_response -------------------------------------------------------------------------------


def test_markdown_response_when_log_then_only_the_text_as_utf8() -> None:
    events = [
        Event(seq=1, payload=METADATA),
        Event(seq=2, payload=Text("# Édith\n\n")),
        Event(seq=3, payload=Text("La Vie en rose 🌹")),
        Event(seq=4, payload=DONE),
    ]
    response = markdown_response(scripted(events[:2], None, events[2:]))
    assert b"".join(asyncio.run(body_of(response))) == "# Édith\n\nLa Vie en rose 🌹".encode()
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_markdown_response_when_error_event_then_body_aborted_and_on_close_called() -> None:
    closed: list[bool] = []
    events = [
        Event(seq=1, payload=Text("partial")),
        Event(seq=2, payload=Error("upstream_timeout", "x", True)),
    ]
    response = markdown_response(scripted(events), on_close=lambda: closed.append(True))

    async def scenario() -> list[bytes]:
        received: list[bytes] = []
        with pytest.raises(StreamAborted, match="upstream_timeout"):
            async for chunk in response.body_iterator:
                received.append(chunk)  # type: ignore[arg-type]
        return received

    assert asyncio.run(scenario()) == [b"partial"]
    assert closed == [True]
