"""Server-rendered pages. Each works without JavaScript and links its JSON twin; a deferred script
upgrades the portrait area to the live stream. Pages ask the services and render what they answer."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from markupsafe import Markup
from pydantic import ValidationError

from app.articles.deps import ArticlesDep
from app.articles.diff import diff_markdown
from app.articles.errors import ArticleNotFound
from app.articles.params import TARGET_WORDS, Length, as_length
from app.articles.render import render_markdown
from app.articles.service import ArticleService
from app.auth import Client, ClientDep, client_address, has_valid_token, token_is_valid
from app.catalog.deps import CatalogDep
from app.catalog.errors import ArtistNotFound
from app.catalog.models import Artist
from app.catalog.reads import CATALOG, artist_reads
from app.catalog.repository import ArtistQuery
from app.errors import AppError, Unauthorized
from app.generation.deps import PortraitsDep, SameSiteRequired
from app.generation.errors import JobNotFound, PortraitBusy
from app.generation.portrait import (
    Accepted,
    PortraitRequest,
    PortraitService,
    Refused,
    RevisionRequest,
    Stored,
)
from app.generation.positions import JOB_ID
from app.generation.schemas import MAX_INSTRUCTION, RevisionCreate, status_url, stream_url
from app.kit.http import get_and_head
from app.kit.ids import parse_id
from app.kit.read_cache import cacheable
from app.settings import Settings, SettingsDep
from app.web.contexts import (
    API_ARTISTS,
    LENGTHS,
    ArtistPage,
    CatalogPage,
    DiffPage,
    ErrorPage,
    JobPage,
    PortraitPanel,
    compared_version,
    stored_portrait,
    version_entry,
)
from app.web.templates import render


class PageRoute(APIRoute):
    """A page's route: whatever refuses it (an AppError raised by a dependency or by the route itself: an
    unknown artist, a cross-site form) is answered with the HTML error page, its status and message, rather
    than the API's JSON; a person reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        answer = super().get_route_handler()

        async def answer_with_a_page(request: Request) -> Response:
            try:
                return await answer(request)
            except AppError as error:
                page = render(request, "error.html", ErrorPage.of(error), status_code=error.status_code)
                page.headers.update(error.headers or {})
                return page

        return answer_with_a_page


router = APIRouter(include_in_schema=False, route_class=PageRoute)
PER_PAGE = 24
MAX_VERSION = 2**31 - 1  # a version number every database can compare
SHOWN_ID_CHARACTERS = 40


def _artist_not_found(artist_id: object) -> ArtistNotFound:
    shown = str(artist_id)
    if len(shown) > SHOWN_ID_CHARACTERS:
        shown = shown[:SHOWN_ID_CHARACTERS] + "…"
    return ArtistNotFound(f"No artist has the id {shown}.")


def _job_not_found() -> JobNotFound:
    return JobNotFound("This portrait job is unknown or has expired.")


async def _page_artist_id(artist_id: Annotated[str, Path()]) -> int:
    """The artist id in a page's address, read here rather than by FastAPI's `int`: an id that is not a
    number, or out of every database's range, is a page saying no artist has it (404), not the API's JSON
    422 nor, past the database's integer, an OverflowError (500)."""
    parsed = parse_id(artist_id)
    if parsed is None:
        raise _artist_not_found(artist_id)
    return parsed


async def _page_job_id(job_id: Annotated[str, Path()]) -> str:
    """A job id in a page's address: the same shape as every job id handed out, or an unknown job (404)."""
    if JOB_ID.fullmatch(job_id) is None:
        raise _job_not_found()
    return job_id


PageArtistId = Annotated[int, Depends(_page_artist_id)]
PageJobId = Annotated[str, Depends(_page_job_id)]


@get_and_head(router, "/", response_class=HTMLResponse)
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
    cacheable(request, CATALOG)
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
    instruction: str = "",
) -> tuple[Artist, PortraitPanel]:
    artist, article = await articles.lookup(artist_id, language, length)
    running = await portraits.running(artist.id, language, length)
    versions = await articles.portrait_versions(artist.id, language, length) if article is not None else ()
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
                articles.html(article),  # stored when the article was: no rendering on a read
                articles.is_stale(article, artist),
            )
            if article is not None
            else None
        ),
        running_job_id=running.id if running is not None else None,
        stream_url=f"{API_ARTISTS}/{artist.id}/article/stream?{query}",
        generate_action=f"/artists/{artist.id}/portrait",
        notice=notice,
        versions=tuple(version_entry(version, index == 0) for index, version in enumerate(versions)),
        revision_action=f"/artists/{artist.id}/revisions",
        revision_instruction=instruction,
        instruction_max=MAX_INSTRUCTION,
    )
    return artist, panel


@get_and_head(router, "/artists/{artist_id}", response_class=HTMLResponse)
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
        raise _artist_not_found(artist_id) from None
    if panel.running_job_id is None:  # a job's start invalidates the artist's reads: it shows on the page
        cacheable(request, artist_reads(artist.id))
    return render(request, "artist.html", ArtistPage.build(artist, panel))


