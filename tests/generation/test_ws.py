"""`WS /ws/v1/articles` end to end: a real WebSocket client (`websockets`) against a live Atelier, a scripted
upstream over real HTTP, a real SQLite file. The events are compared with what the SSE routes give for the
same job, so "the same events" is checked, not assumed."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app.streaming import ws_wire
from tests.fakes.upstream import Reply, chunk, completion, event, hang
from tests.support import (
    ARTISTS,
    AUTH,
    TOKEN,
    LiveServer,
    MakeServer,
    StreamedEvent,
    add_artist,
    stream_events,
    wait_until,
)

PATH = "/ws/v1/articles"
README = Path(__file__).resolve().parents[2] / "README.md"
PIECES = ["# Nina Simone\n\n", "The High ", "Priestess of Soul.\n\n", "## Origins\n\n", "Tryon, ", "1933."]
Message = dict[str, Any]


def ws_url(server: LiveServer) -> str:
    return server.url.replace("http://", "ws://", 1) + PATH


@contextmanager
def socket_to(server: LiveServer, **options: Any) -> Iterator[ClientConnection]:
    with connect(ws_url(server), open_timeout=5, close_timeout=2, **options) as ws:
        yield ws


def send(ws: ClientConnection, **action: Any) -> None:
    ws.send(json.dumps(action))


def receive(ws: ClientConnection, timeout: float = 10) -> Message:
    while True:
        message: Message = json.loads(ws.recv(timeout=timeout))
        if message["type"] != "ping":
            return message


def until_end(ws: ClientConnection, *request_ids: Any, timeout: float = 10) -> dict[Any, list[Message]]:
    """Every message for `request_ids` until each has had its `done` or `error`: by request id."""
    got: dict[Any, list[Message]] = {request_id: [] for request_id in request_ids}
    open_ = set(request_ids)
    while open_:
        message = receive(ws, timeout)
        got.setdefault(message["request_id"], []).append(message)
        if message["type"] in ("done", "error") and message["request_id"] in open_:
            open_.discard(message["request_id"])
    return got


def text_of(messages: list[Message]) -> str:
    return "".join(m["delta"] for m in messages if m["type"] == "text")


def seq_of(message: Message) -> int:
    return int(message["id"].rpartition(":")[2])


def as_sse(messages: list[Message]) -> list[tuple[str, Message]]:
    """The messages as SSE events: (id, data without the WebSocket's own fields)."""
    return [
        (m["id"], {k: v for k, v in m.items() if k not in ("id", "stream", "request_id")}) for m in messages
    ]


def sse_pairs(events: list[StreamedEvent]) -> list[tuple[str, Message]]:
    return [(e.id, e.data) for e in events]


def merged(pairs: list[tuple[str, Message]]) -> list[tuple[str, Message]]:
    """Runs of `text` folded into one with the last id, as a reader that fell behind receives them (on
    either wire): the events of two readers of one log compare equal once both are folded."""
    out: list[tuple[str, Message]] = []
    for event_id, data in pairs:
        if data["type"] == "text" and out and out[-1][1]["type"] == "text":
            out[-1] = (event_id, {"type": "text", "delta": out[-1][1]["delta"] + data["delta"]})
        else:
            out.append((event_id, data))
    return out


def stored_markdown(server: LiveServer, artist_id: int, length: str = "long") -> str:
    response = server.client.get(
        f"{ARTISTS}/{artist_id}/article", params={"length": length}, headers={"Accept": "text/markdown"}
    )
    assert response.status_code == 200, response.text
    return response.text


def job_status(server: LiveServer, job_id: str) -> Message:
    body: Message = server.client.get(f"/api/v1/jobs/{job_id}").json()
    return body


class TestGenerate:
    def test_generate_streams_the_same_events_as_sse_to_done_and_the_text_is_stored(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(PIECES, delay=0.01))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id="r-1", artist_id=artist_id)
            messages = until_end(ws, "r-1")["r-1"]
        metadata, done = messages[0], messages[-1]
        job_id = metadata["job_id"]
        assert metadata["type"] == "metadata" and metadata["cached"] is False and job_id
        assert done["type"] == "done" and done["article_id"] is not None
        assert all(m["stream"] == job_id and m["request_id"] == "r-1" for m in messages)
        assert all(m["id"] == f"{job_id}:{seq_of(m)}" for m in messages)
        assert [seq_of(m) for m in messages] == sorted({seq_of(m) for m in messages})
        assert text_of(messages) == "".join(PIECES) == stored_markdown(app_server, artist_id)
        # the job's own SSE stream, read afterwards from its retained log (its text merged: it reads the log
        # in one go), has exactly these events
        _, sse = stream_events(app_server.client, f"/api/v1/jobs/{job_id}/stream")
        assert merged(as_sse(messages)) == merged(sse_pairs(sse))
        assert len(messages) > len(sse)  # the live reader had its text event by event

    def test_a_stored_portrait_is_replayed_with_the_replays_ids(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(PIECES))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id=1, artist_id=artist_id)
            until_end(ws, 1)
            send(ws, action="generate", request_id=2, artist_id=artist_id)
            replay = until_end(ws, 2)[2]
        _, sse = stream_events(app_server.client, f"{ARTISTS}/{artist_id}/article/stream")
        assert replay[0]["cached"] is True and replay[0]["stream"] == sse[0].id.rpartition(":")[0]
        assert replay[0]["stream"].startswith("replay-")
        assert merged(as_sse(replay)) == merged(sse_pairs(sse))
        assert len(upstream.requests) == 1

    def test_two_portraits_on_one_socket_at_once(self, app_server: LiveServer, upstream: Any) -> None:
        first = [f"a{i} " for i in range(15)]
        second = [f"b{i} " for i in range(15)]
        upstream.script(completion(first, delay=0.02), completion(second, delay=0.02))
        a, b = add_artist(app_server, "A"), add_artist(app_server, "B")
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id="a", artist_id=a)
            send(ws, action="generate", request_id="b", artist_id=b)
            order: list[str] = []
            got: dict[str, list[Message]] = {"a": [], "b": []}
            ended: set[str] = set()
            while ended != {"a", "b"}:
                message = receive(ws)
                got[message["request_id"]].append(message)
                order.append(message["request_id"])
                if message["type"] in ("done", "error"):
                    ended.add(message["request_id"])
        assert text_of(got["a"]) == "".join(first) and text_of(got["b"]) == "".join(second)
        assert got["a"][-1]["type"] == got["b"][-1]["type"] == "done"
        assert got["a"][0]["stream"] != got["b"][0]["stream"]
        # concurrently, not one after the other: the second began before the first ended
        assert order.index("b") < len(order) - 1 - order[::-1].index("a")
        assert stored_markdown(app_server, a) == "".join(first)
        assert stored_markdown(app_server, b) == "".join(second)

    def test_unknown_artist_is_an_error_message_and_the_socket_stays_open(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(PIECES))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id="x", artist_id=999_999)
            error = receive(ws)
            assert error == {
                "type": "error",
                "code": "artist_not_found",
                "message": "No artist has the id 999999.",
                "retryable": False,
                "retry_after": None,
                "request_id": "x",
            }
            send(ws, action="generate", request_id="y", artist_id=artist_id)
            assert until_end(ws, "y")["y"][-1]["type"] == "done"


