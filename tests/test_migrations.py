"""The schema is built only by migrations: up, down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app import migrations
from app.articles.models import Article
from app.articles.service import ArticleService
from app.catalog.models import SEARCH_INDEX_OBJECTS, Artist, name_hash
from app.catalog.schemas import ArtistRecord
from app.db import Base, create_engine, create_sessionmaker
from app.kit.text import fold


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


def modelled(name: str | None, _type: str, _parent: object) -> bool:
    """The search indexes of 0005 (FTS5 and its shadow tables, expression and trigram indexes) are access
    paths the models do not describe."""
    return not (name or "").startswith(SEARCH_INDEX_OBJECTS)


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
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"include_name": modelled}), Base.metadata
                    )
                )
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []


# --- 0003: data integrity (review issue 9) --------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

legacy_artists = sa.table(
    "artists",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("name_key", sa.String),
    sa.column("kind", sa.String),
    sa.column("country", sa.String),
    sa.column("genres", sa.JSON),
    sa.column("active_from", sa.Integer),
    sa.column("active_to", sa.Integer),
    sa.column("notable_works", sa.JSON),
    sa.column("notes", sa.Text),
    sa.column("search_text", sa.Text),
    sa.column("genre_keys", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
legacy_articles = sa.table(
    "articles",
    sa.column("id", sa.Integer),
    sa.column("artist_id", sa.Integer),
    sa.column("language", sa.String),
    sa.column("length", sa.String),
    sa.column("version", sa.Integer),
    sa.column("markdown", sa.Text),
    sa.column("words", sa.Integer),
    sa.column("model", sa.String),
    sa.column("writer", sa.String),
    sa.column("finish_reason", sa.String),
    sa.column("truncated", sa.Boolean),
    sa.column("duration_ms", sa.Integer),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def legacy_artist(artist_id: int, name: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": artist_id,
        "name": name,
        "name_key": fold(name),
        "kind": "person",
        "country": None,
        "genres": [],
        "active_from": None,
        "active_to": None,
        "notable_works": [],
        "notes": None,
        "created_at": T0 - HOUR,
        "updated_at": T0,
        **fields,
    }
    values["search_text"] = "\n".join(fold(p) for p in [name, *values["genres"], *values["notable_works"]])
    values["genre_keys"] = "".join(f"|{fold(genre)}|" for genre in values["genres"])
    return values


def legacy_article(article_id: int, artist_id: int, created_at: datetime) -> dict[str, Any]:
    return {
        "id": article_id,
        "artist_id": artist_id,
        "language": "en",
        "length": "long",
        "version": article_id,
        "markdown": "Text.",
        "words": 1,
        "model": "m",
        "writer": "upstream",
        "finish_reason": "stop",
        "truncated": False,
        "duration_ms": 1,
        "created_at": created_at,
    }


def test_migration_0003_when_rows_break_the_new_rules_then_repaired_and_staleness_kept(
    any_database: str,
) -> None:
    """Rows the old code let in: years reversed (a PATCH race), control characters (NUL only on SQLite),
    a name folding to nothing. After the upgrade every row passes the API's rules, the unique hash is
    built, and each article is as stale as it was, plus stale where its artist was repaired."""
    nul = "\x00" if any_database.startswith("sqlite") else "\x01"
    rows = [
        legacy_artist(1, "Nina Simone", active_from=1950, active_to=1960),
        legacy_artist(2, "Reversed", active_from=1958, active_to=1952),
        legacy_artist(3, "Nina\x07Simone"),  # cleaned, it folds like artist 1
        legacy_artist(
            4,
            "Björk",
            country="\x01",
            genres=["jazz\x02", "\x03"],
            notable_works=[f"Home{nul}genic"],
            notes=f"Line\r\nnext\ttab{nul}end",
        ),
        legacy_artist(5, "\u200b"),
    ]
    articles = [
        legacy_article(1, 1, T0 + HOUR),  # stored after the artist's last change: fresh
        legacy_article(2, 1, T0 - HOUR),  # before it: stale
        legacy_article(3, 2, T0 + HOUR),  # fresh, but its artist gets repaired: stale
    ]

    async def fill() -> None:
        engine = create_async_engine(any_database)
        try:
            async with engine.begin() as connection:
                await connection.execute(legacy_artists.insert(), rows)
                await connection.execute(legacy_articles.insert(), articles)
        finally:
            await engine.dispose()

    async def read() -> tuple[dict[int, Artist], dict[int, Article]]:
        engine = create_engine(any_database)
        try:
            async with create_sessionmaker(engine)() as session:
                artists = {a.id: a for a in await session.scalars(sa.select(Artist))}
                stored = {a.id: a for a in await session.scalars(sa.select(Article))}
                return artists, stored
        finally:
            await engine.dispose()

    migrations.upgrade(any_database, "0002")
    asyncio.run(fill())
    migrations.upgrade(any_database)
    artists, stored = asyncio.run(read())

    assert [(a.name, a.facts_version) for a in artists.values()] == [
        ("Nina Simone", 1),
        ("Reversed", 2),
        ("Nina Simone (3)", 2),
        ("Björk", 2),
        ("Artist 5", 2),
    ]
    assert (artists[1].active_from, artists[1].active_to, artists[1].updated_at) == (1950, 1960, T0)
    assert (artists[2].active_from, artists[2].active_to) == (1958, None)
    assert artists[2].updated_at > T0
    bjork = artists[4]
    assert (bjork.country, bjork.genres, bjork.notable_works) == (None, ["jazz"], ["Home genic"])
    assert bjork.notes == "Line\r\nnext\ttab end"
    assert bjork.search_text == "bjork\njazz\nhome genic" and bjork.genre_keys == "|jazz|"
    for artist in artists.values():
        ArtistRecord.model_validate(artist)  # every row reads back under the API's rules
        assert (artist.name_key, artist.name_hash) == (fold(artist.name), name_hash(artist.name))
    assert {a.id: a.facts_version for a in stored.values()} == {1: 1, 2: 0, 3: 1}
    service = ArticleService(None, upstream_configured=False)  # type: ignore[arg-type]
    staleness = {a.id: service.is_stale(a, artists[a.artist_id]) for a in stored.values()}
    assert staleness == {1: False, 2: True, 3: True}

    migrations.downgrade(any_database, "0002")  # the repaired rows fit the old schema too
    migrations.upgrade(any_database)
    again, _ = asyncio.run(read())
    assert [a.name for a in again.values()] == [a.name for a in artists.values()]


# --- 0004: stored HTML (issue 10) -----------------------------------------------------------------------


def test_migration_0004_renders_the_stored_articles(any_database: str) -> None:
    """Articles stored before 0004 get their markdown rendered by the current renderer, with its version;
    the downgrade drops the columns and the upgrade renders them again."""
    from app.articles.render import RENDERER_VERSION, render_markdown

    markdowns = {1: "# One\n\n*voice*", 2: "<script>x</script> [a](javascript:alert(1))", 3: ""}

    async def fill() -> None:
        engine = create_async_engine(any_database)
        try:
            async with engine.begin() as connection:
                await connection.execute(legacy_artists.insert(), [legacy_artist(1, "Nina Simone")])
                await connection.execute(
                    legacy_articles.insert(),
                    [
                        {**legacy_article(article_id, 1, T0 + HOUR), "markdown": markdown}
                        for article_id, markdown in markdowns.items()
                    ],
                )
        finally:
            await engine.dispose()

    async def read() -> dict[int, tuple[str, int]]:
        engine = create_engine(any_database)
        try:
            async with create_sessionmaker(engine)() as session:
                stored = await session.scalars(sa.select(Article).order_by(Article.id))
                return {a.id: (a.html, a.renderer_version) for a in stored}
        finally:
            await engine.dispose()

    migrations.upgrade(any_database, "0002")
    asyncio.run(fill())
    migrations.upgrade(any_database)
    expected = {article_id: (render_markdown(md), RENDERER_VERSION) for article_id, md in markdowns.items()}
    assert asyncio.run(read()) == expected
    assert "&lt;script&gt;" in expected[2][0]

    migrations.downgrade(any_database, "0003")
    migrations.upgrade(any_database)
    assert asyncio.run(read()) == expected