@router.post("/artists/{artist_id}/portrait", response_model=None)
async def generate_from_form(
    _same_site: SameSiteRequired,
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
        raise _artist_not_found(artist_id) from None
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


@router.post("/artists/{artist_id}/revisions", response_model=None)
async def revise_from_form(
    _same_site: SameSiteRequired,
    request: Request,
    settings: SettingsDep,
    portraits: PortraitsDep,
    articles: ArticlesDep,
    artist_id: PageArtistId,
    language: Annotated[str, Form(max_length=10)] = "",
    length: Annotated[str, Form(max_length=10)] = "",
    instruction: Annotated[str, Form(max_length=4 * MAX_INSTRUCTION)] = "",
    token: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """The revision form, without JavaScript: a form cannot send an Authorization header, so the token
    travels in the POST's body (a password field), never in an address; with a valid one, the revision
    starts as a job that runs to its end and the reader lands on its page, which follows it."""
    chosen_language, chosen_length = _choice(settings, language, length)
    trusted = has_valid_token(request) or (
        bool(token) and token_is_valid(token.encode(), settings.api_tokens)
    )

    async def again(notice: str, status: int) -> Response:
        """The artist page again, saying why, with the instruction as it was typed."""
        try:
            artist, panel = await _panel(
                settings, portraits, articles, artist_id, chosen_language, chosen_length, notice, instruction
            )
        except ArtistNotFound:
            raise _artist_not_found(artist_id) from None
        return render(request, "artist.html", ArtistPage.build(artist, panel), status_code=status)

    try:
        wanted = RevisionCreate(instruction=instruction).instruction
    except ValidationError:
        return await again(
            f"Say what should change, in 1 to {MAX_INSTRUCTION:,} characters (line breaks are fine, "
            "other control characters are not).",
            422,
        )
    revision = RevisionRequest(
        artist_id,
        chosen_language,
        chosen_length,
        wanted,
        Client(trusted=trusted, address=client_address(request)),
    )
    try:
        outcome = await portraits.revise(revision)
    except ArtistNotFound:
        raise _artist_not_found(artist_id) from None
    except Unauthorized:
        return await again("A revision needs one of this service's API tokens; that one was refused.", 401)
    except PortraitBusy:
        return await again("A job is writing this portrait right now; ask again once it has finished.", 409)
    except ArticleNotFound:
        return await again("There is no stored portrait to revise yet: generate one first.", 404)
    if isinstance(outcome, Refused):
        return await again(*_refusal(outcome))
    return RedirectResponse(f"/artists/{artist_id}/portrait/jobs/{outcome.job.id}", status_code=303)


@get_and_head(router, "/artists/{artist_id}/versions/{version}/diff", response_class=HTMLResponse)
async def diff_page(
    request: Request,
    settings: SettingsDep,
    articles: ArticlesDep,
    artist_id: PageArtistId,
    version: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    language: Annotated[str | None, Query(max_length=10)] = None,
    length: Annotated[str | None, Query(max_length=10)] = None,
    against: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> HTMLResponse:
    """What version `version` changed: against the version it revised (or the one before it), or
    `against`. The markdown of both is compared; every piece is escaped, changes marked <ins>/<del>."""
    chosen_language, chosen_length = _choice(settings, language, length)
    try:
        artist, new = await articles.version(artist_id, chosen_language, chosen_length, version)
        old_version = against if against is not None else compared_version(new)
        if old_version is None or old_version == version:
            raise ArticleNotFound(f"Version {version} is the first: there is nothing to compare it with.")
        _, old = await articles.version(artist_id, chosen_language, chosen_length, old_version)
        _, latest = await articles.lookup(artist_id, chosen_language, chosen_length)
    except ArtistNotFound:
        raise _artist_not_found(artist_id) from None
    diff = diff_markdown(old.markdown, new.markdown)
    context = DiffPage.build(artist, old, new, diff, latest.version if latest is not None else version)
    cacheable(request, artist_reads(artist.id))
    return render(request, "diff.html", context)


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
    job_id: PageJobId,
) -> Response:
    try:
        job = await portraits.job(job_id)
    except JobNotFound:
        raise _job_not_found() from None
    if job.artist_id != artist_id:
        raise _job_not_found()
    artist_url = f"/artists/{artist_id}?{urlencode({'language': job.language, 'length': job.length})}"
    if job.status == "done":
        return RedirectResponse(artist_url, status_code=303)
    try:
        artist, panel = await _panel(settings, portraits, articles, artist_id, job.language, job.length)
    except ArtistNotFound:
        raise _artist_not_found(artist_id) from None
    revision = job.revision
    context = JobPage(
        title=f"Revising: {artist.name}" if revision is not None else f"Writing: {artist.name}",
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
        revises_version=revision.revises_version if revision is not None else None,
        instruction=revision.instruction if revision is not None else None,
    )
    return render(request, "job.html", context)