class TestStopAndResume:
    def test_stop_leaves_the_stream_and_the_job_ends_after_its_grace(
        self, make_app: MakeServer, upstream: Any
    ) -> None:
        upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("Once ")), hang()]))
        grace = 0.3
        with make_app(job_grace=grace) as server, socket_to(server) as ws:
            artist_id = add_artist(server)
            send(ws, action="generate", request_id="g", artist_id=artist_id)
            metadata = receive(ws)
            assert receive(ws)["delta"] == "Once "
            send(ws, action="stop", request_id="s", stream=metadata["stream"])
            assert receive(ws) == {"type": "stopped", "stream": metadata["stream"], "request_id": "s"}
            left_at = time.monotonic()
            closed = upstream.wait_closed(0, timeout=grace + 2)
            assert closed.disconnected_by_client and closed.closed_at is not None
            assert grace * 0.8 <= closed.closed_at - left_at <= grace + 1.0
            wait_until(lambda: job_status(server, metadata["job_id"])["status"] == "cancelled")
            # nothing more for that stream, and the socket still answers
            send(ws, action="stop", request_id="s2", stream=metadata["stream"])
            again = receive(ws)
            assert again["type"] == "error" and again["code"] == "not_found" and again["request_id"] == "s2"

    def test_resume_after_a_reconnect_continues_with_no_gap_and_no_repeat(
        self, make_app: MakeServer, upstream: Any
    ) -> None:
        pieces = [f"p{i} " for i in range(30)]
        upstream.script(completion(pieces, delay=0.03))
        with make_app(job_grace=5) as server:
            artist_id = add_artist(server)
            with socket_to(server) as ws:
                send(ws, action="generate", request_id="first", artist_id=artist_id)
                before = [receive(ws) for _ in range(5)]
            # the socket is gone (a network drop, say); a new one resumes from the last id it had
            last_id = before[-1]["id"]
            with socket_to(server) as ws:
                send(ws, action="resume", request_id="again", last_event_id=last_id)
                after = until_end(ws, "again")["again"]
            job_id = before[0]["job_id"]
            # the ids continue exactly: what follows `last_id` in the job's log, as its SSE stream resumed from
            # the same id gives it (a run of text the reader fell behind on comes merged, with its last id)
            _, sse = stream_events(
                server.client, f"/api/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": last_id}
            )
        assert merged(as_sse(after)) == merged(sse_pairs(sse))
        assert {m["stream"] for m in before + after} == {job_id}
        assert all(m["request_id"] == "again" for m in after)
        seqs = [seq_of(m) for m in before + after]
        assert seqs == sorted(set(seqs))  # no repeat
        assert text_of(before) + text_of(after) == "".join(pieces)  # no gap
        assert after[-1]["type"] == "done"
        assert len(upstream.requests) == 1

    def test_resume_of_a_replay_and_at_the_end(self, app_server: LiveServer, upstream: Any) -> None:
        upstream.script(completion(PIECES))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id=1, artist_id=artist_id)
            live = until_end(ws, 1)[1]
            send(ws, action="generate", request_id=2, artist_id=artist_id)
            replay = until_end(ws, 2)[2]
            send(ws, action="resume", request_id=3, last_event_id=replay[1]["id"])
            rest = until_end(ws, 3)[3]
            assert [m["id"] for m in rest] == [m["id"] for m in replay[2:]]
            for request_id, last in ((4, replay[-1]["id"]), (5, live[-1]["id"])):
                send(ws, action="resume", request_id=request_id, last_event_id=last)
                assert receive(ws) == {"type": "nothing_after", "request_id": request_id}
            send(ws, action="resume", request_id=6, last_event_id="refused-abc:2")
            refused = receive(ws)
            assert refused["code"] == "bad_request" and refused["request_id"] == 6
            send(ws, action="resume", request_id=7, last_event_id="abcdef:3")
            assert receive(ws)["code"] == "job_not_found"
            send(ws, action="resume", request_id=8, last_event_id="replay-424242:3")
            assert receive(ws)["code"] == "article_not_found"


