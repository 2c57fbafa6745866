"""Migration 0008 (revisions): articles stored before it read as written from the facts alone (no instruction,
no version revised); the downgrade drops the two columns and keeps every version; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app import migrations
from app.articles.models import Article
from app.db import create_engine, create_sessionmaker
from tests.test_migrations import HOUR, T0, legacy_article, legacy_articles, legacy_artist, legacy_artists


def _columns(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                columns = await connection.run_sync(lambda sync: inspect(sync).get_columns("articles"))
                return {column["name"] for column in columns}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_migration_0008_adds_null_revision_columns_and_its_downgrade_keeps_the_versions(
    any_database: str,
) -> None:
    async def fill() -> None:
        engine = create_async_engine(any_database)
        try:
            async with engine.begin() as connection:
                await connection.execute(legacy_artists.insert(), [legacy_artist(1, "Nina Simone")])
                await connection.execute(
                    legacy_articles.insert(), [legacy_article(n, 1, T0 + n * HOUR) for n in (1, 2)]
                )
        finally:
            await engine.dispose()

    async def read() -> list[tuple[int, str | None, int | None]]:
        engine = create_engine(any_database)
        try:
            async with create_sessionmaker(engine)() as session:
                stored = await session.scalars(sa.select(Article).order_by(Article.id))
                return [(a.version, a.instruction, a.revises_version) for a in stored]
        finally:
            await engine.dispose()

    migrations.upgrade(any_database, "0002")
    asyncio.run(fill())
    migrations.upgrade(any_database, "0007")
    assert not {"instruction", "revises_version"} & _columns(any_database)
    migrations.upgrade(any_database)
    assert asyncio.run(read()) == [(1, None, None), (2, None, None)]

    migrations.downgrade(any_database, "0007")
    assert not {"instruction", "revises_version"} & _columns(any_database)
    assert len(asyncio.run(_count(any_database))) == 2
    migrations.upgrade(any_database)
    assert asyncio.run(read()) == [(1, None, None), (2, None, None)]


async def _count(url: str) -> list[int]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(sa.text("SELECT id FROM articles"))).scalars())
    finally:
        await engine.dispose()
