"""The catalog's SQL on both databases: folded search, genre filter, uniqueness, seed idempotence."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import migrations
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.seed import seed_catalog
from app.catalog.seed_data import SAMPLE_ARTISTS
from app.db import create_engine, create_sessionmaker

T = TypeVar("T")
Run = Callable[[Callable[[AsyncSession], Awaitable[T]]], T]


@pytest.fixture
def run(any_database: str) -> Iterator[Run[object]]:
    """Run `fn(session)` against a freshly migrated database of each backend."""
    migrations.upgrade(any_database)

    def runner(fn: Callable[[AsyncSession], Awaitable[object]]) -> object:
        async def go() -> object:
            engine = create_engine(any_database)
            try:
                async with create_sessionmaker(engine)() as session:
                    return await fn(session)
            finally:
                await engine.dispose()

        return asyncio.run(go())

    yield runner


async def add_samples(session: AsyncSession) -> None:
    repository = ArtistRepository(session)
    await repository.add(Artist(name="Édith Piaf", genres=["chanson"], notable_works=["La Vie en rose"]))
    await repository.add(Artist(name="Björk", genres=["Electronic", "pop"], notable_works=["Homogenic"]))
    await repository.add(Artist(name="100% Pure", genres=["pop"], notable_works=[]))
    await session.commit()


@pytest.mark.parametrize(
    ("q", "genre", "expected"),
    [
        ("edith", None, ["Édith Piaf"]),
        ("ÉDITH piaf", None, ["Édith Piaf"]),
        ("BJORK", None, ["Björk"]),
        ("homogenic", None, ["Björk"]),
        ("100%", None, ["100% Pure"]),
        ("0%", None, ["100% Pure"]),
        ("%", None, ["100% Pure"]),  # a literal percent, not a wildcard
        (None, "ELECTRONIC", ["Björk"]),
        (None, "pop", ["100% Pure", "Björk"]),
        (None, "po", []),
    ],
)
def test_search_folds_case_and_accents(
    run: Run[object], q: str | None, genre: str | None, expected: list[str]
) -> None:
    async def scenario(session: AsyncSession) -> list[str]:
        await add_samples(session)
        artists, total = await ArtistRepository(session).search(ArtistQuery(q=q, genre=genre))
        assert total == len(artists)
        return [artist.name for artist in artists]

    assert run(scenario) == expected


def test_name_key_is_unique_in_the_database(run: Run[object]) -> None:
    async def scenario(session: AsyncSession) -> bool:
        await add_samples(session)
        session.add(Artist(name="EDITH PIAF", genres=[], notable_works=[]))
        try:
            await session.flush()
        except IntegrityError:
            return True
        return False

    assert run(scenario) is True


def test_timestamps_come_back_aware_utc(run: Run[object]) -> None:
    async def scenario(session: AsyncSession) -> object:
        await add_samples(session)
        session.expunge_all()
        artist = await ArtistRepository(session).get_by_name("bjork")
        assert artist is not None
        return artist.created_at.utcoffset()

    assert run(scenario) is not None


def test_seed_is_idempotent(run: Run[object]) -> None:
    async def scenario(session: AsyncSession) -> tuple[int, int, int]:
        maker = create_sessionmaker(session.bind)  # type: ignore[arg-type]
        first = await seed_catalog(maker)
        second = await seed_catalog(maker)
        count = await session.scalar(select(func.count()).select_from(Artist))
        return first, second, count or 0

    first, second, count = run(scenario)  # type: ignore[misc]
    assert first == len(SAMPLE_ARTISTS) >= 30
    assert second == 0
    assert count == len(SAMPLE_ARTISTS)