class TestCancelAndAuth:
    def test_cancel_needs_a_token_then_cancels_the_job(self, app_server: LiveServer, upstream: Any) -> None:
        upstream.script(Reply(steps=[event(chunk("Start ")), hang()]))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as anonymous:
            send(anonymous, action="generate", request_id="g", artist_id=artist_id)
            job_id = receive(anonymous)["job_id"]
            send(anonymous, action="cancel", request_id="c", job_id=job_id)
            refused = receive(anonymous)
            while refused["type"] != "error":
                refused = receive(anonymous)
            assert refused["code"] == "unauthorized" and refused["request_id"] == "c"
            assert refused["retryable"] is False
            assert job_status(app_server, job_id)["status"] == "running"
            with socket_to(app_server, subprotocols=["atelier.v1", f"bearer.{TOKEN}"]) as holder:
                assert holder.subprotocol == "atelier.v1"
                send(holder, action="cancel", request_id="c2", job_id=job_id)
                assert receive(holder) == {"type": "cancelled", "job_id": job_id, "request_id": "c2"}
                send(holder, action="cancel", request_id="c3", job_id="abc123")
                assert receive(holder)["code"] == "job_not_found"
            # the anonymous reader of the job sees it end as an SSE reader would
            end = until_end(anonymous, "g")["g"][-1]
            assert end["type"] == "error" and end["code"] == "cancelled" and end["retryable"] is False
        assert job_status(app_server, job_id)["status"] == "cancelled"

    def test_auth_by_first_message_lets_a_refresh_through(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(["First."]), completion(["Second."]))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id=1, artist_id=artist_id)
            until_end(ws, 1)
            send(ws, action="generate", request_id=2, artist_id=artist_id, refresh=True)
            refused = receive(ws)
            assert refused["code"] == "unauthorized" and "bearer.<token>" in refused["message"]
            send(ws, action="auth", token="wrong")
            assert receive(ws)["code"] == "unauthorized"
            send(ws, action="auth", request_id="auth", token=TOKEN)
            assert receive(ws) == {"type": "authenticated", "request_id": "auth"}
            send(ws, action="generate", request_id=3, artist_id=artist_id, refresh=True)
            fresh = until_end(ws, 3)[3]
        assert text_of(fresh) == "Second." and fresh[-1]["version"] == 2

    def test_auth_by_subprotocol_or_header_and_a_wrong_one_is_refused_at_the_handshake(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(["Fresh."]))
        artist_id = add_artist(app_server)
        with socket_to(app_server, subprotocols=["atelier.v1", f"bearer.{TOKEN}"]) as ws:
            send(ws, action="generate", request_id=1, artist_id=artist_id, refresh=True)
            assert until_end(ws, 1)[1][-1]["type"] == "done"
        with socket_to(app_server, additional_headers=AUTH) as ws:
            assert ws.subprotocol is None  # none offered, none chosen
            send(ws, action="cancel", request_id=2, job_id="abc")
            assert receive(ws)["code"] == "job_not_found"  # trusted: the job was looked for
        for options in (
            {"subprotocols": ["atelier.v1", "bearer.wrong"]},
            {"additional_headers": {"Authorization": "Bearer wrong"}},
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(app_server), open_timeout=5, **options)
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"

    def test_a_cross_site_origin_is_refused_before_accepting(self, app_server: LiveServer) -> None:
        own = app_server.url
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site", "Origin": own},
            {"Sec-Fetch-Site": "same-site", "Origin": own},
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(app_server), open_timeout=5, additional_headers=headers)
            response = refused.value.response
            assert response.status_code == 403, headers
            assert json.loads(response.body)["error"]["code"] == "forbidden"
        # our own pages' origin, a browser's own verdict, and no Origin at all (not a browser) are let in
        for headers in ({"Origin": own}, {"Sec-Fetch-Site": "same-origin", "Origin": "https://x"}, {}):
            with socket_to(app_server, additional_headers=headers) as ws:
                send(ws, action="stop", request_id=1, stream="nothing")
                assert receive(ws)["code"] == "not_found"
        # a token holder's request is its own, wherever the page is (as for the POST routes)
        with socket_to(
            app_server,
            additional_headers={"Origin": "https://dashboard.example"},
            subprotocols=["atelier.v1", f"bearer.{TOKEN}"],
        ):
            pass


