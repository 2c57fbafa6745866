"""`WS /ws/v1/articles` through the shipped nginx.conf with a real nginx: the upgrade is passed on, messages
flow as they are written, the Origin check sees the browser's Host, and an idle socket outlives nginx's
read timeout because pings cross it (and is cut without them: the timeout is real).

The idle-socket tests render the shipped config with only the /ws/ location's `proxy_read_timeout`
shortened to 1 s, and run Atelier under plain uvicorn (as docs/deployment.md shows it) with its protocol ping
interval shortened to 0.3 s (`--ws-ping-interval`; 20 s by default) or turned off. The app's own
`{"type":"ping"}` comes after 15 s of silence, past the shortened timeout, so what keeps the socket here is
the protocol ping alone.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.nginx.conftest import BehindNginx
from tests.nginx.servers import (
    NGINX_CONF,
    ROOT,
    TOKEN,
    Atelier,
    clean_environment,
    free_port,
    migrated_sqlite,
    nginx_or_skip,
    process,
    render_nginx_conf,
    uvicorn_command,
    wait_for_port,
)

SERVER_NAME = re.search(r"^\s*server_name\s+(?!_;)([^;\s]+)", NGINX_CONF.read_text(), re.MULTILINE)
assert SERVER_NAME is not None, "nginx.conf names no server"
NAME = SERVER_NAME.group(1)
PATH = "/ws/v1/articles"
READ_TIMEOUT = 1.0  # the /ws/ location's proxy_read_timeout in the idle-socket tests


@contextmanager
def socket_through(port: int, source: str = "127.0.0.1", **options: Any) -> Iterator[ClientConnection]:
    """A WebSocket to nginx on `port` from `source`, asking for the configured name (Host: NAME:port)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    with connect(f"ws://{NAME}:{port}{PATH}", sock=sock, open_timeout=5, close_timeout=2, **options) as ws:
        yield ws


def send(ws: ClientConnection, **action: Any) -> None:
    ws.send(json.dumps(action))


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
        if message["type"] != "ping":
            return message


# --- the shipped config as it is ------------------------------------------------------------------------


def test_the_upgrade_passes_and_a_portrait_flows_as_it_is_written(behind_nginx: BehindNginx) -> None:
    (artist_id,) = behind_nginx.app.add_artists(1)
    with socket_through(behind_nginx.nginx.port, "127.0.0.21", subprotocols=["atelier.v1"]) as ws:
        assert ws.subprotocol == "atelier.v1"
        send(ws, action="generate", request_id="r", artist_id=artist_id, length="short")
        metadata = receive(ws)
        assert metadata["type"] == "metadata" and metadata["job_id"] and metadata["request_id"] == "r"
        first = receive(ws)
        assert first["type"] == "text" and first["id"].startswith(f"{metadata['job_id']}:")
        # the first text is here while the portrait is still being written (30 tokens/s, ~600 words)
        with socket_through(behind_nginx.nginx.port) as other:
            send(other, action="resume", request_id="s", last_event_id=first["id"])
            assert receive(other)["request_id"] == "s"
        more = [receive(ws) for _ in range(3)]
        assert [m["type"] for m in more] == ["text"] * 3
        send(ws, action="stop", request_id="x", stream=metadata["stream"])
        while (answer := receive(ws))["type"] == "text":
            pass  # sent before the stop was read
        assert answer == {"type": "stopped", "stream": metadata["stream"], "request_id": "x"}


def test_the_origin_check_sees_the_browsers_host_through_nginx(behind_nginx: BehindNginx) -> None:
    port = behind_nginx.nginx.port
    with pytest.raises(InvalidStatus) as refused:
        with socket_through(port, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body)["error"]["code"] == "forbidden"
    with socket_through(port, origin=f"http://{NAME}:{port}") as ws:
        send(ws, action="stop", request_id=1, stream="none")
        assert receive(ws)["code"] == "not_found"


def test_the_client_counted_is_the_one_nginx_saw(behind_nginx: BehindNginx) -> None:
    """One new generation per minute per client: a second one from the same address is refused, one from
    another address is not (nginx's X-Forwarded-For, believed because nginx is a trusted proxy)."""
    first, second, third = behind_nginx.app.add_artists(3)
    with socket_through(behind_nginx.nginx.port, "127.0.0.22") as ws:
        for request_id, artist_id in ((1, first), (2, second)):
            send(ws, action="generate", request_id=request_id, artist_id=artist_id, length="short")
        answers: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
        while len(answers[2]) < 2:
            message = receive(ws)
            answers[message["request_id"]].append(message)
        assert answers[1][0]["job_id"] is not None
        assert [m["type"] for m in answers[2]] == ["metadata", "error"] and answers[2][1][
            "code"
        ] == "rate_limited"
    with socket_through(behind_nginx.nginx.port, "127.0.0.23") as ws:
        send(ws, action="generate", request_id=3, artist_id=third, length="short")
        assert receive(ws)["job_id"] is not None


