"""`LLMClient` against the scripted fake upstream, over real HTTP on 127.0.0.1.

Every case asserts the exact outcome: the texts yielded and the `Finish`, or the `UpstreamError` code (and
`retry_after` where it matters). Error messages never carry the key, the base URL or a traceback.
No pytest-asyncio: each test drives its coroutine with `asyncio.run`, the httpx client created inside it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import threading
import time
import warnings
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from app.llm.client import Chunk, Finish, LLMClient, TextDelta, UpstreamConfig, Usage, parse_retry_after
from app.llm.errors import UpstreamError
from app.llm.transport import upstream_http_client
from tests.fakes.upstream import (
    FakeUpstream,
    Reply,
    Step,
    chunk,
    completion,
    drop,
    error_reply,
    event,
    hang,
    pause,
    send,
    start,
)

pytestmark = pytest.mark.timeout(20)

KEY = "sk-test-0123456789abcdef"
MODEL = "mistral-small-latest"
MESSAGES = [
    {"role": "system", "content": "You write portraits of music artists in markdown."},
    {"role": "user", "content": "Portrait de Séraphine"},
]
USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
IDLE = 0.5
# A timeout must fire near its bound, not at some later, unrelated one.
PROMPTLY = 1.5


def http_client() -> httpx.AsyncClient:
    """The client the app uses (httpx over aiohttp), sized for a test."""
    return upstream_http_client(16, 16, pool_timeout=5)


def make_config(base_url: str, **overrides: Any) -> UpstreamConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": KEY,
        "model": MODEL,
        "max_tokens": 512,
        "temperature": 0.7,
        "connect_timeout": 1.0,
        "idle_timeout": IDLE,
        "total_timeout": 5.0,
        "max_output_chars": 10_000,
    }
    values.update(overrides)
    return UpstreamConfig(**values)


@dataclass
class Outcome:
    texts: list[str]
    finish: Finish | None
    error: UpstreamError | None
    elapsed: float
    base_url: str


async def consume(config: UpstreamConfig) -> Outcome:
    texts: list[str] = []
    finish: Finish | None = None
    error: UpstreamError | None = None
    started = time.monotonic()
    async with http_client() as http:
        try:
            async for item in LLMClient(http, config).stream(MESSAGES):
                assert finish is None, f"{item!r} came after the Finish"
                if isinstance(item, TextDelta):
                    texts.append(item.text)
                else:
                    assert isinstance(item, Finish)
                    finish = item
        except UpstreamError as exc:
            error = exc
    return Outcome(texts, finish, error, time.monotonic() - started, config.base_url)


def run(upstream: FakeUpstream, *replies: Reply, **overrides: Any) -> Outcome:
    upstream.script(*replies)
    return asyncio.run(consume(make_config(upstream.base_url, **overrides)))


def finished(outcome: Outcome) -> tuple[list[str], Finish]:
    assert outcome.error is None, f"unexpected {outcome.error!r}"
    assert outcome.finish is not None
    return outcome.texts, outcome.finish


def failed(outcome: Outcome, code: str) -> UpstreamError:
    error = outcome.error
    assert outcome.finish is None
    assert error is not None, f"expected {code}, got texts {outcome.texts!r}"
    assert error.code == code, f"expected {code}, got {error!r}"
    assert str(error) == error.message
    for secret in (KEY, outcome.base_url, outcome.base_url.split("//")[-1].split("/")[0], "Traceback"):
        assert secret not in error.message
    return error


def sse(obj: Mapping[str, Any] | str, eol: str = "\n") -> str:
    payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}{eol}{eol}"


def stream_of(*steps: Step) -> Reply:
    return Reply(steps=steps)


ROLE = event(chunk("", role="assistant"))
STOP = event(chunk("", finish_reason="stop", usage=USAGE))
DONE = event("[DONE]")


# --- the request ------------------------------------------------------------------------------------------


def test_request_when_streaming_then_posts_exactly_the_portable_fields_with_the_bearer_key(
    upstream: FakeUpstream,
) -> None:
    finished(run(upstream, completion(["Hi"])))

    request = upstream.wait_closed(0)
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json == {
        "model": MODEL,
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 512,
        "temperature": 0.7,
    }
    assert "stream_options" not in request.json
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"


def test_request_when_api_key_is_none_then_sends_no_authorization(upstream: FakeUpstream) -> None:
    finished(run(upstream, completion(["Hi"]), api_key=None))

    assert "authorization" not in upstream.wait_closed(0).headers


def test_request_when_base_url_ends_with_a_slash_then_the_path_is_the_same(upstream: FakeUpstream) -> None:
    upstream.script(completion(["Hi"]))
    outcome = asyncio.run(consume(make_config(upstream.base_url + "/")))

    assert finished(outcome) == (["Hi"], Finish("stop", Usage(10, 1)))
    assert upstream.wait_closed(0).path == "/v1/chat/completions"


# --- WHATWG event stream parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_sse_when_lines_end_with_lf_crlf_or_cr_then_every_event_is_read(
    upstream: FakeUpstream, eol: str
) -> None:
    body = "".join(
        sse(obj, eol)
        for obj in (
            chunk("", role="assistant"),
            chunk("Bon"),
            chunk("jour"),
            chunk("", finish_reason="stop", usage=USAGE),
            "[DONE]",
        )
    )

    outcome = run(upstream, stream_of(send(body)))

    assert finished(outcome) == (["Bon", "jour"], Finish("stop", Usage(12, 3)))


def _events_bytes(eol: str = "\n") -> bytes:
    return "".join(
        sse(obj, eol)
        for obj in (
            chunk("", role="assistant"),
            chunk("Édith 🎨 "),
            chunk("chante «Milord»"),
            chunk("", finish_reason="stop", usage=USAGE),
            "[DONE]",
        )
    ).encode()


def test_sse_when_every_byte_is_sent_on_its_own_then_the_text_is_intact(upstream: FakeUpstream) -> None:
    raw = _events_bytes()

    outcome = run(upstream, stream_of(*(send(raw[i : i + 1]) for i in range(len(raw)))))

    assert finished(outcome) == (["Édith 🎨 ", "chante «Milord»"], Finish("stop", Usage(12, 3)))


def test_sse_when_split_inside_utf8_chars_and_crlf_then_the_text_is_intact(upstream: FakeUpstream) -> None:
    raw = _events_bytes("\r\n")
    emoji, e_acute = raw.index("🎨".encode()), raw.index("É".encode())
    first_crlf = raw.index(b"\r\n")
    cuts = sorted({e_acute + 1, emoji + 1, emoji + 3, first_crlf + 1, raw.index(b"data", 10) + 2})
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    steps: list[Step] = []
    for piece in pieces:
        steps += [send(piece), pause(0.02)]  # separate reads, not coalesced

    outcome = run(upstream, stream_of(*steps))

    assert finished(outcome) == (["Édith 🎨 ", "chante «Milord»"], Finish("stop", Usage(12, 3)))


def test_sse_when_comment_lines_and_other_fields_come_then_they_are_ignored(upstream: FakeUpstream) -> None:
    outcome = run(
        upstream,
        stream_of(
            send(": ping\n\n"),
            ROLE,
            send(":\n: keep-alive\n"),
            send(f"event: message\nid: 1\nretry: 100\n: inline comment\n{sse(chunk('a'))}"),
            send(": ping\n\n"),
            event(chunk("b")),
            STOP,
            DONE,
        ),
    )

    assert finished(outcome) == (["a", "b"], Finish("stop", Usage(12, 3)))


def test_sse_when_a_block_has_fields_but_no_data_then_no_event_is_dispatched(upstream: FakeUpstream) -> None:
    # WHATWG discards a block without data; httpx-sse dispatches it once an id/event/retry field was seen.
    outcome = run(
        upstream,
        stream_of(
            send(f"id: 1\n{sse(chunk('', role='assistant'))}"),
            send(": ping\n\n"),
            send("event: ping\n\n"),
            send("retry: 500\n\n"),
            send("id: 2\n\n"),
            event(chunk("a")),
            send("\n\n\n"),
            STOP,
            DONE,
        ),
    )

    assert finished(outcome) == (["a"], Finish("stop", Usage(12, 3)))


def test_sse_when_data_spans_two_lines_then_they_join_with_a_newline(upstream: FakeUpstream) -> None:
    first = '{"choices":'
    rest = json.dumps([{"index": 0, "delta": {"content": "joined"}, "finish_reason": None}]) + "}"

    outcome = run(upstream, stream_of(ROLE, send(f"data: {first}\ndata: {rest}\n\n"), STOP, DONE))

    assert finished(outcome) == (["joined"], Finish("stop", Usage(12, 3)))


def test_sse_when_content_holds_unicode_line_separators_then_it_arrives_intact(
    upstream: FakeUpstream,
) -> None:
    text = "one\u2028two\u2029three\u0085four\x0bfive\x0csix\x1cseven"

    outcome = run(upstream, completion([text, " end"], usage=None))

    assert finished(outcome) == ([text, " end"], Finish("stop", None))


def test_sse_when_done_is_missing_after_finish_reason_then_the_stream_finishes(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, completion(["Hel", "lo"], done=False))

    assert finished(outcome) == (["Hel", "lo"], Finish("stop", Usage(10, 2)))


def test_sse_when_the_connection_drops_after_finish_reason_then_the_stream_finishes(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hi")), STOP, pause(0.05), drop()))

    assert finished(outcome) == (["Hi"], Finish("stop", Usage(12, 3)))


def test_sse_when_the_upstream_stays_open_after_finish_reason_then_finish_comes_within_idle(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hi")), STOP, hang()))

    assert finished(outcome) == (["Hi"], Finish("stop", Usage(12, 3)))
    assert outcome.elapsed < PROMPTLY


@pytest.mark.parametrize(
    "tail",
    [
        'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n',
        'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}',
        'data: {"choices":[{"ind',
    ],
    ids=["no-blank-line", "no-newline", "cut-json"],
)
def test_sse_when_eof_comes_mid_event_before_finish_then_upstream_connection(
    upstream: FakeUpstream, tail: str
) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hel")), send(tail)))

    failed(outcome, "upstream_connection")
    assert outcome.texts == ["Hel"]


def test_sse_when_the_stream_ends_cleanly_without_finish_reason_then_upstream_connection(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hel"))))

    failed(outcome, "upstream_connection")
    assert outcome.texts == ["Hel"]


def test_sse_when_done_comes_without_finish_reason_then_upstream_bad_response(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hel")), DONE))

    failed(outcome, "upstream_bad_response")
    assert outcome.texts == ["Hel"]


# --- chunks -------------------------------------------------------------------------------------------------


def test_chunks_when_role_only_and_empty_deltas_come_then_nothing_is_yielded_for_them(
    upstream: FakeUpstream,
) -> None:
    outcome = run(
        upstream,
        stream_of(
            event(chunk(None, role="assistant")),
            event(chunk("", role="assistant")),
            event(chunk(None)),
            event(chunk("")),
            event({"choices": [{"index": 0, "delta": {}, "finish_reason": None}]}),
            event({"choices": [{"index": 0, "finish_reason": None}]}),
            event(chunk(choices=False)),
            event(chunk("x")),
            STOP,
            DONE,
        ),
    )

    assert finished(outcome) == (["x"], Finish("stop", Usage(12, 3)))


def test_chunks_when_content_is_null_then_nothing_is_yielded_for_it(upstream: FakeUpstream) -> None:
    null = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]}

    outcome = run(upstream, stream_of(event(null), event(chunk("a")), event(null), STOP, DONE))

    assert finished(outcome) == (["a"], Finish("stop", Usage(12, 3)))


def test_chunks_when_content_is_a_list_of_parts_then_only_text_parts_reach_output(
    upstream: FakeUpstream,
) -> None:
    thinking = {"type": "thinking", "thinking": [{"type": "text", "text": "SECRET reasoning"}]}

    outcome = run(
        upstream,
        stream_of(
            ROLE,
            event(chunk([thinking])),
            event(chunk([thinking, {"type": "text", "text": "Visible"}])),
            event(chunk([{"type": "text", "text": " one"}, {"type": "text", "text": " two"}])),
            event(chunk([])),
            STOP,
            DONE,
        ),
    )

    texts, finish = finished(outcome)
    assert texts == ["Visible", " one two"]
    assert finish == Finish("stop", Usage(12, 3))
    assert not any("SECRET" in text for text in texts)


@pytest.mark.parametrize(
    ("reason", "expected"), [("stop", "stop"), ("length", "length"), ("model_length", "length")]
)
def test_chunks_when_finish_reason_ends_the_text_then_finish_has_its_reason(
    upstream: FakeUpstream, reason: str, expected: str
) -> None:
    outcome = run(upstream, completion(["a", "b"], finish_reason=reason))

    assert finished(outcome) == (["a", "b"], Finish(expected, Usage(10, 2)))


@pytest.mark.parametrize("reason", ["error", "content_filter", "tool_calls"])
def test_chunks_when_finish_reason_is_error_or_unknown_then_upstream_error(
    upstream: FakeUpstream, reason: str
) -> None:
    outcome = run(upstream, completion(["a", "b"], finish_reason=reason))

    error = failed(outcome, "upstream_error")
    assert error.counts is True
    assert outcome.texts == ["a", "b"]


def test_chunks_when_finish_reason_and_text_share_a_chunk_then_both_count(upstream: FakeUpstream) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("all", finish_reason="stop", usage=USAGE)), DONE))

    assert finished(outcome) == (["all"], Finish("stop", Usage(12, 3)))


def test_chunks_when_usage_comes_after_finish_in_an_empty_choices_chunk_then_finish_has_it(
    upstream: FakeUpstream,
) -> None:
    outcome = run(
        upstream,
        stream_of(
            ROLE,
            event(chunk("a")),
            event(chunk("", finish_reason="stop")),
            event(chunk(choices=False, usage=USAGE)),
            DONE,
        ),
    )

    assert finished(outcome) == (["a"], Finish("stop", Usage(12, 3)))


def test_chunks_when_usage_comes_after_finish_without_done_then_finish_has_it(
    upstream: FakeUpstream,
) -> None:
    outcome = run(
        upstream,
        stream_of(
            ROLE,
            event(chunk("a")),
            event(chunk("", finish_reason="length")),
            event(chunk(choices=False, usage=USAGE)),
        ),
    )

    assert finished(outcome) == (["a"], Finish("length", Usage(12, 3)))


def test_chunks_when_no_usage_is_sent_then_finish_usage_is_none(upstream: FakeUpstream) -> None:
    outcome = run(upstream, completion(["a", "b"], usage=None))

    assert finished(outcome) == (["a", "b"], Finish("stop", None))


@pytest.mark.parametrize("content", [{"type": "text", "text": "a dict"}, 42, True])
def test_chunks_when_content_has_an_unknown_shape_then_upstream_bad_response(
    upstream: FakeUpstream, content: Any
) -> None:
    bad = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}

    outcome = run(upstream, stream_of(ROLE, event(chunk("a")), event(bad), STOP, DONE))

    failed(outcome, "upstream_bad_response")
    assert outcome.texts == ["a"]


def test_chunks_when_an_error_object_comes_mid_stream_then_upstream_error(upstream: FakeUpstream) -> None:
    outcome = run(
        upstream,
        stream_of(
            ROLE,
            event(chunk("a")),
            event({"error": {"message": "internal failure", "type": "internal_error", "code": 500}}),
            event(chunk("b")),
            STOP,
            DONE,
        ),
    )

    error = failed(outcome, "upstream_error")
    assert error.counts is True
    assert outcome.texts == ["a"]


@pytest.mark.parametrize("data", ["not json", "{'single': 'quotes'}", "[1, 2]", '"a string"', "null", "{"])
def test_chunks_when_data_is_not_a_json_object_then_upstream_bad_response(
    upstream: FakeUpstream, data: str
) -> None:
    outcome = run(
        upstream, stream_of(ROLE, event(chunk("a")), send(f"data: {data}\n\n"), event(chunk("b")), STOP)
    )

    failed(outcome, "upstream_bad_response")
    assert outcome.texts == ["a"]


# --- HTTP status ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_http_when_credentials_are_refused_then_upstream_auth_that_counts(
    upstream: FakeUpstream, status: int
) -> None:
    error = failed(run(upstream, error_reply(status)), "upstream_auth")

    assert error.counts is True
    assert error.retryable is False


def test_http_when_429_with_retry_after_seconds_then_rate_limited_with_that_delay(
    upstream: FakeUpstream,
) -> None:
    error = failed(run(upstream, error_reply(429, headers={"Retry-After": "7"})), "upstream_rate_limited")

    assert error.retry_after == 7
    assert error.counts is True


def test_http_when_429_with_an_http_date_then_rate_limited_with_the_seconds_until_it(
    upstream: FakeUpstream,
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=10), usegmt=True)

    error = failed(run(upstream, error_reply(429, headers={"Retry-After": when})), "upstream_rate_limited")

    assert error.retry_after is not None
    assert 8 <= error.retry_after <= 12


def test_http_when_429_without_retry_after_then_rate_limited_without_delay(upstream: FakeUpstream) -> None:
    error = failed(run(upstream, error_reply(429)), "upstream_rate_limited")

    assert error.retry_after is None


@pytest.mark.parametrize("status", [400, 404, 422])
def test_http_when_our_request_is_rejected_then_upstream_error_that_does_not_count(
    upstream: FakeUpstream, status: int
) -> None:
    error = failed(run(upstream, error_reply(status)), "upstream_error")

    assert error.counts is False


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_when_the_upstream_fails_then_upstream_error_that_counts(
    upstream: FakeUpstream, status: int
) -> None:
    error = failed(run(upstream, error_reply(status)), "upstream_error")

    assert error.counts is True
    assert error.retryable is True


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_http_when_200_is_not_an_event_stream_then_upstream_bad_response(
    upstream: FakeUpstream, content_type: str | None
) -> None:
    body = json.dumps({"choices": [{"index": 0, "message": {"content": "whole"}, "finish_reason": "stop"}]})
    headers = {"content-type": content_type} if content_type else {}
    reply = Reply(headers=headers, steps=[send(body)])

    failed(run(upstream, reply), "upstream_bad_response")


# --- connection and timeouts ------------------------------------------------------------------------------


def _closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_connection_when_refused_then_upstream_connection() -> None:
    config = make_config(f"http://127.0.0.1:{_closed_port()}/v1")

    outcome = asyncio.run(consume(config))

    failed(outcome, "upstream_connection")
    assert outcome.texts == []


def test_connection_when_dropped_mid_stream_then_upstream_connection(upstream: FakeUpstream) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("Hel")), pause(0.05), drop()))

    failed(outcome, "upstream_connection")
    assert outcome.texts == ["Hel"]


def test_connection_when_dropped_before_any_response_then_upstream_connection(
    upstream: FakeUpstream,
) -> None:
    failed(run(upstream, stream_of(drop(), start())), "upstream_connection")


@contextmanager
def _answers_with(reply: bytes) -> Iterator[int]:
    """A loopback port whose server reads the request, answers `reply` (not HTTP) and hangs up."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port: int = server.getsockname()[1]

    def answer() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        thread.join(timeout=5)
        server.close()


