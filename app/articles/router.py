"""Stored portraits: the latest one (JSON or markdown, with ETags) and every version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from app.articles.deps import ArticlesDep
from app.articles.models import Article
from app.articles.params import ArticleParamsDep
from app.articles.schemas import ArticlePublic, ArticleVersions
from app.articles.service import ArticleService
from app.catalog.models import Artist
from app.catalog.reads import artist_reads
from app.errors import error_responses
from app.kit.http import get_and_head
from app.kit.ids import MAX_ID, MIN_ID
from app.kit.read_cache import cacheable

router = APIRouter(
    prefix="/api/v1/collection/artists/{artist_id}/article",
    tags=["articles"],
    responses=error_responses(404, 422),
)
# One stored article: JSON, or its markdown with `Accept: text/markdown`; 304 for a matching If-None-Match.
ARTICLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ArticlePublic,
        "description": "The article as JSON, or its markdown with `Accept: text/markdown`",
        "content": {"text/markdown": {"schema": {"type": "string"}}},
    },
    304: {"description": "Not Modified: the ETag sent in If-None-Match still holds"},
}
ArtistId = Annotated[int, Path(ge=MIN_ID, le=MAX_ID)]
Version = Annotated[int, Path(ge=1, le=MAX_ID)]


def _wants_markdown(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/markdown" in accept and "application/json" not in accept.split("text/markdown")[0]


def _represent(request: Request, articles: ArticleService, article: Article, artist: Artist) -> Response:
    """Built once per version and representation: the read cache keeps the bytes, with their ETag, until
    the artist's reads are invalidated (a new version, an update of the facts: `stale` changes)."""
    cacheable(request, artist_reads(artist.id))
    headers = {"Vary": "Accept"}
    if _wants_markdown(request):
        return Response(article.markdown, media_type="text/markdown; charset=utf-8", headers=headers)
    body = articles.public_view(article, artist).model_dump(mode="json")
    return JSONResponse(body, headers=headers)


@get_and_head(router, "", response_model=None, responses=ARTICLE_RESPONSES)
async def get_article(
    request: Request, articles: ArticlesDep, artist_id: ArtistId, params: ArticleParamsDep
) -> Response:
    """The latest stored portrait: JSON with `html`, or the markdown with `Accept: text/markdown`."""
    artist, article = await articles.latest(artist_id, params.language, params.length)
    return _represent(request, articles, article, artist)


@get_and_head(router, "/versions")
async def list_versions(request: Request, articles: ArticlesDep, artist_id: ArtistId) -> ArticleVersions:
    versions = await articles.versions(artist_id)
    cacheable(request, artist_reads(artist_id))
    return versions


@get_and_head(router, "/versions/{version}", response_model=None, responses=ARTICLE_RESPONSES)
async def get_version(
    request: Request, articles: ArticlesDep, artist_id: ArtistId, version: Version, params: ArticleParamsDep
) -> Response:
    artist, article = await articles.version(artist_id, params.language, params.length, version)
    return _represent(request, articles, article, artist)
