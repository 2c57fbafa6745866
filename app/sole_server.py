"""One server per database: until the processes of one service share their running jobs (claims, readers and
takeover on Redis: issue 12, not wired yet), two servers on one database would each write the same portrait,
and a reader's resume landing on the other would start it again. So a server holds the database for as long
as it runs, and a second one refuses to start, saying why.

PostgreSQL: a session advisory lock on a connection kept for the server's life (released by the database
when the process dies, however it dies). SQLite: an exclusive `flock` on a file beside the database (released
by the kernel when the process dies). The command line (`atelier migrate`, `seed`, `generate`) takes no lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("atelier")

# pg_advisory_lock's key: "atelier" in ASCII, as one 64-bit number.
ADVISORY_KEY = int.from_bytes(b"atelier", "big")


class DatabaseTaken(RuntimeError):
    """Another Atelier server serves this database."""


def _refusal(where: str) -> DatabaseTaken:
    return DatabaseTaken(
        f"another Atelier server is serving this database ({where}). Atelier runs as one process per "
        "database until several processes can share their jobs through Redis (issue 12, not built yet): "
        "stop the other server, or give this one its own ATELIER_DATABASE_URL."
    )


@asynccontextmanager
async def sole_server(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the database for this server until the block ends; `DatabaseTaken` if another holds it."""
    url = engine.url
    if url.get_backend_name() == "postgresql":
        try:
            connection = await engine.connect()
        except (OperationalError, DBAPIError, OSError) as exc:
            # A server starts while its database is down (it answers /ready with 503 until it is back);
            # unheld, it cannot double-write either: nothing is written without the database.
            log.warning("could not hold the database for this server (%s): serving without the lock", exc)
            yield
            return
        try:
            taken = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            if not taken:
                raise _refusal(f"PostgreSQL database {url.database!r}")
            try:
                yield
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
        finally:
            await connection.close()
        return
    database = make_url(str(url)).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        yield  # a database of this process alone
        return
    path = f"{database}.server-lock"  # beside the database, resolved as SQLite resolves its path
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # no such directory: no database either (/ready answers 503)
        log.warning("could not hold the database for this server (%s): serving without the lock", exc)
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(f"SQLite file {database!r}") from None
        yield
    finally:
        os.close(descriptor)  # releases the lock