def test_connection_when_the_server_does_not_speak_http_then_upstream_connection() -> None:
    with _answers_with(b"SSH-2.0-OpenSSH_9.2\r\nProtocol mismatch.\r\n") as port:
        outcome = asyncio.run(consume(make_config(f"http://127.0.0.1:{port}/v1")))
    failed(outcome, "upstream_connection")


@contextmanager
def _full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops further SYNs, so connecting hangs."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("this kernel accepts connections past a full backlog: no connect timeout on loopback")
        finally:
            probe.close()
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def test_connection_when_connecting_takes_longer_than_connect_timeout_then_upstream_timeout() -> None:
    with _full_backlog() as port:
        config = make_config(f"http://127.0.0.1:{port}/v1", connect_timeout=0.3, idle_timeout=3.0)
        outcome = asyncio.run(consume(config))

    failed(outcome, "upstream_timeout")
    assert outcome.elapsed < PROMPTLY


def test_timeout_when_headers_come_later_than_idle_then_upstream_timeout(upstream: FakeUpstream) -> None:
    outcome = run(upstream, stream_of(pause(2), start(), ROLE, event(chunk("late")), STOP, DONE))

    failed(outcome, "upstream_timeout")
    assert outcome.texts == []
    assert outcome.elapsed < PROMPTLY
    assert upstream.wait_closed(0, timeout=1).disconnected_by_client


