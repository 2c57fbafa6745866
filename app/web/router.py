"""Server-rendered pages. Each works without JavaScript and links its JSON twin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.service import catalog_service
from app.db import SessionDep
from app.errors import ArtistNotFound
from app.web.contexts import ArtistPage, CatalogPage, ErrorPage
from app.web.templates import render

router = APIRouter(include_in_schema=False)
PER_PAGE = 24


@router.get("/", response_class=HTMLResponse)
async def catalog_page(
    request: Request,
    session: SessionDep,
    q: Annotated[str, Query(max_length=200)] = "",
    genre: Annotated[str, Query(max_length=60)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    query = ArtistQuery(q=q or None, genre=genre or None, page=page, per_page=PER_PAGE)
    result = await catalog_service.search(session, query)
    genres = await ArtistRepository(session).genres()
    context = CatalogPage.build(request, result=result, q=q, genre=genre, genres=genres)
    return render(request, "catalog.html", context)


@router.get("/artists/{artist_id}", response_class=HTMLResponse)
async def artist_page(request: Request, session: SessionDep, artist_id: int) -> HTMLResponse:
    try:
        artist = await catalog_service.get(session, artist_id)
    except ArtistNotFound:
        context = ErrorPage(title="Artist not found", message=f"No artist has the id {artist_id}.")
        return render(request, "error.html", context, status_code=404)
    return render(request, "artist.html", ArtistPage.build(artist))
