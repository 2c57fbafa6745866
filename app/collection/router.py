"""The catalog's JSON routes under /api/v1/collection/artists: HTTP in, HTTP out, the rules in services."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app.auth import TokenRequired
from app.catalog.reads import CATALOG, artist_reads
from app.catalog.repository import ArtistQuery
from app.catalog.schemas import ArtistCreate, ArtistUpdate
from app.collection.deps import CollectionDep
from app.collection.schemas import ArtistPublic, ArtistsPublic
from app.errors import error_responses
from app.kit.http import get_and_head
from app.kit.ids import MAX_ID, MIN_ID
from app.kit.read_cache import cacheable

router = APIRouter(prefix="/api/v1/collection/artists", tags=["catalog"], responses=error_responses(422))

ArtistId = Annotated[int, Path(ge=MIN_ID, le=MAX_ID, description="The artist's id")]


@get_and_head(router, "")
async def list_artists(
    request: Request,
    collection: CollectionDep,
    q: Annotated[
        str | None, Query(max_length=200, description="Words to find in name, genres, works")
    ] = None,
    genre: Annotated[str | None, Query(max_length=60)] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=100)] = 20,
) -> ArtistsPublic:
    found = await collection.search(ArtistQuery(q=q, genre=genre, page=page, per_page=per_page))
    cacheable(request, CATALOG)
    return found


@router.post("", status_code=201, responses=error_responses(400, 401, 409, 413))
async def create_artist(
    collection: CollectionDep, _auth: TokenRequired, data: ArtistCreate, response: Response
) -> ArtistPublic:
    artist = await collection.create(data)
    response.headers["Location"] = f"{router.prefix}/{artist.id}"
    return artist


@get_and_head(router, "/{artist_id}", responses=error_responses(404))
async def get_artist(request: Request, collection: CollectionDep, artist_id: ArtistId) -> ArtistPublic:
    artist = await collection.get(artist_id)
    cacheable(request, artist_reads(artist_id))
    return artist


@router.patch("/{artist_id}", responses=error_responses(400, 401, 404, 409, 413))
async def update_artist(
    collection: CollectionDep, _auth: TokenRequired, artist_id: ArtistId, data: ArtistUpdate
) -> ArtistPublic:
    return await collection.update(artist_id, data)


@router.delete("/{artist_id}", status_code=204, responses=error_responses(401, 404))
async def delete_artist(collection: CollectionDep, _auth: TokenRequired, artist_id: ArtistId) -> Response:
    await collection.delete(artist_id)
    return Response(status_code=204)