def test_timeout_when_headers_come_but_no_event_then_upstream_timeout(upstream: FakeUpstream) -> None:
    outcome = run(upstream, stream_of(start(), hang()))

    failed(outcome, "upstream_timeout")
    assert outcome.texts == []
    assert outcome.elapsed < PROMPTLY
    assert upstream.wait_closed(0, timeout=1).disconnected_by_client


def test_timeout_when_silent_mid_stream_past_idle_then_upstream_timeout(upstream: FakeUpstream) -> None:
    outcome = run(upstream, stream_of(ROLE, event(chunk("a")), pause(3), event(chunk("b")), STOP, DONE))

    failed(outcome, "upstream_timeout")
    assert outcome.texts == ["a"]
    assert outcome.elapsed < PROMPTLY
    assert upstream.wait_closed(0, timeout=1).disconnected_by_client


@pytest.mark.parametrize("field", ["", "id: 1\n"], ids=["plain", "after-an-id"])
def test_timeout_when_only_ping_comments_come_then_they_do_not_reset_idle(
    upstream: FakeUpstream, field: str
) -> None:
    pings: list[Step] = []
    for _ in range(30):
        pings += [send(": ping\n\n"), pause(0.1)]

    outcome = run(upstream, stream_of(ROLE, send(field + sse(chunk("a"))), *pings, event(chunk("b")), STOP))

    failed(outcome, "upstream_timeout")
    assert outcome.texts == ["a"]
    assert outcome.elapsed < PROMPTLY


