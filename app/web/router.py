"""Server-rendered pages. Each works without JavaScript and links its JSON twin; a deferred script
upgrades the portrait area to the live stream."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from app.articles.render import render_markdown
from app.articles.service import is_stale
from app.auth import has_valid_token
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery, ArtistRepository
from app.catalog.service import catalog_service
from app.db import SessionDep
from app.deps import ArticlesDep, JobsDep, SettingsDep
from app.errors import ArtistNotFound
from app.generation.jobs import JobManager, RateLimited
from app.generation.prompt import TARGET_WORDS
from app.generation.ratelimit import client_address
from app.generation.service import facts_of
from app.llm.errors import UpstreamError
from app.settings import Settings
from app.web.contexts import (
    API_ARTISTS,
    LENGTHS,
    ArtistPage,
    CatalogPage,
    ErrorPage,
    JobPage,
    PortraitPanel,
    stored_portrait,
)
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


def _choice(settings: Settings, language: str | None, length: str | None) -> tuple[str, str]:
    """The page's language and length; an unknown value falls back to the default instead of an error."""
    chosen_language = language if language in settings.languages else settings.default_language
    chosen_length = length if length in TARGET_WORDS else "long"
    return chosen_language, chosen_length


async def _panel(
    session: AsyncSession,
    settings: Settings,
    jobs: JobManager,
    articles: ArticlesDep,
    artist: Artist,
    language: str,
    length: str,
    notice: str | None = None,
) -> PortraitPanel:
    article = await articles.find_latest(session, artist.id, language, length)
    running = jobs.find_running(artist.id, language, length)
    query = urlencode({"language": language, "length": length})
    return PortraitPanel(
        artist_id=artist.id,
        language=language,
        length=length,
        languages=settings.languages,
        lengths=LENGTHS,
        target_words=TARGET_WORDS[length],
        writer=jobs.writer,
        stored=(
            stored_portrait(
                article,
                render_markdown(article.markdown),
                is_stale(article, artist.updated_at, articles.upstream_configured),
            )
            if article is not None
            else None
        ),
        running_job_id=running.id if running is not None else None,
        stream_url=f"{API_ARTISTS}/{artist.id}/article/stream?{query}",
        generate_action=f"/artists/{artist.id}/portrait",
        notice=notice,
    )


def _not_found(request: Request, artist_id: int) -> HTMLResponse:
    context = ErrorPage(title="Artist not found", message=f"No artist has the id {artist_id}.")
    return render(request, "error.html", context, status_code=404)


@router.get("/artists/{artist_id}", response_class=HTMLResponse)
async def artist_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: int,
    language: Annotated[str | None, Query(max_length=10)] = None,
    length: Annotated[str | None, Query(max_length=10)] = None,
) -> HTMLResponse:
    try:
        artist = await catalog_service.get(session, artist_id)
    except ArtistNotFound:
        return _not_found(request, artist_id)
    chosen = _choice(settings, language, length)
    panel = await _panel(session, settings, jobs, articles, artist, *chosen)
    return render(request, "artist.html", ArtistPage.build(artist, panel))


@router.post("/artists/{artist_id}/portrait", response_model=None)
async def generate_from_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: int,
    language: Annotated[str, Form(max_length=10)] = "",
    length: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """The Generate button without JavaScript: start a job that runs to its end, then show its progress."""
    try:
        artist = await catalog_service.get(session, artist_id)
    except ArtistNotFound:
        return _not_found(request, artist_id)
    chosen_language, chosen_length = _choice(settings, language, length)
    artist_url = f"/artists/{artist.id}?{urlencode({'language': chosen_language, 'length': chosen_length})}"
    if await articles.find_latest(session, artist.id, chosen_language, chosen_length) is not None:
        return RedirectResponse(artist_url, status_code=303)
    client = None if has_valid_token(request) else client_address(request, settings.trusted_proxies)
    try:
        job = await jobs.start_or_join(
            facts_of(artist), chosen_language, chosen_length, origin="api", client=client
        )
    except (RateLimited, UpstreamError) as exc:
        notice, status = _refusal(exc)
        panel = await _panel(
            session, settings, jobs, articles, artist, chosen_language, chosen_length, notice
        )
        return render(request, "artist.html", ArtistPage.build(artist, panel), status_code=status)
    return RedirectResponse(f"/artists/{artist.id}/portrait/jobs/{job.id}", status_code=303)


def _refusal(exc: RateLimited | UpstreamError) -> tuple[str, int]:
    if isinstance(exc, RateLimited):
        return (
            f"Too many new portraits from your address; try again in {round(exc.retry_after)} seconds.",
            429,
        )
    wait = f" Try again in {round(exc.retry_after)} seconds." if exc.retry_after else ""
    return (exc.message + wait, 503)


@router.get("/artists/{artist_id}/portrait/jobs/{job_id}", response_model=None)
async def job_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: int,
    job_id: str,
) -> Response:
    job = jobs.get(job_id)
    if job is None or job.artist.id != artist_id:
        gone = ErrorPage(title="Portrait not found", message="This portrait job is unknown or has expired.")
        return render(request, "error.html", gone, status_code=404)
    artist_url = f"/artists/{artist_id}?{urlencode({'language': job.language, 'length': job.length})}"
    if job.status == "done":
        return RedirectResponse(artist_url, status_code=303)
    try:
        artist = await catalog_service.get(session, artist_id)
    except ArtistNotFound:
        return _not_found(request, artist_id)
    panel = await _panel(session, settings, jobs, articles, artist, job.language, job.length)
    context = JobPage(
        title=f"Writing: {artist.name}",
        artist_id=artist.id,
        artist_name=artist.name,
        job_id=job.id,
        status=job.status,
        words=job.words,
        target_words=TARGET_WORDS[job.length],
        partial_html=Markup(render_markdown("".join(job.parts))),  # safe: raw HTML off, links filtered
        error=str(job.error["message"]) if job.error else None,
        json_url=f"/api/v1/jobs/{job.id}",
        stream_url=f"/api/v1/jobs/{job.id}/stream",
        artist_url=artist_url,
        panel=panel,
    )
    return render(request, "job.html", context)
