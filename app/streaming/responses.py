"""HTTP responses over event streams: SSE for readers, bare markdown for `curl -N ... > portrait.md`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from starlette.responses import StreamingResponse

from app.streaming import sse
from app.streaming.broker import Broker, BrokerUnavailable
from app.streaming.events import Error, Event, Text, merge_text

BROKER_UNAVAILABLE = Error(
    "broker_unavailable",
    "Atelier's shared state (Redis) cannot be reached; reconnect shortly to go on.",
    retryable=True,
)


class StreamAborted(Exception):
    """Raised inside a streaming body to abort it: the server drops the connection without the final chunk,
    so a client (curl) sees the body as incomplete instead of a short file that looks whole."""


async def follow_log(
    broker: Broker, stream_id: str, after: int, ping_interval: float = sse.PING_INTERVAL
) -> AsyncIterator[list[Event] | None]:
    """Every event after `after`, in batches (runs of text merged for a reader that fell behind); None
    after `ping_interval` seconds of silence; ends after the last event of a closed log, or with an
    `error` (`broker_unavailable`, no id) when the log cannot be read."""
    while True:
        try:
            batch = await broker.read(stream_id, after, wait=ping_interval)
        except BrokerUnavailable:
            yield [Event(seq=0, payload=BROKER_UNAVAILABLE)]
            return
        if batch is None:
            return
        if batch.events:
            after = batch.events[-1].seq
            yield list(merge_text(batch.events))
        elif not batch.closed:
            yield None
        if batch.closed:
            return


async def follow_list(events: Sequence[Event], after: int) -> AsyncIterator[list[Event] | None]:
    remaining = [event for event in events if event.seq > after]
    if remaining:
        yield remaining


def sse_response(
    stream_id: str,
    batches: AsyncIterator[list[Event] | None],
    retry_ms: int,
    on_close: Callable[[], None] | None = None,
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            yield sse.encode_retry(retry_ms)
            async for batch in batches:
                if batch is None:
                    yield sse.PING
                else:
                    yield b"".join(sse.encode(stream_id, event) for event in batch)
        finally:
            if on_close is not None:
                on_close()

    return StreamingResponse(body(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


def markdown_response(
    batches: AsyncIterator[list[Event] | None], on_close: Callable[[], None] | None = None
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            async for batch in batches:
                for event in batch or []:
                    payload = event.payload
                    if isinstance(payload, Text):
                        yield payload.delta.encode()
                    elif isinstance(payload, Error):
                        raise StreamAborted(payload.code)
        finally:
            if on_close is not None:
                on_close()

    return StreamingResponse(
        body(),
        media_type="text/plain; charset=utf-8",
        headers={**sse.HEADERS, "Content-Type": "text/plain; charset=utf-8"},
    )
