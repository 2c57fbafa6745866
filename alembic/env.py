"""Alembic environment: async engine, batch mode on SQLite, and SQLite's foreign keys off while migrating.

Batch mode rebuilds a SQLite table by copying it and dropping the old one; with foreign keys on, that drop
would fire ON DELETE CASCADE on every child row. The pragma only takes effect outside a transaction, so it
is switched off before Alembic opens its transaction and back on after.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.catalog.models import SEARCH_INDEX_OBJECTS
from app.db import Base
from app.settings import get_settings

config = context.config
target_metadata = Base.metadata


def modelled(name: str | None, _type: str, _parent_names: object) -> bool:
    """Autogenerate leaves alone the search indexes migration 0005 makes (FTS5 and its shadow tables,
    expression and trigram indexes): access paths the models do not describe."""
    return not (name or "").startswith(SEARCH_INDEX_OBJECTS)


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    is_sqlite = connection.dialect.name == "sqlite"
    if is_sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite,
            compare_type=True,
            include_name=modelled,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if is_sqlite:
            connection.execute(text("PRAGMA foreign_keys=ON"))
            connection.commit()


async def run_migrations_online() -> None:
    engine = create_async_engine(database_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