def test_timeout_when_tokens_keep_flowing_past_the_total_timeout_then_upstream_timeout(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, completion(["t"] * 40, delay=0.1), idle_timeout=1.0, total_timeout=0.6)

    failed(outcome, "upstream_timeout")
    assert 3 <= len(outcome.texts) < 10
    assert outcome.elapsed < PROMPTLY


def test_timeout_when_the_consumer_is_slow_then_its_own_time_does_not_count_as_silence(
    upstream: FakeUpstream,
) -> None:
    upstream.script(completion(["a", "b", "c"]))

    async def main() -> list[Chunk]:
        async with http_client() as http:
            items = []
            config = make_config(upstream.base_url, idle_timeout=0.1)
            async for item in LLMClient(http, config).stream(MESSAGES):
                items.append(item)
                await asyncio.sleep(0.25)  # longer than the idle timeout, in the consumer's own code
            return items

    items = asyncio.run(main())

    assert [item.text for item in items if isinstance(item, TextDelta)] == ["a", "b", "c"]
    assert isinstance(items[-1], Finish)


def test_timeout_when_the_deadline_passes_in_the_consumer_then_timeout_and_no_stray_coroutine(
    upstream: FakeUpstream,
) -> None:
    upstream.script(completion(["t"] * 10, delay=0.05))

    async def main() -> str | None:
        async with http_client() as http:
            client = LLMClient(http, make_config(upstream.base_url, idle_timeout=0.5, total_timeout=0.4))
            try:
                async for _ in client.stream(MESSAGES):
                    await asyncio.sleep(0.3)  # the consumer's own time carries it past the deadline
            except UpstreamError as exc:
                return (
                    exc.code
                )  # not the exception: its traceback would keep the frames (and any coroutine) alive
            return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = asyncio.run(main())
        gc.collect()
    assert code == "upstream_timeout"
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_timeout_when_the_task_once_swallowed_a_cancel_then_a_timeout_is_still_a_timeout(
    upstream: FakeUpstream,
) -> None:
    upstream.script(completion(["t"] * 40, delay=0.1))  # steady text: only the total timeout can end it

    async def main() -> str | None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            await asyncio.sleep(0)  # the pending cancel lands here
        except asyncio.CancelledError:
            pass  # caught without uncancel(): the task's cancelling() count stays 1
        assert task.cancelling() == 1
        async with http_client() as http:
            try:
                config = make_config(upstream.base_url, idle_timeout=1.0, total_timeout=0.4)
                async for _ in LLMClient(http, config).stream(MESSAGES):
                    pass
            except UpstreamError as exc:
                return exc.code
        return None

    assert asyncio.run(main()) == "upstream_timeout"


