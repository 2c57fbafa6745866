"""A streaming client for any Mistral-compatible chat completions API.

It knows nothing of artists or readers: messages in, `TextDelta`s and one `Finish` out, or an
`UpstreamError` with the contract's code. The event stream is parsed by httpx-sse, which follows the WHATWG
rules (CR, LF and CRLF endings only; `aiter_lines()` would also split on U+2028/U+2029/U+0085, which are
legal inside JSON strings), over httpx's incremental UTF-8 decoding (an event may be split at any byte).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import httpx
from httpx_sse import EventSource, ServerSentEvent

from app.llm import errors
from app.llm.errors import UpstreamError
from app.llm.transport import TRANSPORT_ERRORS, transport_error

# After finish_reason, OpenAI-style servers may still send a `choices: []` chunk with usage; wait a little.
USAGE_GRACE_SECONDS = 2.0
T = TypeVar("T")
FINISH_REASONS = {"stop": "stop", "length": "length", "model_length": "length"}


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None
    model: str
    max_tokens: int
    temperature: float
    connect_timeout: float
    idle_timeout: float
    total_timeout: float
    max_output_chars: int


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" or "length"
    usage: Usage | None


Chunk = TextDelta | Finish
# Chat messages as sent: `role` and `content`, and `prefix: true` on a continued assistant turn (Mistral).
Messages = list[dict[str, Any]]


class ChatModel(Protocol):
    """What a generation needs of a writer: its model name, and one streamed call at a time. `LLMClient`
    is the real one; tests script their own."""

    @property
    def model(self) -> str: ...

    def stream(self, messages: Messages, *, time_left: float | None = None) -> AsyncGenerator[Chunk, None]:
        """One call; `time_left`: what remains of the whole portrait's time (all its calls together)."""
        ...


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is true, float("²") an error
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _status_error(response: httpx.Response) -> UpstreamError:
    status = response.status_code
    if status in (401, 403):
        return errors.upstream_auth(status)
    if status == 429:
        return errors.upstream_rate_limited(parse_retry_after(response.headers.get("retry-after")))
    if 400 <= status < 500:
        # Our request was wrong: the upstream is healthy, so the breaker records nothing.
        return errors.upstream_error(
            f"The writing service rejected the request (HTTP {status}).", counts=False
        )
    return errors.upstream_error(f"The writing service failed (HTTP {status}).")


