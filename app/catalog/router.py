"""The catalog's JSON routes under /api/v1/collection/artists: thin, the rules live in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.auth import TokenRequired
from app.catalog.repository import ArtistQuery
from app.catalog.schemas import ArtistCreate, ArtistPublic, ArtistsPublic, ArtistUpdate
from app.catalog.service import catalog_service
from app.db import SessionDep
from app.deps import ArticlesDep, JobsDep, SettingsDep

router = APIRouter(prefix="/api/v1/collection/artists", tags=["catalog"])

ArtistId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The artist's id")]


async def _with_articles(
    session: SessionDep, settings: SettingsDep, articles: ArticlesDep, artists: list[ArtistPublic]
) -> list[ArtistPublic]:
    """Each artist with a summary of its stored portrait (default language, long), found in one query."""
    summaries = await articles.summaries(session, artists, settings.default_language, "long")
    return [artist.model_copy(update={"article": summaries.get(artist.id)}) for artist in artists]


@router.get("")
async def list_artists(
    session: SessionDep,
    settings: SettingsDep,
    articles: ArticlesDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Words to find in name, genres, works")
    ] = None,
    genre: Annotated[str | None, Query(max_length=60)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ArtistsPublic:
    result = await catalog_service.search(
        session, ArtistQuery(q=q, genre=genre, page=page, per_page=per_page)
    )
    result.items = await _with_articles(session, settings, articles, result.items)
    return result


@router.post("", status_code=201)
async def create_artist(
    session: SessionDep, _auth: TokenRequired, data: ArtistCreate, response: Response
) -> ArtistPublic:
    artist = await catalog_service.create(session, data)
    response.headers["Location"] = f"{router.prefix}/{artist.id}"
    return ArtistPublic.model_validate(artist)


@router.get("/{artist_id}")
async def get_artist(
    session: SessionDep, settings: SettingsDep, articles: ArticlesDep, artist_id: ArtistId
) -> ArtistPublic:
    artist = ArtistPublic.model_validate(await catalog_service.get(session, artist_id))
    return (await _with_articles(session, settings, articles, [artist]))[0]


@router.patch("/{artist_id}")
async def update_artist(
    session: SessionDep, _auth: TokenRequired, artist_id: ArtistId, data: ArtistUpdate
) -> ArtistPublic:
    return ArtistPublic.model_validate(await catalog_service.update(session, artist_id, data))


@router.delete("/{artist_id}", status_code=204)
async def delete_artist(
    session: SessionDep, _auth: TokenRequired, jobs: JobsDep, artist_id: ArtistId
) -> Response:
    await catalog_service.delete(session, artist_id)
    jobs.cancel_artist(artist_id)
    return Response(status_code=204)
