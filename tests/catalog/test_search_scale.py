"""The indexed search (migration 0005) returns what the definition does, on both databases: every folded
word a substring of `search_text`, the genre key one of `genre_keys`, ordered by name_key then id, paged,
with the exact total; the genres list as it was defined (first spelling by artist id, sorted folded);
the synthetic seed is deterministic."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import migrations
from app.catalog.models import (
    Artist,
    genre_key,
    genre_keys,
    name_columns,
    search_text,
)
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.synthetic import seed_synthetic, synthetic_artists
from app.db import create_engine, create_sessionmaker
from app.kit.text import fold

T = TypeVar("T")
Run = Callable[[Callable[[AsyncSession], Awaitable[T]]], T]
SYNTHETIC = 1000
LONG = "ﷺ" * 9  # folds to ~250 characters: names that differ only past PostgreSQL's 200-character prefix

TRICKY: list[dict[str, Any]] = [
    {"name": "100% Pure", "genres": ["pop"], "notable_works": ["50% off"]},
    {"name": "under_score", "genres": ["Rock|Pop"], "notable_works": ["a_b"]},
    {"name": "back\\slash", "genres": ["ROCK"], "notable_works": ["c:\\dir"]},
    {"name": 'Say "Hello"', "genres": ["Jazz"], "notable_works": ['He said "hi"', "x"]},
    {"name": "Édith Piaf", "genres": ["chanson"], "notable_works": ["La Vie en rose"]},
    {"name": "Иван Грозный", "genres": ["Électronique"], "notable_works": ["Ночь"]},
    {"name": "Νίκος Ξ", "genres": ["rebetiko"], "notable_works": ["Ω"]},
    {"name": LONG + " b", "genres": ["zydeco"], "notable_works": []},
    {"name": LONG + " a", "genres": ["zydeco"], "notable_works": []},
    {"name": LONG + "a", "genres": [], "notable_works": []},
    {"name": "Q", "genres": [], "notable_works": []},
]
FIXED_TERMS = [
    "%",
    "_",
    "\\",
    '"',
    '"hello"',
    'said "hi',
    "0% off",
    "a_b",
    "c:\\d",
    "é",
    "ÉDITH piaf",
    "ivan groznyi",
    "nikos",
    "xylouris",
    "sokolova",
    "q",
    "zu",
    "ka ri",
    "rock pop",
    "allah `alayhi wa-sallam",
    "wa-sallam a",
    "zzzznotthere",
    "e",
    "ss",
    "xyz",
]


@pytest.fixture
def run(any_database: str) -> Iterator[Run[Any]]:
    """Run `fn(session)` against a migrated database of each backend holding the synthetic and tricky
    artists (one engine for the whole test)."""
    migrations.upgrade(any_database)
    engine = create_engine(any_database)
    loop = asyncio.new_event_loop()

    async def fill() -> None:
        await seed_synthetic(create_sessionmaker(engine), SYNTHETIC)
        async with create_sessionmaker(engine)() as session:
            for fields in TRICKY:
                await ArtistRepository(session).add(Artist(**fields))
            await session.commit()

    loop.run_until_complete(fill())

    def runner(fn: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            async with create_sessionmaker(engine)() as session:
                return await fn(session)

        return loop.run_until_complete(go())

    yield runner
    loop.run_until_complete(engine.dispose())
    loop.close()


async def every_artist(session: AsyncSession) -> list[Artist]:
    return list(await session.scalars(select(Artist).order_by(Artist.id)))


def reference(artists: list[Artist], query: ArtistQuery) -> tuple[list[int], int]:
    """The definition, in Python over every row."""
    folded = fold(query.q) if query.q else ""
    words = folded.split(" ") if folded else []
    key = genre_key(query.genre) if query.genre and fold(query.genre) else None
    found = [
        a
        for a in artists
        if all(word in a.search_text for word in words) and (key is None or key in a.genre_keys)
    ]
    found.sort(key=lambda a: (a.name_key, a.id))
    start = (query.page - 1) * query.per_page
    return [a.id for a in found[start : start + query.per_page]], len(found)


def terms(artists: list[Artist]) -> list[str]:
    """The fixed terms, and substrings (1-8 characters, one or two words) of random artists' text."""
    rng = random.Random(7)
    out = list(FIXED_TERMS)
    for _ in range(60):
        text = rng.choice(artists).search_text
        length = rng.randint(1, 8)
        start = rng.randint(0, max(0, len(text) - length))
        out.append(text[start : start + length].replace("\n", " "))  # a query holds no line break
    for _ in range(10):
        out.append(f"{rng.choice(artists).name_key[:4]} {rng.choice(['rock', 'a', 'ri', 'blue'])}")
    return out


