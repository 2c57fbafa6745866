"""Data integrity (review issue 9) on SQLite and PostgreSQL: the database holds the catalog's rules, a PATCH
is one atomic change of the row, and every text the API accepts is text both databases can store.

- years: `active_to >= active_from` is a CHECK constraint; two PATCHes racing cannot leave 1958–1952;
- `facts_version` counts changes, in the same UPDATE as the change (no bump lost to a race);
- names: uniqueness on a hash of the folded name, so a name that folds long (CJK, `ﷺ`) fits; control
  characters (NUL first) are refused in every text field and in the search parameters, before SQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from app import migrations
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.schemas import ArtistCreate, ArtistUpdate
from app.catalog.service import CatalogService
from app.db import create_engine, create_sessionmaker
from app.errors import Conflict, ValidationFailed
from tests.support import (
    ARTISTS,
    AUTH,
    LiveServer,
    MakeServer,
    assert_error,
    fresh_postgres_database,
    post_artist,
)

YEARS_FIELD = {"loc": "body.active_to", "message": "active_to must not be before active_from"}
CJK_NAME = "音楽家" * 66 + "作曲"  # 200 characters; folds to 600+ ("yinlejia…")
SALLAM_NAME = "ﷺ" * 200  # 200 characters; folds to 5,800
RACES = 25
CONTRACT_FIELDS = {
    "id",
    "name",
    "kind",
    "country",
    "genres",
    "active_from",
    "active_to",
    "notable_works",
    "notes",
    "created_at",
    "updated_at",
    "article",
}


# --- helpers -------------------------------------------------------------------------------------------


@pytest.fixture
def database(any_database: str) -> str:
    """A migrated database of each backend."""
    migrations.upgrade(any_database)
    return any_database


@asynccontextmanager
async def catalog_on(database_url: str) -> AsyncIterator[CatalogService]:
    engine = create_engine(database_url)
    try:
        yield CatalogService(create_sessionmaker(engine))
    finally:
        await engine.dispose()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@contextmanager
def reads_meet(parties: int = 2) -> Iterator[None]:
    """Every PATCH reads the row, then waits until all `parties` have read it: the worst interleaving
    (both read the old row before either writes), every time instead of by luck."""
    barrier = asyncio.Barrier(parties)
    real_get = ArtistRepository.get

    async def get(self: ArtistRepository, artist_id: int) -> Artist | None:
        artist = await real_get(self, artist_id)
        async with asyncio.timeout(5):
            await barrier.wait()
        return artist

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ArtistRepository, "get", get)
        yield


def assert_years_refused(outcome: object) -> None:
    assert isinstance(outcome, ValidationFailed), outcome
    assert outcome.extra["fields"] == [YEARS_FIELD]


def years(artist: Artist) -> tuple[int | None, int | None]:
    return artist.active_from, artist.active_to


# --- 1. years in order, held by the database ------------------------------------------------------------


def test_update_when_two_patches_read_before_either_writes_then_one_refused_and_years_in_order(
    database: str,
) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            artist = await catalog.create(ArtistCreate(name="Nina Simone", active_from=1950, active_to=1960))
            with reads_meet():
                outcomes = await asyncio.gather(
                    catalog.update(artist.id, ArtistUpdate(active_from=1958)),
                    catalog.update(artist.id, ArtistUpdate(active_to=1952)),
                    return_exceptions=True,
                )
            refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            assert len(refused) == 1, outcomes
            assert_years_refused(refused[0])
            stored = await catalog.get(artist.id)
            assert years(stored) in {(1958, 1960), (1950, 1952)}
            assert stored.facts_version == 2  # one change went through, one bump

    run(scenario)


def test_update_when_two_patches_race_many_times_then_years_always_in_order(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            for attempt in range(RACES):
                artist = await catalog.create(
                    ArtistCreate(name=f"Artist {attempt}", active_from=1950, active_to=1960)
                )
                outcomes = await asyncio.gather(
                    catalog.update(artist.id, ArtistUpdate(active_from=1958)),
                    catalog.update(artist.id, ArtistUpdate(active_to=1952)),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        assert_years_refused(outcome)
                stored = await catalog.get(artist.id)
                assert stored.active_from is not None and stored.active_to is not None
                assert stored.active_to >= stored.active_from, (attempt, years(stored))
                applied = sum(not isinstance(outcome, BaseException) for outcome in outcomes)
                assert applied >= 1 and stored.facts_version == 1 + applied

    run(scenario)


def test_database_when_row_written_with_years_reversed_then_check_constraint_refuses(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            artist = await catalog.create(ArtistCreate(name="Nina Simone", active_from=1950, active_to=1960))
            async with catalog.sessionmaker() as session:
                with pytest.raises(IntegrityError, match="ck_artists_active_years"):
                    await session.execute(
                        text("UPDATE artists SET active_from = 1958, active_to = 1952 WHERE id = :id"),
                        {"id": artist.id},
                    )
                await session.rollback()
                # open ends are fine
                await session.execute(
                    text("UPDATE artists SET active_from = NULL, active_to = 1952 WHERE id = :id"),
                    {"id": artist.id},
                )

    run(scenario)


def test_update_when_patch_and_stored_years_conflict_then_422_on_active_to(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            artist = await catalog.create(ArtistCreate(name="Nina Simone", active_from=1950, active_to=1960))
            with pytest.raises(ValidationFailed) as raised:
                await catalog.update(artist.id, ArtistUpdate(active_to=1940))
            assert raised.value.extra["fields"] == [YEARS_FIELD]
            assert years(await catalog.get(artist.id)) == (1950, 1960)

    run(scenario)


# --- 2. facts_version: every change counted, atomically ---------------------------------------------------


def test_update_when_changes_then_facts_version_bumped_once_each_and_not_for_no_change(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            artist = await catalog.create(ArtistCreate(name="Nina Simone", country="United States"))
            assert artist.facts_version == 1
            changed = await catalog.update(artist.id, ArtistUpdate(genres=["jazz"], notes="Tryon."))
            assert changed.facts_version == 2 and changed.updated_at > artist.updated_at
            same = await catalog.update(artist.id, ArtistUpdate(country="United States", genres=["jazz"]))
            assert same.facts_version == 2 and same.updated_at == changed.updated_at
            assert (await catalog.get(artist.id)).facts_version == 2

    run(scenario)


def test_update_when_two_patches_of_other_fields_race_then_both_kept_and_both_counted(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            artist = await catalog.create(ArtistCreate(name="Eunice Waymon", genres=["gospel"]))
            with reads_meet():
                outcomes = await asyncio.gather(
                    catalog.update(artist.id, ArtistUpdate(name="Nina Simone")),
                    catalog.update(artist.id, ArtistUpdate(genres=["jazz", "soul"])),
                    return_exceptions=True,
                )
            assert not any(isinstance(outcome, BaseException) for outcome in outcomes), outcomes
            stored = await catalog.get(artist.id)
            assert (stored.name, stored.genres, stored.facts_version) == ("Nina Simone", ["jazz", "soul"], 3)
            # the folded columns follow the row as it ended, not either PATCH's stale read of it
            for query in (ArtistQuery(q="nina soul"), ArtistQuery(q="simone", genre="jazz")):
                found, total = await catalog.search(query)
                assert [a.id for a in found] == [artist.id] and total == 1, query
            assert (await catalog.search(ArtistQuery(q="eunice")))[1] == 0
            assert (await catalog.search(ArtistQuery(genre="gospel")))[1] == 0

    run(scenario)


# --- 4. names that fold long, control characters ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, make_server: MakeServer) -> Iterator[LiveServer]:
    """A server on each backend."""
    if request.param == "sqlite":
        with make_server() as server:
            yield server
        return
    with fresh_postgres_database() as url:
        migrations.upgrade(url)
        with make_server(database_url=url) as server:
            yield server


def names(server: LiveServer, **params: Any) -> list[str]:
    response = server.client.get(ARTISTS, params=params)
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["items"]]


def count(server: LiveServer) -> int:
    response = server.client.get(ARTISTS)
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def test_create_when_name_folds_long_then_stored_found_and_ordered(live: LiveServer) -> None:
    for name in (CJK_NAME, SALLAM_NAME, "Édith Piaf", "Ábaco"):
        works = ["ﷺ" * 300] if name == SALLAM_NAME else []
        response = post_artist(live, {"name": name, "genres": ["音楽"], "notable_works": works})
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name
    assert names(live, q="音楽家作曲") == [CJK_NAME]
    assert names(live, q="ﷺ") == [SALLAM_NAME]  # name and works match; found once
    assert names(live, q="ﷺ ﷺ") == [SALLAM_NAME]
    assert names(live, genre="音楽", per_page=2, page=2) == [SALLAM_NAME, CJK_NAME]
    assert names(live) == ["Ábaco", "Édith Piaf", SALLAM_NAME, CJK_NAME]  # by folded name: a…, e…, s…, y…


def test_artist_json_when_versioned_then_shape_unchanged(live: LiveServer) -> None:
    """`facts_version` stays inside: the contract's artist has exactly these fields."""
    artist = post_artist(live, {"name": "Nina Simone"}).json()
    patched = live.client.patch(f"{ARTISTS}/{artist['id']}", json={"notes": "Tryon."}, headers=AUTH).json()
    listed = live.client.get(ARTISTS).json()["items"][0]
    for body in (artist, patched, listed):
        assert set(body) == CONTRACT_FIELDS


