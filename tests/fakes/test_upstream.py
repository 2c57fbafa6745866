"""The fake upstream itself, exercised over real HTTP with httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse

from tests.fakes.upstream import (
    FakeUpstream,
    Reply,
    chunk,
    completion,
    drop,
    error_reply,
    event,
    fake_upstream,
    hang,
    pause,
    send,
    start,
)

pytestmark = pytest.mark.timeout(15)

KEY = "sk-fake"
BODY = {
    "model": "mistral-small-latest",
    "messages": [{"role": "user", "content": "Portrait de Séraphine"}],
    "stream": True,
    "max_tokens": 100,
    "temperature": 0.7,
}


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=upstream.base_url, timeout=5, headers={"Authorization": f"Bearer {KEY}"}
    ) as http:
        yield http


def test_completion_is_readable_as_sse_and_the_request_is_recorded(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script(completion(["Bon", "jour ", "é"], usage={"prompt_tokens": 1, "completion_tokens": 3}))

    with connect_sse(client, "POST", "/chat/completions", json=BODY) as source:
        assert source.response.status_code == 200
        data = [sse.data for sse in source.iter_sse()]

    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(item["object"] == "chat.completion.chunk" for item in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(item["choices"][0]["delta"]["content"] for item in chunks) == "Bonjour é"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3}

    request = upstream.wait_closed(0)
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.json == BODY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.closed_at is not None and request.closed_at >= request.started_at
    assert not request.disconnected_by_client and not request.dropped


def test_completion_defaults() -> None:
    steps = completion(["a", "b"], delay=0.01).steps
    assert [step.kind for step in steps] == ["send", "send", "pause", "send", "send", "send"]
    final = json.loads(steps[-2].data.removeprefix(b"data: "))
    assert final["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert steps[-1].data == b"data: [DONE]\n\n"
    assert completion(["a"], done=False, usage=None).steps[-1].data.count(b"usage") == 0
    assert chunk(choices=False, usage={"total_tokens": 1})["choices"] == []
    assert chunk(["part"])["choices"][0]["delta"] == {"content": ["part"]}


def test_raw_bytes_split_inside_a_utf8_character_arrive_intact(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    payload = 'data: {"content": "café ☕"}\n\n'.encode()
    cut = payload.index("☕".encode()) + 1
    upstream.script(Reply(steps=[send(payload[:cut]), pause(0.05), send(payload[cut:])]))

    with client.stream("POST", "/chat/completions", json=BODY) as response:
        received = b"".join(response.iter_bytes())

    assert received == payload


def test_request_body_sent_in_several_parts_is_recorded_whole(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    raw = json.dumps(BODY).encode()

    def parts() -> Iterator[bytes]:
        yield raw[:10]
        yield raw[10:]

    response = client.post("/chat/completions", content=parts())

    assert response.status_code == 200
    assert upstream.wait_closed(0).json == BODY


def test_error_reply_has_status_headers_and_json_body(upstream: FakeUpstream, client: httpx.Client) -> None:
    upstream.script(error_reply(429, headers={"retry-after": "7"}))

    response = client.post("/chat/completions", json=BODY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    assert response.json()["object"] == "error"
    assert response.json()["message"] == "Too Many Requests"


def test_drop_breaks_the_body(upstream: FakeUpstream, client: httpx.Client) -> None:
    upstream.script(Reply(steps=[event(chunk("", role="assistant")), drop()]))

    received: list[bytes] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/chat/completions", json=BODY) as response,
    ):
        assert response.status_code == 200
        received.extend(response.iter_bytes())

    assert b"".join(received).startswith(b"data: {")  # what was written before the drop arrives

    request = upstream.wait_closed(0)
    assert request.dropped and not request.disconnected_by_client


def test_drop_before_start_sends_no_response(upstream: FakeUpstream, client: httpx.Client) -> None:
    upstream.script(Reply(steps=[drop(), start()]))

    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/chat/completions", json=BODY)


def test_steps_before_start_delay_the_headers(upstream: FakeUpstream, client: httpx.Client) -> None:
    upstream.script(Reply(steps=[pause(0.3), start(), event("x")]))

    began = time.monotonic()
    response = client.post("/chat/completions", json=BODY)

    assert time.monotonic() - began >= 0.3
    assert response.text == "data: x\n\n"


def test_hang_notices_the_client_closing(upstream: FakeUpstream, client: httpx.Client) -> None:
    upstream.script(Reply(steps=[event(chunk("", role="assistant")), hang()]))

    with client.stream("POST", "/chat/completions", json=BODY) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: {")
    client_closed_at = time.monotonic()

    began = time.monotonic()
    request = upstream.wait_closed(0, timeout=1)
    assert time.monotonic() - began < 1
    assert request.disconnected_by_client
    assert request.closed_at is not None
    assert request.closed_at - client_closed_at < 0.5


def test_stopping_does_not_wait_for_a_hung_response() -> None:
    with fake_upstream() as upstream, httpx.Client(base_url=upstream.base_url, timeout=5) as http:
        upstream.script(Reply(steps=[hang()]))
        with http.stream("POST", "/chat/completions", json=BODY) as response:
            assert response.status_code == 200
            upstream.wait_for_requests(1)
            began = time.monotonic()
            upstream.stop()
            assert time.monotonic() - began < 2
            assert response.read() == b""


def test_script_queue_is_taken_in_order_then_the_default(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script(error_reply(500), error_reply(503))
    upstream.script(error_reply(429))

    statuses = [client.post("/chat/completions", json=BODY).status_code for _ in range(4)]

    assert statuses == [500, 503, 429, 200]
    upstream.wait_for_requests(4)
    upstream.default = error_reply(418)
    assert client.post("/chat/completions", json=BODY).status_code == 418

    upstream.reset()
    assert upstream.requests == []
    assert client.post("/chat/completions", json=BODY).status_code == 200
    assert len(upstream.requests) == 1


def test_wait_helpers_time_out_with_assertion_errors(upstream: FakeUpstream) -> None:
    with pytest.raises(AssertionError, match="expected 1 request"):
        upstream.wait_for_requests(1, timeout=0.05)
    with pytest.raises(AssertionError, match="not received"):
        upstream.wait_closed(0, timeout=0.05)


def test_unknown_path_is_404_and_does_not_take_a_scripted_reply(
    upstream: FakeUpstream, client: httpx.Client
) -> None:
    upstream.script(error_reply(500))

    assert client.post("/completions", json=BODY).status_code == 404
    assert client.get("/chat/completions").status_code == 404
    assert client.post("/chat/completions", json=BODY).status_code == 500
    assert [request.path for request in upstream.requests] == [
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]