def _valid_unicode(text: str) -> str:
    """JSON may carry a lone surrogate (`"\\ud800"`): no UTF-8 can encode it, so it becomes U+FFFD here,
    once, before it reaches readers or the database."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def _text_of(content: Any) -> str:
    """`content` is null, a string, or a list of typed parts; only `text` parts reach readers (never
    `thinking`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _valid_unicode(content)
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                pieces.append(part["text"])
        return _valid_unicode("".join(pieces))
    raise errors.upstream_bad_response("The writing service sent content of an unknown shape.")


def _usage_of(chunk: dict[str, Any]) -> Usage | None:
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return Usage(
        prompt_tokens=prompt if isinstance(prompt, int) else None,
        completion_tokens=completion if isinstance(completion, int) else None,
    )


def _decode(sse: ServerSentEvent) -> dict[str, Any]:
    try:
        chunk = json.loads(sse.data)
    except json.JSONDecodeError:
        raise errors.upstream_bad_response("The writing service sent data that is not JSON.") from None
    if not isinstance(chunk, dict):
        raise errors.upstream_bad_response("The writing service sent a chunk that is not an object.")
    if "error" in chunk:
        raise errors.upstream_error("The writing service reported an error while writing.")
    return chunk


async def _next_with_data(events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent | None:
    """The next event that has data. httpx-sse also dispatches a block without data once an `id:`, `event:`
    or `retry:` field was seen (so a `: ping` after an `id:` became an empty event); WHATWG discards it."""
    async for sse in events:
        if sse.data:
            return sse
    return None


class _Watchdog:
    """Bounds every wait of one stream: each by the idle timeout, all of them by the total timeout.

    One timer per stream, moved forward lazily, instead of an `asyncio.timeout` per chunk (a timer
    scheduled and cancelled for every token was about a tenth of the read path's CPU). The timer only
    cancels the task while it is suspended in `wait`, where the cancellation lands and becomes an
    `upstream_timeout`; time spent in the consumer's code, between waits, never counts.
    """

    def __init__(self, idle: float, total: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._idle = idle
        self._deadline = self._loop.time() + total
        self._task: asyncio.Task[Any] | None = None
        self._since: float | None = None  # when the current wait began (None: not waiting)
        self._expired: UpstreamError | None = None
        self._timer = self._loop.call_at(self._deadline, self._check)

    def close(self) -> None:
        self._timer.cancel()

    def _due(self) -> float:
        since = self._since if self._since is not None else self._loop.time()
        return min(since + self._idle, self._deadline)

    def _check(self) -> None:
        now, due = self._loop.time(), self._due()
        if self._since is None or self._task is None:
            # not waiting: nothing to interrupt; past the deadline, the next wait fails at once
            if now < self._deadline:
                self._timer = self._loop.call_at(due, self._check)
            return
        if now < due:
            self._timer = self._loop.call_at(due, self._check)
            return
        if due >= self._deadline:
            self._expired = errors.upstream_timeout("The portrait took longer than allowed.", resumable=False)
        else:
            self._expired = errors.upstream_timeout("The writing service went silent.")
        self._task.cancel()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        if self._loop.time() >= self._deadline:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited: close it, or Python warns about it
            raise errors.upstream_timeout("The portrait took longer than allowed.", resumable=False)
        self._task = asyncio.current_task()
        # cancellations already requested (and still pending) are not ours to turn into a timeout
        cancelling = self._task.cancelling() if self._task is not None else 0
        self._since = self._loop.time()
        if self._timer.when() > self._since + self._idle:
            # the timer is set for the deadline (first wait) or a later check: bring it forward
            self._timer.cancel()
            self._timer = self._loop.call_at(self._due(), self._check)
        try:
            return await awaitable
        except asyncio.CancelledError:
            expired, self._expired = self._expired, None
            if expired is not None and self._task is not None and self._task.uncancel() <= cancelling:
                raise expired from None
            raise
        finally:
            self._since = None


class LLMClient:
    def __init__(self, http: httpx.AsyncClient, config: UpstreamConfig) -> None:
        self.http = http
        self.config = config

    @property
    def model(self) -> str:
        return self.config.model

    def request_body(self, messages: Messages) -> dict[str, Any]:
        # Only fields every target accepts: Mistral answers 422 to unknown ones such as `stream_options`.
        return {
            "model": self.config.model,
            "messages": messages,
            "stream": True,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        }

    async def stream(
        self, messages: Messages, *, time_left: float | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Yield the text as it arrives, then one `Finish`; raise `UpstreamError` on any failure.

        Every wait is bounded: connecting by the connect timeout, each chunk (the first included) by the
        idle timeout, all of it by the total timeout (`_Watchdog`). Waits are bounded one await at a
        time, never across a `yield`, so a deadline never fires inside the consumer's code.
        """
        config = self.config
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        timeout = httpx.Timeout(
            connect=config.connect_timeout, read=config.idle_timeout, write=config.idle_timeout, pool=None
        )

        async with AsyncExitStack() as stack:
            total = config.total_timeout if time_left is None else min(config.total_timeout, time_left)
            watchdog = _Watchdog(config.idle_timeout, total)
            stack.callback(watchdog.close)
            try:
                response = await watchdog.wait(
                    stack.enter_async_context(
                        self.http.stream(
                            "POST",
                            f"{config.base_url.rstrip('/')}/chat/completions",
                            json=self.request_body(messages),
                            headers=headers,
                            timeout=timeout,
                        )
                    ),
                )
                if response.status_code != 200:
                    raise _status_error(response)
                content_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if content_type != "text/event-stream":
                    raise errors.upstream_bad_response(
                        "The writing service did not answer with an event stream."
                    )
                events = EventSource(response).aiter_sse()
                stack.push_async_callback(events.aclose)
                async for chunk in self._chunks(events, watchdog):
                    yield chunk
            except TRANSPORT_ERRORS as exc:
                # Timed out; or refused, reset, closed mid-stream
                raise transport_error(exc) from None

    async def _chunks(
        self, events: AsyncIterator[ServerSentEvent], watchdog: _Watchdog
    ) -> AsyncIterator[Chunk]:
        written = 0
        finish: str | None = None
        usage: Usage | None = None
        while True:
            if finish is None:
                sse = await watchdog.wait(_next_with_data(events))
            else:
                sse = await self._usage_wait(events)
            if sse is None or sse.data == "[DONE]":
                break
            try:
                chunk = _decode(sse)
            except UpstreamError:
                if finish is not None:
                    break  # the text is complete; a late malformed chunk cannot take it back
                raise
            usage = _usage_of(chunk) or usage
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                text = _text_of(delta.get("content") if isinstance(delta, dict) else None)
                if text and finish is None:
                    written += len(text)
                    if written > self.config.max_output_chars:
                        raise errors.upstream_bad_response("The writing service sent more text than allowed.")
                    yield TextDelta(text)
                reason = choice.get("finish_reason")
                if reason is not None and finish is None:
                    finish = self._finish_reason(reason)
        if finish is None:
            if sse is None:
                raise errors.upstream_connection("The writing service closed the stream before the end.")
            raise errors.upstream_bad_response(
                "The writing service ended the stream without a finish reason."
            )
        yield Finish(finish, usage)

    @staticmethod
    def _finish_reason(reason: Any) -> str:
        if reason in FINISH_REASONS:
            return FINISH_REASONS[reason]
        if reason == "error":
            raise errors.upstream_error("The writing service stopped with an error.")
        raise errors.upstream_error(
            f"The writing service stopped for an unexpected reason ({str(reason)[:40]})."
        )

    async def _usage_wait(self, events: AsyncIterator[ServerSentEvent]) -> ServerSentEvent | None:
        """After the finish reason, the text is complete: anything but a prompt usage chunk ends the wait."""
        try:
            async with asyncio.timeout(min(USAGE_GRACE_SECONDS, self.config.idle_timeout)):
                return await _next_with_data(events)
        except (TimeoutError, *TRANSPORT_ERRORS):
            return None
