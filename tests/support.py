"""Real parts for tests: a uvicorn server on a loopback port in a thread, and databases built by migrations."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import pytest
import uvicorn

from app.main import AppState, create_app
from app.settings import Settings

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTGRES_URL = os.environ.get(
    "ATELIER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
STARTUP_DEADLINE = 10.0
ARTISTS = "/api/v1/collection/artists"
T = TypeVar("T")


@dataclass
class LiveServer:
    url: str
    settings: Settings
    client: httpx.Client
    server: _Server

    def call(self, work: Callable[[AppState], Awaitable[T]]) -> T:
        """Run `work` with the server's own services, on its own event loop, as a job of that process
        would: what it writes goes through the same hooks (the read cache hears of it)."""
        state = cast(AppState, self.server.lifespan.state)
        return asyncio.run_coroutine_threadsafe(work(state), self.server.loop).result(timeout=10)

    def sqlite_rows(self, sql: str = "SELECT * FROM artists ORDER BY id") -> list[tuple[Any, ...]]:
        """Read the database file directly, to prove what a request did (or did not) change."""
        path = self.settings.database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as connection:
            return connection.execute(sql).fetchall()

    def sqlite_execute(self, sql: str, *parameters: Any) -> None:
        """Change the database file behind the app's back (as another process would)."""
        path = self.settings.database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as connection:
            connection.execute(sql, parameters)


# The `make_server` and `make_app` fixtures: `with make_server(job_grace=0.1) as server:`.
MakeServer = Callable[..., AbstractContextManager[LiveServer]]


class _Server(uvicorn.Server):
    """uvicorn's server, keeping the loop it runs on (for `LiveServer.call`)."""

    loop: asyncio.AbstractEventLoop

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)


@contextmanager
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """Serve `create_app(settings)` with uvicorn on 127.0.0.1 (a free port) until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As `atelier serve` runs: uvicorn reads X-Forwarded-For, from ATELIER_TRUSTED_PROXIES only.
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,
        proxy_headers=True,
        forwarded_allow_ips=settings.trusted_proxies,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_DEADLINE
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            yield LiveServer(url=url, settings=settings, client=client, server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def postgres_reachable(url: str = POSTGRES_URL) -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    import asyncpg

    async def probe() -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
        await connection.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL is not reachable at {url}: {type(exc).__name__}: {exc}"
    return None


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    import asyncpg

    reason = postgres_reachable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    name = f"atelier_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        connection = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL), timeout=5)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@dataclass
class StreamedEvent:
    id: str
    event: str
    data: dict[str, Any]


def read_sse(response: httpx.Response) -> list[StreamedEvent]:
    """Parse a whole SSE body with httpx-sse (the WHATWG rules), checking the contract's shape as it goes:
    one JSON `data` line whose `type` repeats the event name."""
    from httpx_sse import EventSource

    events = []
    for sse in EventSource(response).iter_sse():
        if not sse.data:
            continue  # `retry:` alone: httpx-sse dispatches it, the WHATWG rules (and browsers) do not
        data = json.loads(sse.data)
        assert data["type"] == sse.event, sse
        events.append(StreamedEvent(id=sse.id, event=sse.event, data=data))
    return events


def stream_events(
    client: httpx.Client,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[httpx.Response, list[StreamedEvent]]:
    with client.stream("GET", path, headers=headers, params=params) as response:
        if response.status_code != 200:
            response.read()
            return response, []
        return response, read_sse(response)


def joined_text(events: list[StreamedEvent]) -> str:
    return "".join(event.data["delta"] for event in events if event.event == "text")


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll `predicate` (every 10 ms) until it is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.01)


# --- API helpers ---------------------------------------------------------------------------------------


def post_artist(server: LiveServer, body: dict[str, Any]) -> httpx.Response:
    """POST `body` as a new artist, with the write token; the answer is not checked."""
    return server.client.post(ARTISTS, json=body, headers=AUTH)


def create_artist(server: LiveServer, name: str = "Nina Simone", **fields: Any) -> dict[str, Any]:
    """Create an artist (`name` plus any other fields), assert 201 and return the JSON body."""
    response = post_artist(server, {"name": name, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def add_artist(server: LiveServer, name: str = "Nina Simone", **fields: Any) -> int:
    """Create an artist like `create_artist` and return its id."""
    artist_id: int = create_artist(server, name, **fields)["id"]
    return artist_id


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the API's JSON error shape (status, `error.code`, a message, no traceback); return `error`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "Traceback" not in response.text
    return error