class TestMalformed:
    def test_malformed_and_unknown_actions_are_answered_and_the_socket_stays_open(
        self, app_server: LiveServer, upstream: Any
    ) -> None:
        upstream.script(completion(PIECES))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            ws.send("not json")
            assert receive(ws)["code"] == "bad_request"
            ws.send("[1, 2]")
            assert receive(ws)["code"] == "bad_request"
            ws.send(b'{"action": "generate"}')  # binary
            assert receive(ws)["code"] == "bad_request"
            ws.send("[" * 100_000)
            assert receive(ws)["code"] == "bad_request"
            send(ws, action="dance", request_id="d")
            unknown = receive(ws)
            assert unknown["code"] == "bad_request" and unknown["request_id"] == "d"
            assert unknown["retryable"] is False and "generate" in unknown["message"]
            send(ws, action="generate", request_id="v", artist_id="7", length="huge", colour="red")
            invalid = receive(ws)
            assert invalid["code"] == "validation_error" and invalid["request_id"] == "v"
            assert invalid["retryable"] is False
            assert {f["loc"] for f in invalid["fields"]} == {"artist_id", "length", "colour"}
            send(ws, action="generate", request_id="l", artist_id=artist_id, language="xx")
            assert receive(ws)["fields"] == [
                {"loc": "language", "message": "Input should be one of: en, fr, de, es, it"}
            ]
            send(ws, action="stop", stream="s")
            missing = receive(ws)
            assert missing["request_id"] is None and missing["fields"][0]["loc"] == "request_id"
            send(ws, action="generate", request_id="ok", artist_id=artist_id)
            assert text_of(until_end(ws, "ok")["ok"]) == "".join(PIECES)

    def test_a_request_id_that_cannot_be_utf8_is_echoed_as_its_json_escape(
        self, app_server: LiveServer
    ) -> None:
        with socket_to(app_server) as ws:
            ws.send('{"action": "dance", "request_id": "\\ud800x"}')  # a lone surrogate, as JSON allows
            assert receive(ws)["request_id"] == "\ud800x"

    def test_one_socket_follows_at_most_32_streams(self, app_server: LiveServer, upstream: Any) -> None:
        upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("Once ")), hang()]))
        artist_id = add_artist(app_server)
        with socket_to(app_server) as ws:
            for request_id in range(33):
                send(ws, action="generate", request_id=request_id, artist_id=artist_id)
            refused = [m for m in (receive(ws) for _ in range(32 * 2 + 1)) if m["type"] == "error"]
            assert [(m["request_id"], m["code"]) for m in refused] == [(32, "bad_request")]
        assert len(upstream.requests) == 1  # the 32 joined one job

    def test_a_socket_that_keeps_sending_garbage_is_closed_with_1008(self, app_server: LiveServer) -> None:
        with socket_to(app_server) as ws:
            for _ in range(9):
                ws.send("garbage")
                assert receive(ws)["code"] == "bad_request"
            ws.send("garbage")
            assert receive(ws)["code"] == "bad_request"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