# --- an idle socket and nginx's read timeout ------------------------------------------------------------


@contextmanager
def uvicorn_behind_nginx(directory: Path, ws_ping_interval: float) -> Iterator[tuple[Atelier, int]]:
    """Atelier under plain uvicorn (`--ws-ping-interval`; 0 turns the protocol pings off) behind nginx with
    the shipped config, its /ws/ location's read timeout shortened to READ_TIMEOUT; (app, nginx's port)."""
    binary = nginx_or_skip()
    app_dir, nginx_dir = directory / "app", directory / "nginx"
    app_dir.mkdir(parents=True)
    nginx_dir.mkdir(parents=True)
    env = clean_environment(ATELIER_DATABASE_URL=migrated_sqlite(app_dir), ATELIER_API_TOKENS=TOKEN)
    app_port = free_port()
    command = [*uvicorn_command(app_port, "127.0.0.1"), "--ws-ping-interval", str(ws_ping_interval)]
    with process("atelier-uvicorn", command, env=env, cwd=app_dir) as app:
        wait_for_port(app, app_port)
        port = free_port()
        static_dir = nginx_dir / "static"
        static_dir.mkdir()
        conf = render_nginx_conf(
            nginx_dir, port=port, upstream_port=app_port, static_dir=static_dir, overrides={}
        )
        text = conf.read_text()
        block = re.search(r"location /ws/ \{.*?\n        \}", text, re.DOTALL)
        assert block is not None, "nginx.conf has no `location /ws/`"
        shortened, found = re.subn(
            r"proxy_read_timeout\s+[^;]+;", f"proxy_read_timeout {READ_TIMEOUT:g}s;", block.group(0)
        )
        assert found == 1, "the /ws/ location sets no proxy_read_timeout"
        conf.write_text(text.replace(block.group(0), shortened))
        command = [
            binary, "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log"),
            "-g", f"daemon off; pid {nginx_dir}/nginx.pid;",
        ]  # fmt: skip
        test = [*command[:-1], f"pid {nginx_dir}/nginx.pid;", "-t", "-q"]
        check = subprocess.run(test, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        with process("nginx", command, env=clean_environment(), cwd=nginx_dir) as proxy:
            wait_for_port(proxy, port)
            yield Atelier(url=f"http://127.0.0.1:{app_port}", port=app_port, process=app), port


def test_an_idle_socket_outlives_nginxs_read_timeout_thanks_to_pings(tmp_path: Path) -> None:
    with uvicorn_behind_nginx(tmp_path, ws_ping_interval=0.3) as (app, port):
        (artist_id,) = app.add_artists(1)
        # the client sends no pings of its own: only the server's keep the socket
        with socket_through(port, ping_interval=None) as ws:
            time.sleep(4 * READ_TIMEOUT)
            send(ws, action="generate", request_id="late", artist_id=artist_id, length="short")
            metadata = receive(ws)
            assert metadata["type"] == "metadata" and metadata["request_id"] == "late"
            assert receive(ws)["type"] == "text"


def test_without_pings_nginx_cuts_an_idle_socket(tmp_path: Path) -> None:
    with uvicorn_behind_nginx(tmp_path, ws_ping_interval=0) as (_app, port):
        with socket_through(port, ping_interval=None) as ws:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10 * READ_TIMEOUT)
            assert READ_TIMEOUT * 0.8 <= time.monotonic() - started <= 5 * READ_TIMEOUT


def test_the_rendered_config_is_the_shipped_one() -> None:
    """What the idle-socket tests change is the /ws/ location's read timeout alone; the shipped one is long
    enough for the app's 15 s pings and uvicorn's 20 s ones."""
    block = re.search(r"location /ws/ \{.*?\n        \}", NGINX_CONF.read_text(), re.DOTALL)
    assert block is not None
    timeout = re.search(r"proxy_read_timeout\s+(\d+)s;", block.group(0))
    assert timeout is not None and int(timeout.group(1)) > 20
    for directive in ("proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade"):
        assert directive in NGINX_CONF.read_text()
    assert "proxy_set_header Connection $connection_upgrade" in block.group(0)
    assert (ROOT / "nginx.conf") == NGINX_CONF
