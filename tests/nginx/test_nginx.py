"""The shipped nginx.conf in front of Atelier, with a real nginx: which Host it answers, what it serves
itself, how it streams, whom the app counts, and how it treats slow and oversized clients.

Each test that starts a generation uses its own client source address (one new generation per minute per
client is the app's setting here), so the tests share one app and one nginx and stay independent.
"""

from __future__ import annotations

import re
import selectors
import socket
import time

import httpx
import pytest
from httpx_sse import EventSource

from tests.nginx.conftest import HEADER_TIMEOUT, BehindNginx
from tests.nginx.servers import (
    ARTISTS,
    NGINX_CONF,
    NGINX_ONLY,
    ROOT,
    client_from,
    send_raw,
    start_stream,
)

SERVER_NAME = re.search(r"^\s*server_name\s+(?!_;)([^;\s]+)", NGINX_CONF.read_text(), re.MULTILINE)
assert SERVER_NAME is not None, "nginx.conf names no server"
NAME = SERVER_NAME.group(1)


def through_nginx(behind: BehindNginx, source: str = "127.0.0.1", host: str = NAME) -> httpx.Client:
    return client_from(source, behind.nginx.url, headers={"Host": host})


def test_the_configured_name_reaches_atelier(behind_nginx: BehindNginx) -> None:
    with through_nginx(behind_nginx) as client:
        assert client.get("/health").json() == {"status": "ok"}
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'href="/static/atelier.css"' in page.text


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1", f"{NAME}.evil.example"])
def test_any_other_host_is_closed_without_an_answer(behind_nginx: BehindNginx, host: str) -> None:
    # 444: nginx closes the connection without a word (and, with reset_timedout_connection, resets it).
    with through_nginx(behind_nginx, host=host) as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.get("/")
    assert send_raw(behind_nginx.nginx.port, b"GET / HTTP/1.0\r\n\r\n") == b""  # no Host at all


def test_static_files_are_served_by_nginx(behind_nginx: BehindNginx) -> None:
    with through_nginx(behind_nginx) as client:
        css = client.get("/static/atelier.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert css.content == (ROOT / "static" / "atelier.css").read_bytes()
        assert client.get(f"/static/{NGINX_ONLY}").status_code == 200  # only nginx's copy has it


def test_a_stream_arrives_through_nginx_as_it_is_written(behind_nginx: BehindNginx) -> None:
    (artist_id,) = behind_nginx.app.add_artists(1)
    path = f"{ARTISTS}/{artist_id}/article/stream"
    with through_nginx(behind_nginx, "127.0.0.4") as reader, through_nginx(behind_nginx) as poller:
        with reader.stream("GET", path, params={"length": "short"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = EventSource(response).iter_sse()
            job_id = next(sse for sse in events if sse.event == "metadata").json()["job_id"]
            assert job_id is not None
            texts = (sse for sse in events if sse.event in ("text", "done", "error"))
            first = next(texts)
            assert first.event == "text"
            # The first text is here while the portrait is still being written (30 tokens/s, ~600 words).
            status = poller.get(f"/api/v1/jobs/{job_id}").json()
            assert status["status"] == "running", status
            assert next(texts).event == "text"


def test_a_clients_forged_forwarded_for_stops_at_nginx(behind_nginx: BehindNginx) -> None:
    first, second, third = behind_nginx.app.add_artists(3)
    with through_nginx(behind_nginx, "127.0.0.5") as forger:
        assert start_stream(forger, first, {"X-Forwarded-For": "198.51.100.1"}).job_id is not None
        refused = start_stream(forger, second, {"X-Forwarded-For": "198.51.100.2"})
        assert (refused.job_id, refused.error) == (None, "rate_limited")
    with through_nginx(behind_nginx, "127.0.0.6") as other:  # another client, its own allowance
        assert start_stream(other, third).job_id is not None


def test_a_client_sending_its_headers_slowly_is_cut_within_the_header_timeout(
    behind_nginx: BehindNginx,
) -> None:
    """100 connections sending their headers one byte every 0.5 s (uvicorn alone keeps them forever)."""
    count, pace = 100, 0.5
    head = f"GET /health HTTP/1.1\r\nHost: {NAME}\r\nX-Slow: ".encode() + b"a" * 100
    selector = selectors.DefaultSelector()
    opened = time.monotonic()
    for _ in range(count):
        opening = socket.create_connection(("127.0.0.1", behind_nginx.nginx.port), timeout=5)
        opening.setblocking(False)
        selector.register(opening, selectors.EVENT_READ, data=0)
    closed_after: list[float] = []
    try:
        while selector.get_map() and time.monotonic() - opened < HEADER_TIMEOUT + 5:
            for key in list(selector.get_map().values()):
                connection, sent = key.fileobj, key.data
                assert isinstance(connection, socket.socket)
                try:
                    connection.send(head[sent : sent + 1])
                    selector.modify(connection, selectors.EVENT_READ, data=sent + 1)
                except OSError:
                    pass  # closed: seen below
            deadline = time.monotonic() + pace
            while (left := deadline - time.monotonic()) > 0:
                for key, _ in selector.select(timeout=left):
                    connection = key.fileobj
                    assert isinstance(connection, socket.socket)
                    try:
                        data = connection.recv(4096)
                    except OSError:
                        data = b""
                    assert data == b"", data  # closed, never answered
                    closed_after.append(time.monotonic() - opened)
                    selector.unregister(connection)
                    connection.close()
            if len(closed_after) == 0:
                with through_nginx(behind_nginx) as client:  # meanwhile, others are served
                    assert client.get("/health").status_code == 200
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    assert len(closed_after) == count, f"{count - len(closed_after)} slow connections still open"
    assert HEADER_TIMEOUT - 0.2 < min(closed_after) and max(closed_after) < HEADER_TIMEOUT + 2, closed_after


@pytest.mark.parametrize("size", [64 * 1024, 16 * 1024 * 1024])
def test_an_oversized_header_is_refused_by_nginx(behind_nginx: BehindNginx, size: int) -> None:
    request = f"GET /health HTTP/1.1\r\nHost: {NAME}\r\nX-Big: ".encode() + b"a" * size + b"\r\n\r\n"
    answer = send_raw(behind_nginx.nginx.port, request)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b""
    assert status in (b"400", b"431", b"494"), answer[:200]


def test_a_body_over_atelier_max_body_bytes_is_refused_by_nginx(behind_nginx: BehindNginx) -> None:
    with through_nginx(behind_nginx) as client:
        response = client.post(ARTISTS, content=b"x" * 65_537, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
