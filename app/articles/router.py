"""Stored portraits: the latest one (JSON or markdown, with ETags) and every version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from app.articles.models import Article
from app.articles.schemas import ArticleVersions
from app.articles.service import is_stale
from app.catalog.models import Artist
from app.catalog.service import catalog_service
from app.db import SessionDep
from app.deps import ArticlesDep
from app.generation.params import ArticleParamsDep

router = APIRouter(prefix="/api/v1/collection/artists/{artist_id}/article", tags=["articles"])
ArtistId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _wants_markdown(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/markdown" in accept and "application/json" not in accept.split("text/markdown")[0]


def _etag(article: Article, representation: str, stale: bool) -> str:
    return f'"article-{article.id}-{representation}{"-stale" if stale else ""}"'


def _not_modified(request: Request, etag: str) -> bool:
    # If-None-Match uses the weak comparison (RFC 9110 13.1.2): W/"x" matches "x" (a gzipping proxy
    # weakens ETags, and its clients send them back so).
    candidates = [
        tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")
    ]
    return etag in candidates or "*" in candidates


def _represent(request: Request, articles: ArticlesDep, article: Article, artist: Artist) -> Response:
    stale = is_stale(article, artist.updated_at, articles.upstream_configured)
    markdown = _wants_markdown(request)
    etag = _etag(article, "md" if markdown else "json", stale)
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "no-cache"}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    if markdown:
        return Response(article.markdown, media_type="text/markdown; charset=utf-8", headers=headers)
    body = articles.public_view(article, artist).model_dump(mode="json")
    return JSONResponse(body, headers=headers)


@router.get("", response_model=None)
async def get_article(
    request: Request,
    session: SessionDep,
    articles: ArticlesDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
) -> Response:
    """The latest stored portrait: JSON with `html`, or the markdown with `Accept: text/markdown`."""
    artist = await catalog_service.get(session, artist_id)
    article = await articles.latest(session, artist, params.language, params.length)
    return _represent(request, articles, article, artist)


@router.get("/versions")
async def list_versions(session: SessionDep, articles: ArticlesDep, artist_id: ArtistId) -> ArticleVersions:
    artist = await catalog_service.get(session, artist_id)
    return await articles.versions(session, artist)


@router.get("/versions/{version}", response_model=None)
async def get_version(
    request: Request,
    session: SessionDep,
    articles: ArticlesDep,
    artist_id: ArtistId,
    version: Version,
    params: ArticleParamsDep,
) -> Response:
    artist = await catalog_service.get(session, artist_id)
    article = await articles.version(session, artist, params.language, params.length, version)
    return _represent(request, articles, article, artist)
