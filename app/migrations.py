"""Run Alembic from code: `atelier migrate`, the tests, and anything else that needs the schema.

The schema is only ever built by these migrations, never by `create_all()`. These are blocking calls
(env.py runs its own event loop): from async code, call them with `asyncio.to_thread`.

Several processes may migrate one database at once (each of several instances running `atelier migrate` as
it starts): an upgrade or downgrade holds a lock for the whole of it, so they run one after the other, and
the later ones find the schema already where they were going. PostgreSQL: a session advisory lock, on a
connection of its own held around the migration; SQLite: an exclusive `flock` on `<database file>.migrate-lock`.
Both go with the process, however it ends.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
# pg_advisory_lock's key while migrating: "migrate" in ASCII, as one 64-bit number (the server's own lock,
# app/sole_server.py, is another key: a migration runs beside a server).
MIGRATION_LOCK_KEY = int.from_bytes(b"migrate", "big")


def alembic_config(database_url: str) -> Config:
    config = Config(toml_file=str(ROOT / "pyproject.toml"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    _one_at_a_time(database_url, lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str = "base") -> None:
    _one_at_a_time(database_url, lambda: command.downgrade(alembic_config(database_url), revision))


def _one_at_a_time(database_url: str, migrate: Callable[[], None]) -> None:
    """Run `migrate` while holding the database's migration lock."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        asyncio.run(_under_advisory_lock(database_url, migrate))
        return
    database = url.database if url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        migrate()  # a database of this process alone
        return
    with _file_lock(f"{database}.migrate-lock"):
        migrate()


async def _under_advisory_lock(database_url: str, migrate: Callable[[], None]) -> None:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            # autocommit: the lock is the session's, and the connection is not left idle in a transaction
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            try:
                # Alembic's env.py runs its own event loop: in a thread of its own, while this one holds the lock
                await asyncio.to_thread(migrate)
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    finally:
        await engine.dispose()


@contextmanager
def _file_lock(path: str) -> Iterator[None]:
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield  # no such directory: no database either, and the migration says so itself
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # waits for another process's migration to end
        yield
    finally:
        os.close(descriptor)  # releases the lock