@pytest.mark.parametrize(
    ("existing", "name"),
    [("Édith Piaf", "EDITH  PIAF"), (CJK_NAME, f"  {CJK_NAME} "), (SALLAM_NAME, SALLAM_NAME)],
)
def test_create_when_name_folds_like_another_then_409(live: LiveServer, existing: str, name: str) -> None:
    assert post_artist(live, {"name": existing}).status_code == 201
    assert_error(post_artist(live, {"name": name}), 409, "conflict")
    assert count(live) == 1


def test_patch_when_name_folds_like_another_then_409(live: LiveServer) -> None:
    post_artist(live, {"name": SALLAM_NAME})
    other = post_artist(live, {"name": "Björk"}).json()
    response = live.client.patch(f"{ARTISTS}/{other['id']}", json={"name": f" {SALLAM_NAME}"}, headers=AUTH)
    assert_error(response, 409, "conflict")
    assert live.client.get(f"{ARTISTS}/{other['id']}").json()["name"] == "Björk"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "Nina\x00Simone"}, "body.name"),
        ({"name": "Nina\nSimone"}, "body.name"),
        ({"name": "Nina\x1bSimone"}, "body.name"),
        ({"name": "Nina\x85Simone"}, "body.name"),
        ({"name": "Nina\ud800"}, "body.name"),  # a lone surrogate: no UTF-8 exists for it
        ({"name": "\u200b\u2063"}, "body.name"),  # folds to nothing
        ({"name": "\ue000"}, "body.name"),  # folds to nothing
        ({"name": "A", "country": "Fr\x00nce"}, "body.country"),
        ({"name": "A", "genres": ["jazz", "so\x00ul"]}, "body.genres.1"),
        ({"name": "A", "genres": ["ja\tzz"]}, "body.genres.0"),
        ({"name": "A", "notable_works": ["Wild \x00Is the Wind"]}, "body.notable_works.0"),
        ({"name": "A", "notes": "Born in Tryon.\x00"}, "body.notes"),
        ({"name": "A", "notes": "Born in Tryon.\x07"}, "body.notes"),
    ],
)
def test_create_when_text_has_control_characters_or_folds_to_nothing_then_422(
    live: LiveServer, body: dict[str, Any], loc: str
) -> None:
    # sent as ASCII JSON (escapes), so a lone surrogate reaches the server as the client wrote it
    raw = json.dumps(body).encode()
    response = live.client.post(ARTISTS, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    error = assert_error(response, 422, "validation_error")
    assert loc in [field["loc"] for field in error["fields"]], error
    assert count(live) == 0


def test_patch_when_text_has_nul_then_422_and_unchanged(live: LiveServer) -> None:
    artist = post_artist(live, {"name": "Nina Simone"}).json()
    for body, loc in [
        ({"name": "Nina\x00"}, "body.name"),
        ({"notes": "\x00"}, "body.notes"),
        ({"genres": ["\x00"]}, "body.genres.0"),
        ({"notable_works": ["a\x00"]}, "body.notable_works.0"),
        ({"country": "\x00"}, "body.country"),
    ]:
        response = live.client.patch(f"{ARTISTS}/{artist['id']}", json=body, headers=AUTH)
        error = assert_error(response, 422, "validation_error")
        assert loc in [field["loc"] for field in error["fields"]], error
    assert live.client.get(f"{ARTISTS}/{artist['id']}").json() == artist


def test_create_when_notes_have_newlines_and_tabs_then_kept(live: LiveServer) -> None:
    notes = "Born in Tryon.\n\n\tStudied at Juilliard.\r\nMoved to Paris."
    response = post_artist(live, {"name": "Nina Simone", "notes": notes})
    assert response.status_code == 201, response.text
    assert live.client.get(f"{ARTISTS}/{response.json()['id']}").json()["notes"] == notes


@pytest.mark.parametrize(
    "params",
    [{"q": "nina\x00"}, {"q": "\x00"}, {"genre": "jazz\x00"}, {"q": "a\x1fb"}, {"q": "ok", "genre": "\x00"}],
)
def test_list_when_query_has_control_characters_then_422(live: LiveServer, params: dict[str, str]) -> None:
    post_artist(live, {"name": "Nina Simone", "genres": ["jazz"]})
    error = assert_error(live.client.get(ARTISTS, params=params), 422, "validation_error")
    assert {field["loc"] for field in error["fields"]} <= {"query.q", "query.genre"}, error


def test_catalog_page_when_query_has_nul_then_422(live: LiveServer) -> None:
    assert live.client.get("/", params={"q": "nina\x00"}).status_code == 422
    assert live.client.get("/", params={"genre": "\x00"}).status_code == 422


def test_artist_query_when_control_characters_then_validation_failed() -> None:
    with pytest.raises(ValidationFailed) as raised:
        ArtistQuery(q="nina\x00")
    assert raised.value.extra["fields"][0]["loc"] == "query.q"
    with pytest.raises(ValidationFailed):
        ArtistQuery(genre="\x00")
    assert ArtistQuery(q="nina simone", genre="jazz").q == "nina simone"


def test_service_when_names_fold_alike_then_conflict_on_create_and_rename(database: str) -> None:
    async def scenario() -> None:
        async with catalog_on(database) as catalog:
            await catalog.create(ArtistCreate(name=SALLAM_NAME))
            with pytest.raises(Conflict):
                await catalog.create(ArtistCreate(name=SALLAM_NAME))
            other = await catalog.create(ArtistCreate(name="Björk"))
            with pytest.raises(Conflict):
                await catalog.update(other.id, ArtistUpdate(name=SALLAM_NAME))
            found = await catalog.find(SALLAM_NAME)
            assert found is not None and found.name == SALLAM_NAME
            assert await catalog.find("nobody\x00") is None

    run(scenario)
