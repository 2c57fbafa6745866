"""Stored portraits: the latest one (JSON or markdown, with ETags) and every version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from app.articles.deps import ArticlesDep
from app.articles.models import Article
from app.articles.params import ArticleParamsDep
from app.articles.schemas import ArticleVersions
from app.articles.service import ArticleService
from app.catalog.models import Artist
from app.kit.http import not_modified

router = APIRouter(prefix="/api/v1/collection/artists/{artist_id}/article", tags=["articles"])
ArtistId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _wants_markdown(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/markdown" in accept and "application/json" not in accept.split("text/markdown")[0]


def _represent(request: Request, articles: ArticleService, article: Article, artist: Artist) -> Response:
    stale = articles.is_stale(article, artist.updated_at)
    markdown = _wants_markdown(request)
    etag = f'"article-{article.id}-{"md" if markdown else "json"}{"-stale" if stale else ""}"'
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "no-cache"}
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    if markdown:
        return Response(article.markdown, media_type="text/markdown; charset=utf-8", headers=headers)
    body = articles.public_view(article, artist).model_dump(mode="json")
    return JSONResponse(body, headers=headers)


@router.get("", response_model=None)
async def get_article(
    request: Request, articles: ArticlesDep, artist_id: ArtistId, params: ArticleParamsDep
) -> Response:
    """The latest stored portrait: JSON with `html`, or the markdown with `Accept: text/markdown`."""
    artist, article = await articles.latest(artist_id, params.language, params.length)
    return _represent(request, articles, article, artist)


@router.get("/versions")
async def list_versions(articles: ArticlesDep, artist_id: ArtistId) -> ArticleVersions:
    return await articles.versions(artist_id)


@router.get("/versions/{version}", response_model=None)
async def get_version(
    request: Request, articles: ArticlesDep, artist_id: ArtistId, version: Version, params: ArticleParamsDep
) -> Response:
    artist, article = await articles.version(artist_id, params.language, params.length, version)
    return _represent(request, articles, article, artist)
