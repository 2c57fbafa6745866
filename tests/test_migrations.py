"""The schema is built only by migrations: up, down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app import migrations
from app.db import Base


def table_names(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_migrations_go_up_down_and_up_again(any_database: str) -> None:
    migrations.upgrade(any_database)
    assert set(Base.metadata.tables) <= table_names(any_database)
    migrations.downgrade(any_database, "base")
    assert table_names(any_database) <= {"alembic_version"}
    migrations.upgrade(any_database)
    assert set(Base.metadata.tables) <= table_names(any_database)


def test_migrations_match_the_models(any_database: str) -> None:
    """Autogenerate finds nothing to do: the models and the migrations describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    migrations.upgrade(any_database)

    async def diff() -> list[object]:
        engine = create_async_engine(any_database)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