class TestLimits:
    def test_rate_limited_like_the_sse_stream_and_counted_with_it(
        self, make_app: MakeServer, upstream: Any
    ) -> None:
        with make_app(generation_rate="2/minute") as server:
            first, second, third = (add_artist(server, name) for name in ("A", "B", "C"))
            _, sse = stream_events(server.client, f"{ARTISTS}/{first}/article/stream")
            assert sse[-1].event == "done"
            with socket_to(server) as ws:
                send(ws, action="generate", request_id=1, artist_id=second)
                assert until_end(ws, 1)[1][-1]["type"] == "done"
                send(ws, action="generate", request_id=2, artist_id=first)  # a replay does not count
                assert until_end(ws, 2)[2][0]["cached"] is True
                send(ws, action="generate", request_id=3, artist_id=third)
                refused = until_end(ws, 3)[3]
            _, sse_refused = stream_events(server.client, f"{ARTISTS}/{third}/article/stream")
            assert [m["type"] for m in refused] == ["metadata", "error"]
            assert refused[0]["job_id"] is None and refused[0]["stream"].startswith("refused-")
            error = refused[1]
            assert error["code"] == "rate_limited" and error["retryable"] is True
            assert 0 < error["retry_after"] <= 60
            assert {
                k: v for k, v in error.items() if k not in ("id", "stream", "request_id", "retry_after")
            } == {k: v for k, v in sse_refused[1].data.items() if k != "retry_after"}
            with socket_to(server, subprotocols=["atelier.v1", f"bearer.{TOKEN}"]) as ws:
                send(ws, action="generate", request_id=4, artist_id=third)
                assert until_end(ws, 4)[4][-1]["type"] == "done"  # token holders are not limited
            assert len(upstream.requests) == 3

    def test_an_open_socket_counts_as_an_open_stream(self, app_server: LiveServer) -> None:
        gauge = 'atelier_open_streams{format="websocket"}'

        def count() -> float | None:
            for line in app_server.client.get("/metrics").text.splitlines():
                if line.startswith(gauge):
                    return float(line.split()[-1])
            return None

        with socket_to(app_server):
            wait_until(lambda: count() == 1.0, what="one open WebSocket")
        wait_until(lambda: count() == 0.0, what="no open WebSocket")

    def test_idle_socket_gets_pings(self, app_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(ws_wire, "PING_INTERVAL", 0.2)
        with socket_to(app_server) as ws:
            started = time.monotonic()
            assert json.loads(ws.recv(timeout=2)) == {"type": "ping"}
            assert json.loads(ws.recv(timeout=2)) == {"type": "ping"}
            assert time.monotonic() - started >= 0.3


# --- a reader that does not read --------------------------------------------------------------------------


class RawSocket:
    """A WebSocket client made of a plain TCP socket with a small receive buffer: it reads only when told,
    so the server's writes to it back up (a reader on a slow network, or one that stopped reading)."""

    def __init__(self, server: LiveServer) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, **action: Any) -> None:
        payload = json.dumps(action).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert len(payload) < 126
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)

    def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> Message:
        while True:
            first, second = self._exactly(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._exactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._exactly(8))[0]
            payload = self._exactly(size)
            if first & 0x0F == 0x1:
                message: Message = json.loads(payload)
                if message["type"] != "ping":
                    return message

    def close(self) -> None:
        self.sock.close()


