"""A scriptable fake of Mistral's chat completions endpoint, served over real HTTP on loopback.

Tests queue `Reply` objects (status, headers and an ordered list of `Step`s that write exact bytes,
pause, hang or abort the connection) and then read back what the client did: request bodies, headers,
and when the connection closed and who closed it.

    with fake_upstream() as upstream:
        upstream.script(completion(["Hel", "lo"]), error_reply(429, headers={"retry-after": "7"}))
        ...  # point the app at upstream.base_url
        upstream.wait_closed(0)
        assert upstream.requests[0].json["stream"] is True

The fake is a raw ASGI app run by uvicorn in a background thread; tests talk to it from the main
thread, so all shared state sits behind one `threading.Condition`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal

import uvicorn

MODEL = "mistral-small-latest"
CHAT_PATH = "/v1/chat/completions"
STARTUP_DEADLINE = 10.0
DROP_GRACE = 1.0
GATE_POLL = 0.005

Scope = Mapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

StepKind = Literal["start", "send", "pause", "hang", "drop", "wait"]


# --- script ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing the fake does while answering, in order. Build with the functions below."""

    kind: StepKind
    data: bytes = b""
    seconds: float = 0.0
    gate: threading.Event | None = None


def send(data: bytes | str) -> Step:
    """Write these bytes as one ASGI body message (one HTTP chunk); a str is encoded as UTF-8."""
    return Step("send", data=data.encode() if isinstance(data, str) else data)


def event(obj: Mapping[str, Any] | str) -> Step:
    """Write one SSE event: `data: <compact JSON, non-ASCII kept raw | the string>` and a blank line."""
    payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return send(f"data: {payload}\n\n")


def pause(seconds: float) -> Step:
    """Sleep; cut short when the client disconnects or the fake stops."""
    return Step("pause", seconds=seconds)


def hang() -> Step:
    """Wait until the client disconnects (or the fake stops)."""
    return Step("hang")


def wait(gate: threading.Event) -> Step:
    """Wait until the test sets `gate` (or the client disconnects, or the fake stops): act mid-response,
    then let it go on."""
    return Step("wait", gate=gate)


def drop() -> Step:
    """Close the connection without finishing the response (no terminating chunk, or no response at all
    if the status line has not been sent yet - see `start`)."""
    return Step("drop")


def start() -> Step:
    """Send the status line and headers here. Without this step they are sent before the first step;
    with it, the steps before it run first: `Reply(steps=[pause(2), start(), ...])` delays the headers,
    `Reply(steps=[drop(), start()])` closes the connection without any response."""
    return Step("start")


@dataclass(frozen=True)
class Reply:
    """What the fake answers to one request."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    steps: Sequence[Step] = ()


def chunk(
    content: str | list[Any] | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    usage: Mapping[str, Any] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    """A `chat.completion.chunk` as Mistral streams it; `choices=False` gives `"choices": []`."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body: dict[str, Any] = {
        "id": "cmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}] if choices else [],
    }
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def completion(
    text_pieces: Sequence[str],
    *,
    finish_reason: str | None = "stop",
    usage: Mapping[str, Any] | Literal["auto"] | None = "auto",
    delay: float = 0.0,
    done: bool = True,
) -> Reply:
    """A streamed completion: a role chunk, one chunk per piece (with `pause(delay)` between them),
    a final chunk with `finish_reason` and usage, then `data: [DONE]` (unless `done=False`).

    usage: "auto" = 10 prompt tokens and one completion token per piece; None = no usage field."""
    if usage == "auto":
        usage = {
            "prompt_tokens": 10,
            "completion_tokens": len(text_pieces),
            "total_tokens": 10 + len(text_pieces),
        }
    steps: list[Step] = [event(chunk("", role="assistant"))]
    for number, piece in enumerate(text_pieces):
        if delay and number:
            steps.append(pause(delay))
        steps.append(event(chunk(piece)))
    steps.append(event(chunk("", finish_reason=finish_reason, usage=usage)))
    if done:
        steps.append(event("[DONE]"))
    return Reply(steps=steps)


def error_reply(
    status: int, body: Mapping[str, Any] | str | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    """A JSON error (Mistral's shape unless `body` is given), with a content-length."""
    if body is None:
        body = {
            "object": "error",
            "message": HTTPStatus(status).phrase,
            "type": "fake_error",
            "param": None,
            "code": str(status),
        }
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    all_headers = {"content-type": "application/json", "content-length": str(len(data))}
    all_headers.update({name.lower(): value for name, value in (headers or {}).items()})
    return Reply(status=status, headers=all_headers, steps=[send(data)])


def not_found() -> Reply:
    return error_reply(404, {"object": "error", "message": "Not Found", "type": "not_found"})


# --- recording ---------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the fake received. `closed_at` (time.monotonic) is set when the client disconnected
    (`disconnected_by_client`), the response finished, or the fake dropped the connection (`dropped`)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    started_at: float
    closed_at: float | None = None
    disconnected_by_client: bool = False
    dropped: bool = False


@dataclass(eq=False)
class _Exchange:
    """Loop-side state of one response in progress."""

    record: RecordedRequest
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)  # client gone, or the fake stopping
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # the connection is lost

    @property
    def client_gone(self) -> bool:
        return self.gone.is_set()

    ended: bool = False  # the fake is finishing or dropping: a disconnect now is not the client's doing


# --- server ------------------------------------------------------------------------------------------