def test_search_matches_the_definition_for_every_kind_of_term(run: Run[Any]) -> None:
    async def scenario(session: AsyncSession) -> None:
        artists = await every_artist(session)
        repository = ArtistRepository(session)
        rng = random.Random(11)
        queries = []
        for term in terms(artists):
            queries.append(ArtistQuery(q=term))
            queries.append(ArtistQuery(q=term, page=rng.randint(2, 30), per_page=rng.choice([1, 7, 20])))
        for genre in [
            "rock",
            "ROCK",
            "pop",
            "jazz",
            "Électronique",
            "electronique",
            "zydeco",
            "po",
            "|",
            "x",
        ]:
            queries.append(ArtistQuery(genre=genre))
            queries.append(ArtistQuery(q="a", genre=genre, page=2, per_page=5))
            queries.append(ArtistQuery(q="rock", genre=genre))
        queries += [ArtistQuery(page=page, per_page=20) for page in (1, 10, 76, 77, 100)]
        for query in queries:
            found, total = await repository.search(query)
            assert ([a.id for a in found], total) == reference(artists, query), query

    run(scenario)


def test_long_folded_names_keep_their_order(run: Run[Any]) -> None:
    """Past PostgreSQL's 200-character index prefix, name_key still decides."""

    async def scenario(session: AsyncSession) -> list[str]:
        found, _ = await ArtistRepository(session).search(ArtistQuery(q="wa-sallam", per_page=50))
        return [a.name for a in found]

    assert run(scenario) == [LONG + " a", LONG + " b", LONG + "a"]


async def today_genres(session: AsyncSession) -> list[str]:
    """The definition before 0005: every artist's genres read in id order, first spelling kept."""
    seen: dict[str, str] = {}
    for genres in await session.scalars(select(Artist.genres).order_by(Artist.id)):
        for genre in genres or []:
            seen.setdefault(fold(genre), genre)
    return sorted(seen.values(), key=fold)


def test_genres_follow_creates_updates_and_deletes(run: Run[Any]) -> None:
    async def scenario(session: AsyncSession) -> None:
        repository = ArtistRepository(session)
        assert await repository.genres() == await today_genres(session)
        first = await repository.add(Artist(name="Aaa First", genres=["Tuvan", "tuvan", "Polka"]))
        later = await repository.add(Artist(name="Zzz Later", genres=["TUVAN", "Nordic Folk"]))
        await session.commit()
        assert "Tuvan" in await repository.genres()
        assert await repository.genres() == await today_genres(session)
        await repository.update(first.id, {"genres": ["Polka"]})  # the first spelling moves on
        await session.commit()
        assert "TUVAN" in await repository.genres()
        assert await repository.genres() == await today_genres(session)
        later.genres = ["Nordic folk"]  # an update through the unit of work
        await session.commit()
        assert await repository.genres() == await today_genres(session)
        await repository.delete(later)
        await session.commit()
        genres = await repository.genres()
        assert "Nordic folk" not in genres and "TUVAN" not in genres
        assert genres == await today_genres(session)
        for artist in (await every_artist(session))[:50]:
            await repository.delete(artist)
        await session.commit()
        assert await repository.genres() == await today_genres(session)

    run(scenario)


def test_search_follows_updates_and_deletes(run: Run[Any]) -> None:
    """The SQLite FTS5 table is kept in step by triggers; PostgreSQL's indexes by the database."""

    async def scenario(session: AsyncSession) -> None:
        repository = ArtistRepository(session)
        artist = await repository.add(Artist(name="Quokka Quartet", genres=["wombat rock"]))
        await session.commit()
        await repository.update(artist.id, {"name": "Numbat Nonet", "genres": ["marsupial jazz"]})
        await session.commit()
        assert (await repository.search(ArtistQuery(q="quokka")))[1] == 0
        assert (await repository.search(ArtistQuery(genre="wombat rock")))[1] == 0
        found, total = await repository.search(ArtistQuery(q="numbat", genre="Marsupial Jazz"))
        assert ([a.id for a in found], total) == ([artist.id], 1)
        await repository.delete(artist)
        await session.commit()
        assert (await repository.search(ArtistQuery(q="numbat")))[1] == 0

    run(scenario)


def test_synthetic_artists_are_deterministic_and_folded_like_the_models() -> None:
    rows = synthetic_artists(500)
    assert rows == synthetic_artists(500)
    assert rows != synthetic_artists(501)[:500]
    assert len({row["name_hash"] for row in rows}) == 500
    for row in rows:
        assert {k: row[k] for k in ("name_key", "name_hash")} == name_columns(row["name"])
        assert row["search_text"] == search_text(row["name"], row["genres"], row["notable_works"])
        assert row["genre_keys"] == genre_keys(row["genres"])
        assert 1 <= len(row["notable_works"]) <= 5
    scripts = "".join(row["name"] for row in rows)
    assert any("\u0400" <= c <= "\u04ff" for c in scripts)  # Cyrillic
    assert any("\u0370" <= c <= "\u03ff" for c in scripts)  # Greek
    assert any("\u3040" <= c <= "\u9fff" for c in scripts)  # Japanese


def test_synthetic_seed_is_idempotent(run: Run[Any]) -> None:
    """The fixture seeded SYNTHETIC artists: seeding again adds none, and the rows are the generator's."""

    async def scenario(session: AsyncSession) -> None:
        stored = {a.name: a for a in await every_artist(session)}
        for row in synthetic_artists(SYNTHETIC):
            artist = stored[row["name"]]
            assert (artist.search_text, artist.genres) == (row["search_text"], row["genres"])

    run(scenario)