class TestSlowReader:
    def test_a_reader_that_stops_reading_slows_neither_the_job_nor_another_reader(
        self, make_app: MakeServer, upstream: Any
    ) -> None:
        # 8 MB: past what the kernel buffers between the two ends of a loopback connection (the server's
        # send buffer grows to 4 MB) and uvicorn's own, so the server's writes to the slow reader block
        pieces = [f"{i:04d}" + "x" * 8000 + "\n" for i in range(1000)]
        upstream.script(completion(pieces, delay=0.001))
        with make_app(job_grace=5, llm_max_output_chars=20_000_000) as server:
            artist_id = add_artist(server)
            slow = RawSocket(server)
            try:
                slow.send(action="generate", request_id="slow", artist_id=artist_id)
                with socket_to(server, max_size=None) as fast:
                    time.sleep(0.05)
                    send(fast, action="generate", request_id="fast", artist_id=artist_id)
                    messages = until_end(fast, "fast", timeout=20)["fast"]
                assert messages[-1]["type"] == "done"  # the job ended while the slow reader held back
                job_id = messages[0]["job_id"]
                assert job_status(server, job_id)["status"] == "done"
                # the slow reader is still owed most of it; its next reads catch up, merged
                got: list[Message] = []
                while not got or got[-1]["type"] not in ("done", "error"):
                    got.append(slow.receive())
            finally:
                slow.close()
        assert text_of(got) == "".join(pieces)
        assert got[-1]["type"] == "done"
        assert len(got) < len(pieces)  # text it fell behind on came merged


def test_readers_of_one_job_on_many_sockets_get_one_upstream_call(
    app_server: LiveServer, upstream: Any
) -> None:
    pieces = [f"w{i} " for i in range(20)]
    upstream.script(completion(pieces, delay=0.02))
    artist_id = add_artist(app_server)
    texts: list[str] = []

    def read() -> None:
        with socket_to(app_server) as ws:
            send(ws, action="generate", request_id="r", artist_id=artist_id)
            texts.append(text_of(until_end(ws, "r")["r"]))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    assert texts == ["".join(pieces)] * 4
    assert len(upstream.requests) == 1


def test_the_readme_example_works_as_written(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(completion(PIECES))
    assert add_artist(app_server) == 1  # the example asks for artist 1, the first of the seeded catalog
    example = re.search(r"\*\*Over a WebSocket\*\*.*?```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert example is not None, "README.md has no WebSocket example"
    code = example.group(1)
    assert "ws://localhost:8000/ws/v1/articles" in code
    code = code.replace("ws://localhost:8000", app_server.url.replace("http://", "ws://", 1))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("".join(PIECES)) and "'type': 'done'" in result.stdout