class FakeUpstream:
    """The fake server. Use `fake_upstream()` to run one; `base_url` is set once it has started."""

    def __init__(self) -> None:
        self.base_url = ""
        self.default: Reply = completion(["Hello", " world"])
        self._cond = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._queue: collections.deque[Reply] = collections.deque()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active: set[_Exchange] = set()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    # test-side API (main thread)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, in arrival order (every path, 404s included)."""
        with self._cond:
            return list(self._requests)

    def script(self, *replies: Reply) -> None:
        """Queue replies: each chat completion request takes the next one, then `default` when empty."""
        with self._cond:
            self._queue.extend(replies)

    def wait_for_requests(self, n: int, timeout: float = 5) -> None:
        """Block until at least `n` requests arrived (their bodies fully read)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise AssertionError(f"expected {n} request(s) within {timeout}s, got {len(self._requests)}")

    def wait_closed(self, index: int, timeout: float = 5) -> RecordedRequest:
        """Block until request #`index` is closed (by either side) and return it."""

        def closed() -> bool:
            return len(self._requests) > index and self._requests[index].closed_at is not None

        with self._cond:
            if not self._cond.wait_for(closed, timeout):
                state = "not received" if len(self._requests) <= index else "still open"
                raise AssertionError(f"request #{index} is {state} after {timeout}s")
            return self._requests[index]

    def reset(self) -> None:
        """Forget recorded requests and queued replies, and restore the default reply."""
        with self._cond:
            self._requests.clear()
            self._queue.clear()
            self.default = completion(["Hello", " world"])

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            interface="asgi3",  # a bound method defeats uvicorn's ASGI2/3 guess
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-upstream"
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + STARTUP_DEADLINE
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.005)
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        """Interrupt hung and paused responses, then shut the server down."""
        with self._cond:
            self._stopping = True
        loop = self._loop
        if loop is not None:
            with suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._interrupt_all)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()

    # loop side (uvicorn thread)

    def _interrupt_all(self) -> None:
        for exchange in self._active:
            exchange.interrupt.set()

    def _close(self, record: RecordedRequest, *, by_client: bool = False, dropped: bool = False) -> None:
        with self._cond:
            if record.closed_at is None:
                record.closed_at = time.monotonic()
                record.disconnected_by_client = by_client
                record.dropped = dropped
                self._cond.notify_all()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self._loop = asyncio.get_running_loop()
        started_at = time.monotonic()
        body = bytearray()
        gone_early = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone_early = True
                break
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
            },
            body=bytes(body),
            json=_parse_json(bytes(body)),
            started_at=started_at,
        )
        with self._cond:
            self._requests.append(record)
            if record.method == "POST" and record.path == CHAT_PATH:
                reply = self._queue.popleft() if self._queue else self.default
            else:
                reply = not_found()
            self._cond.notify_all()
        if gone_early:
            self._close(record, by_client=True)
            return

        exchange = _Exchange(record)
        self._active.add(exchange)
        if self._stopping:
            exchange.interrupt.set()
        watcher = asyncio.create_task(self._watch(receive, exchange))
        try:
            await self._play(reply, exchange, send)
        finally:
            self._active.discard(exchange)
            watcher.cancel()
            with suppress(asyncio.CancelledError):
                await watcher

    async def _watch(self, receive: Receive, exchange: _Exchange) -> None:
        """Notice the client going away while the steps run."""
        while (await receive())["type"] != "http.disconnect":
            pass
        exchange.gone.set()
        exchange.interrupt.set()
        if not exchange.ended:
            self._close(exchange.record, by_client=True)

    async def _play(self, reply: Reply, exchange: _Exchange, send: Send) -> None:
        head_sent = False

        async def send_head() -> None:
            nonlocal head_sent
            if not head_sent:
                head_sent = True
                headers = [
                    (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
                ]
                await send({"type": "http.response.start", "status": reply.status, "headers": headers})

        if not any(step.kind == "start" for step in reply.steps):
            await send_head()
        for step in reply.steps:
            if exchange.interrupt.is_set():  # the client left or the fake is stopping
                break
            if step.kind == "start":
                await send_head()
            elif step.kind == "send":
                await send_head()
                await send({"type": "http.response.body", "body": step.data, "more_body": True})
            elif step.kind == "pause":
                with suppress(TimeoutError):
                    await asyncio.wait_for(exchange.interrupt.wait(), step.seconds)
            elif step.kind == "hang":
                await exchange.interrupt.wait()
            elif step.kind == "wait":
                assert step.gate is not None
                while not step.gate.is_set() and not exchange.interrupt.is_set():
                    with suppress(TimeoutError):  # a thread's Event: looked at every GATE_POLL seconds
                        await asyncio.wait_for(exchange.interrupt.wait(), GATE_POLL)
            elif step.kind == "drop":
                exchange.ended = True
                await self._drop(exchange, send)
                return
        if exchange.client_gone:
            return
        exchange.ended = True
        await send_head()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._close(exchange.record)

    async def _drop(self, exchange: _Exchange, send: Send) -> None:
        """Close the socket mid-response. uvicorn's send() is a bound method of the request cycle, which
        holds the transport: closing it flushes what was written and ends the connection without the
        terminating chunk (or without any response). Fallback: raise after the response started, which
        uvicorn answers by closing the transport (and logging the error)."""
        self._close(exchange.record, dropped=True)
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if not callable(getattr(transport, "close", None)):  # uvloop's transports are not asyncio's classes
            raise _ConnectionDropped("scripted drop()")
        transport.close()  # type: ignore[union-attr]
        # Let uvicorn see the connection lost, so it does not complain about the unfinished response.
        with suppress(TimeoutError):
            await asyncio.wait_for(exchange.gone.wait(), DROP_GRACE)


class _ConnectionDropped(Exception):
    pass


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


@contextmanager
def fake_upstream() -> Iterator[FakeUpstream]:
    """Run a `FakeUpstream` on 127.0.0.1 (a free port) until the block ends."""
    upstream = FakeUpstream()
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
