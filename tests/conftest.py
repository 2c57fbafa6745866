"""Fixtures shared by every test: migrated databases and live servers over loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from app import migrations
from app.settings import Settings
from tests.fakes.upstream import FakeUpstream, fake_upstream
from tests.support import TOKEN, LiveServer, MakeServer, fresh_postgres_database, live_server, sqlite_url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file built by `alembic upgrade head`, copied for each test (faster than migrating each)."""
    path = tmp_path_factory.mktemp("template") / "atelier.db"
    migrations.upgrade(sqlite_url(path))
    return path


@pytest.fixture
def sqlite_database(tmp_path: Path, migrated_sqlite_template: Path) -> str:
    path = tmp_path / "atelier.db"
    shutil.copyfile(migrated_sqlite_template, path)
    return sqlite_url(path)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty (unmigrated) database on each backend."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "empty.db")
    else:
        with fresh_postgres_database() as url:
            yield url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    # One call per portrait unless a test plans: most tests script one upstream reply per portrait.
    values: dict[str, Any] = {
        "database_url": database_url,
        "api_tokens": [TOKEN],
        "writer_plan": "never",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def make_server(sqlite_database: str) -> MakeServer:
    """Start a server with settings overridden for one test: `with make_server(job_grace=0.1) as server:`."""

    def make(**overrides: Any) -> AbstractContextManager[LiveServer]:
        return live_server(make_settings(overrides.pop("database_url", sqlite_database), **overrides))

    return make


@pytest.fixture
def server(make_server: MakeServer) -> Iterator[LiveServer]:
    with make_server() as live:
        yield live


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeUpstream]:
    """One fake upstream for the whole run: starting and stopping uvicorn for each test costs ~0.2 s.
    Tests take it through `upstream`, which resets it."""
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def upstream(upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """A scriptable Mistral-compatible upstream serving real HTTP on loopback, as clean as a new one:
    no recorded requests, no queued replies, the default reply. (A test that needs its own server, e.g.
    to stop it, runs `fake_upstream()` itself.)"""
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture
def make_app(make_server: MakeServer, upstream: FakeUpstream) -> MakeServer:
    """A server wired to the fake upstream: `with make_app(job_grace=0.2) as server:`."""

    def make(**overrides: Any) -> AbstractContextManager[LiveServer]:
        values = {"llm_base_url": upstream.base_url, "llm_api_key": "upstream-key", **overrides}
        return make_server(**values)

    return make


@pytest.fixture
def app_server(make_app: MakeServer) -> Iterator[LiveServer]:
    with make_app() as live:
        yield live
