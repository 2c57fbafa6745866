"""Server-rendered pages. Each works without JavaScript and links its JSON twin; a deferred script
upgrades the portrait area to the live stream. Pages ask the services and render what they answer."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from app.articles.deps import ArticlesDep
from app.articles.params import TARGET_WORDS, Length, as_length
from app.articles.render import render_markdown
from app.articles.service import ArticleService
from app.auth import ClientDep
from app.catalog.deps import CatalogDep
from app.catalog.errors import ArtistNotFound
from app.catalog.models import Artist
from app.catalog.repository import ArtistQuery
from app.generation.deps import PortraitsDep
from app.generation.errors import JobNotFound
from app.generation.portrait import Accepted, PortraitRequest, PortraitService, Refused, Stored
from app.generation.schemas import status_url, stream_url
from app.settings import Settings, SettingsDep
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
PageArtistId = int


@router.get("/", response_class=HTMLResponse)
async def catalog_page(
    catalog: CatalogDep,
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    genre: Annotated[str, Query(max_length=60)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    artists, total = await catalog.search(
        ArtistQuery(q=q or None, genre=genre or None, page=page, per_page=PER_PAGE)
    )
    context = CatalogPage.build(
        artists=artists,
        total=total,
        page=page,
        per_page=PER_PAGE,
        q=q,
        genre=genre,
        genres=await catalog.genres(),
    )
    return render(request, "catalog.html", context)


def _choice(settings: Settings, language: str | None, length: str | None) -> tuple[str, Length]:
    """The page's language and length; an unknown value falls back to the default instead of an error."""
    chosen_language = language if language in settings.languages else settings.default_language
    return chosen_language, as_length(length) or "long"


async def _panel(
    settings: Settings,
    portraits: PortraitService,
    articles: ArticleService,
    artist_id: int,
    language: str,
    length: Length,
    notice: str | None = None,
) -> tuple[Artist, PortraitPanel]:
    artist, article = await articles.lookup(artist_id, language, length)
    running = portraits.running(artist.id, language, length)
    query = urlencode({"language": language, "length": length})
    panel = PortraitPanel(
        artist_id=artist.id,
        language=language,
        length=length,
        languages=settings.languages,
        lengths=LENGTHS,
        target_words=TARGET_WORDS[length],
        writer=portraits.writer_kind,
        stored=(
            stored_portrait(
                article,
                render_markdown(article.markdown),
                articles.is_stale(article, artist.updated_at),
            )
            if article is not None
            else None
        ),
        running_job_id=running.id if running is not None else None,
        stream_url=f"{API_ARTISTS}/{artist.id}/article/stream?{query}",
        generate_action=f"/artists/{artist.id}/portrait",
        notice=notice,
    )
    return artist, panel


def _not_found(request: Request, artist_id: int) -> HTMLResponse:
    context = ErrorPage(title="Artist not found", message=f"No artist has the id {artist_id}.")
    return render(request, "error.html", context, status_code=404)


@router.get("/artists/{artist_id}", response_class=HTMLResponse)
async def artist_page(
    request: Request,
    settings: SettingsDep,
    portraits: PortraitsDep,
    articles: ArticlesDep,
    artist_id: PageArtistId,
    language: Annotated[str | None, Query(max_length=10)] = None,
    length: Annotated[str | None, Query(max_length=10)] = None,
) -> HTMLResponse:
    try:
        artist, panel = await _panel(
            settings, portraits, articles, artist_id, *_choice(settings, language, length)
        )
    except ArtistNotFound:
        return _not_found(request, artist_id)
    return render(request, "artist.html", ArtistPage.build(artist, panel))


@router.post("/artists/{artist_id}/portrait", response_model=None)
async def generate_from_form(
    request: Request,
    settings: SettingsDep,
    portraits: PortraitsDep,
    articles: ArticlesDep,
    client: ClientDep,
    artist_id: PageArtistId,
    language: Annotated[str, Form(max_length=10)] = "",
    length: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """The Generate button without JavaScript: start a job that runs to its end, then show its progress."""
    chosen_language, chosen_length = _choice(settings, language, length)
    try:
        outcome = await portraits.open(
            PortraitRequest(artist_id, chosen_language, chosen_length, origin="job", client=client)
        )
    except ArtistNotFound:
        return _not_found(request, artist_id)
    if isinstance(outcome, Stored):
        query = urlencode({"language": chosen_language, "length": chosen_length})
        return RedirectResponse(f"/artists/{artist_id}?{query}", status_code=303)
    if isinstance(outcome, Refused):
        notice, status = _refusal(outcome)
        artist, panel = await _panel(
            settings, portraits, articles, artist_id, chosen_language, chosen_length, notice
        )
        return render(request, "artist.html", ArtistPage.build(artist, panel), status_code=status)
    assert isinstance(outcome, Accepted), outcome
    return RedirectResponse(f"/artists/{artist_id}/portrait/jobs/{outcome.job.id}", status_code=303)


def _refusal(refused: Refused) -> tuple[str, int]:
    wait = round(refused.retry_after) if refused.retry_after else None
    if refused.code == "rate_limited":
        return f"Too many new portraits from your address; try again in {wait} seconds.", 429
    return refused.message + (f" Try again in {wait} seconds." if wait else ""), 503


@router.get("/artists/{artist_id}/portrait/jobs/{job_id}", response_model=None)
async def job_page(
    request: Request,
    settings: SettingsDep,
    portraits: PortraitsDep,
    articles: ArticlesDep,
    artist_id: PageArtistId,
    job_id: str,
) -> Response:
    try:
        job = portraits.job(job_id)
    except JobNotFound:
        job = None
    if job is None or job.artist_id != artist_id:
        gone = ErrorPage(title="Portrait not found", message="This portrait job is unknown or has expired.")
        return render(request, "error.html", gone, status_code=404)
    artist_url = f"/artists/{artist_id}?{urlencode({'language': job.language, 'length': job.length})}"
    if job.status == "done":
        return RedirectResponse(artist_url, status_code=303)
    try:
        artist, panel = await _panel(settings, portraits, articles, artist_id, job.language, job.length)
    except ArtistNotFound:
        return _not_found(request, artist_id)
    context = JobPage(
        title=f"Writing: {artist.name}",
        artist_id=artist.id,
        artist_name=artist.name,
        job_id=job.id,
        status=job.status,
        words=job.words,
        target_words=TARGET_WORDS[job.length],
        partial_html=Markup(render_markdown(job.text)),  # safe: raw HTML off, links filtered
        error=job.error.message if job.error else None,
        json_url=status_url(job.id),
        stream_url=stream_url(job.id),
        artist_url=artist_url,
        panel=panel,
    )
    return render(request, "job.html", context)