def test_timeout_when_the_task_is_cancelled_from_outside_then_it_stays_a_cancellation(
    upstream: FakeUpstream,
) -> None:
    upstream.script(stream_of(ROLE, event(chunk("first")), hang()))

    async def main() -> BaseException | None:
        async with http_client() as http:
            first_text = asyncio.Event()

            async def consume_all() -> None:
                config = make_config(upstream.base_url, idle_timeout=10.0)
                async for _ in LLMClient(http, config).stream(MESSAGES):
                    first_text.set()  # then the stream hangs: the consumer waits in the watchdog for more

            task = asyncio.create_task(consume_all())
            await asyncio.wait_for(first_text.wait(), 5)
            await asyncio.sleep(0)  # let it go back to waiting for the next chunk
            task.cancel()
            try:
                await task
            except BaseException as exc:  # what it raised is the point
                return exc
            return None

    assert isinstance(asyncio.run(main()), asyncio.CancelledError)


def test_limit_when_output_exceeds_max_output_chars_then_upstream_bad_response(
    upstream: FakeUpstream,
) -> None:
    outcome = run(upstream, completion(["abcde", "fghij", "k", "lmn"]), max_output_chars=10)

    failed(outcome, "upstream_bad_response")
    assert outcome.texts == ["abcde", "fghij"]


