"""Several processes migrating one fresh database at the same moment (instances that each run `atelier migrate`
as they start) all succeed, one after the other, and leave one schema at head: on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from app import migrations
from app.db import Base
from tests.support import fresh_postgres_database, sqlite_url

PROCESSES = 4


def _upgrade_together(barrier: multiprocessing.synchronize.Barrier, database_url: str) -> None:
    """One process: wait until every one is ready (imports done), then upgrade."""
    barrier.wait(timeout=30)
    migrations.upgrade(database_url)


def upgrade_at_once(database_url: str) -> list[int | None]:
    """Exit codes of PROCESSES processes upgrading `database_url` at the same moment."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate instances are
    barrier = context.Barrier(PROCESSES)
    workers = [
        context.Process(target=_upgrade_together, args=(barrier, database_url)) for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join()
    return [worker.exitcode for worker in workers]


def schema(database_url: str) -> tuple[list[str], set[str]]:
    """The revisions in alembic_version, and the tables."""

    async def read() -> tuple[list[str], set[str]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                versions = list(await connection.scalars(text("SELECT version_num FROM alembic_version")))
                tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
                return versions, tables
        finally:
            await engine.dispose()

    return asyncio.run(read())


def head(database_url: str) -> str:
    revision = ScriptDirectory.from_config(migrations.alembic_config(database_url)).get_current_head()
    assert revision is not None
    return revision


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_upgrading_one_fresh_database_at_once_all_succeed(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        database_url = sqlite_url(tmp_path / "fresh.db")
        assert upgrade_at_once(database_url) == [0] * PROCESSES
        versions, tables = schema(database_url)
    else:
        with fresh_postgres_database() as database_url:
            assert upgrade_at_once(database_url) == [0] * PROCESSES
            versions, tables = schema(database_url)
    assert versions == [head(database_url)]
    assert set(Base.metadata.tables) <= tables