def test_limit_when_output_is_exactly_max_output_chars_then_it_finishes(upstream: FakeUpstream) -> None:
    outcome = run(upstream, completion(["abcde", "fghij"]), max_output_chars=10)

    assert finished(outcome) == (["abcde", "fghij"], Finish("stop", Usage(10, 2)))


# --- cancellation -------------------------------------------------------------------------------------------


def test_cancel_when_the_consumer_closes_the_generator_then_the_upstream_request_closes(
    upstream: FakeUpstream,
) -> None:
    upstream.script(stream_of(ROLE, event(chunk("first")), hang()))

    async def main() -> tuple[Chunk, float]:
        async with http_client() as http:
            stream = LLMClient(http, make_config(upstream.base_url, idle_timeout=10.0)).stream(MESSAGES)
            assert isinstance(stream, AsyncGenerator)
            first = await anext(stream)
            closing = time.monotonic()
            await stream.aclose()
            # Still inside the httpx client: closing the generator alone must end the request.
            record = await asyncio.to_thread(upstream.wait_closed, 0, 1)
            assert record.disconnected_by_client
            assert record.closed_at is not None
            return first, record.closed_at - closing

    first, delay = asyncio.run(main())

    assert first == TextDelta("first")
    assert delay < 1


def test_cancel_when_the_consuming_task_is_cancelled_while_waiting_then_the_upstream_request_closes(
    upstream: FakeUpstream,
) -> None:
    upstream.script(stream_of(ROLE, event(chunk("first")), hang()))

    async def main() -> list[Chunk]:
        received: list[Chunk] = []
        first_received = asyncio.Event()
        async with http_client() as http:
            client = LLMClient(http, make_config(upstream.base_url, idle_timeout=10.0))

            async def reader() -> None:
                async for item in client.stream(MESSAGES):
                    received.append(item)
                    first_received.set()

            task = asyncio.create_task(reader())
            async with asyncio.timeout(2):
                await first_received.wait()
            await asyncio.sleep(0.05)  # the reader is now waiting on the hung upstream
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            record = await asyncio.to_thread(upstream.wait_closed, 0, 1)
            assert record.disconnected_by_client
        return received

    assert asyncio.run(main()) == [TextDelta("first")]


def test_chunks_when_content_has_a_lone_surrogate_then_it_becomes_a_replacement_character(
    upstream: FakeUpstream,
) -> None:
    # JSON allows "\ud800" alone; UTF-8 cannot encode it, so it must not reach readers or the database.
    lone = send('data: {"choices":[{"index":0,"delta":{"content":"a\\ud800b"},"finish_reason":null}]}\n\n')

    outcome = run(upstream, stream_of(ROLE, lone, STOP, DONE))

    assert finished(outcome)[0] == ["a\ufffdb"]


@pytest.mark.parametrize("value", ["²", "٣", "+5", "1e3", "soon"])
def test_parse_retry_after_when_not_ascii_seconds_nor_a_date_then_none_not_a_crash(value: str) -> None:
    # Regression: "²".isdigit() is true and float("²") raised, a 500-shaped internal_error for a header.
    assert parse_retry_after(value) is None


def test_parse_retry_after_when_seconds_then_that_many() -> None:
    assert parse_retry_after(" 7 ") == 7.0
