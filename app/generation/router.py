"""Streams and jobs: HTTP in, HTTP out. What to answer is decided by the portrait service; each route only
translates its outcome (an SSE or markdown stream, a 202, a stored article, an error) to HTTP.

Everything that can be a plain HTTP error (unknown artist or job: 404; bad parameters: 422; a refresh
without a token: 401; a POST another site sent: 403) is decided before the response starts. Once streaming,
every failure is an event.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from app.articles.deps import ArticlesDep
from app.articles.params import ArticleParamsDep
from app.articles.schemas import ArticlePublic
from app.articles.service import latest_url
from app.auth import ClientDep, TokenRequired
from app.catalog.reads import artist_reads
from app.errors import AppError, error_responses
from app.generation.deps import LastEventIdDep, PortraitsDep, SameSiteRequired
from app.generation.errors import SyncTimeout
from app.generation.portrait import (
    Accepted,
    Failed,
    NothingAfter,
    Outcome,
    PortraitRequest,
    Refused,
    RevisionRequest,
    StillWriting,
    Stored,
    Stream,
)
from app.generation.schemas import (
    AlreadyStored,
    JobAccepted,
    JobStatus,
    RevisionCreate,
    status_url,
    stream_url,
)
from app.kit.ids import MAX_ID, MIN_ID
from app.kit.read_cache import cacheable
from app.settings import SettingsDep
from app.streaming.responses import markdown_response, sse_response

router = APIRouter(prefix="/api/v1", tags=["generation"], responses=error_responses(422))

ArtistId = Annotated[int, Path(ge=MIN_ID, le=MAX_ID)]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
ARTIST_ARTICLE = "/collection/artists/{artist_id}/article"


# Each event as OpenAPI 3.2 describes one (`itemSchema`); its `data` is one JSON object (docs/contract "The stream").
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {"type": "string"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer", "minimum": 0},
    },
}
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The portrait as Server-Sent Events; with format=markdown, the bare markdown",
        "content": {
            "text/event-stream": {"itemSchema": SSE_EVENT},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    204: {"description": "Nothing after Last-Event-ID: the job has ended (an EventSource stops)"},
}
# Starting or joining a generation: refused by the limit (429) or the circuit (503).
GENERATION_REFUSALS = (429, 503)


def _stream_response(outcome: Outcome, format_: str, retry_ms: int) -> Response:
    if isinstance(outcome, NothingAfter):
        return Response(status_code=204)
    assert isinstance(outcome, Stream), outcome
    if format_ == "markdown":
        return markdown_response(outcome.batches, outcome.on_close)
    return sse_response(outcome.stream_id, outcome.batches, retry_ms, outcome.on_close)


def _refusal_error(refused: Refused) -> AppError:
    retry_after = None if refused.retry_after is None else round(refused.retry_after)
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    status = 429 if refused.code == "rate_limited" else 503
    return AppError.of(status, refused.code, refused.message, headers=headers, retry_after=retry_after)


@router.get(
    ARTIST_ARTICLE + "/stream",
    response_model=None,
    response_class=Response,  # no media type of its own: `responses` says what 200 is
    responses={**STREAM_RESPONSES, **error_responses(401, 404)},
)
async def artist_stream(
    http_request: Request,
    settings: SettingsDep,
    portraits: PortraitsDep,
    client: ClientDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    last_event_id: LastEventIdDep,
    refresh: bool = False,
    format: Annotated[Literal["sse", "markdown"], Query(description="markdown: the bare text")] = "sse",
) -> Response:
    """The portrait as Server-Sent Events: replayed if stored, else written live (joining a running job)."""
    request = PortraitRequest(
        artist_id, params.language, params.length, "stream", client, refresh, last_event_id, format
    )
    outcome = await portraits.open(request)
    if isinstance(outcome, Stream) and outcome.stored and last_event_id is None:
        # a whole replay: its frames are the same bytes for every reader until the artist's reads change
        cacheable(http_request, artist_reads(artist_id))
    return _stream_response(outcome, format, settings.sse_retry_ms)


@router.get(
    "/jobs/{job_id}/stream",
    response_model=None,
    response_class=Response,  # no media type of its own: `responses` says what 200 is
    responses={
        200: {"description": "The job's events", "content": {"text/event-stream": {"itemSchema": SSE_EVENT}}},
        204: STREAM_RESPONSES[204],
        **error_responses(404),
    },
)
async def job_stream(
    settings: SettingsDep, portraits: PortraitsDep, job_id: JobId, last_event_id: LastEventIdDep
) -> Response:
    return _stream_response(await portraits.follow_job(job_id, last_event_id), "sse", settings.sse_retry_ms)


@router.get("/jobs/{job_id}", responses=error_responses(404))
async def job_status(portraits: PortraitsDep, job_id: JobId) -> JobStatus:
    return JobStatus.of(await portraits.job(job_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=error_responses(401, 404))
async def cancel_job(_auth: TokenRequired, portraits: PortraitsDep, job_id: JobId) -> Response:
    await portraits.cancel(job_id)
    return Response(status_code=204)


@router.post(
    ARTIST_ARTICLE + "/jobs",
    status_code=202,
    responses={
        200: {"model": AlreadyStored, "description": "Already stored: nothing to start"},
        **error_responses(401, 403, 404, *GENERATION_REFUSALS),
    },
)
async def start_job(
    _same_site: SameSiteRequired,
    portraits: PortraitsDep,
    client: ClientDep,
    response: Response,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    refresh: bool = False,
) -> JobAccepted | AlreadyStored:
    """Asynchronous mode: the job runs to its end with or without readers; poll it or stream it."""
    request = PortraitRequest(artist_id, params.language, params.length, "job", client, refresh)
    outcome = await portraits.open(request)
    if isinstance(outcome, Stored):
        response.status_code = 200
        article = outcome.article
        return AlreadyStored(
            article_id=article.id,
            version=article.version,
            article_url=latest_url(article.artist_id, article.language, article.length),
        )
    if isinstance(outcome, Refused):
        raise _refusal_error(outcome)
    assert isinstance(outcome, Accepted), outcome
    return JobAccepted.of(outcome.job)


@router.post(
    ARTIST_ARTICLE + "/revisions",
    status_code=202,
    responses=error_responses(400, 401, 403, 404, 409, 413, 503),
)
async def start_revision(
    _same_site: SameSiteRequired,
    _auth: TokenRequired,
    portraits: PortraitsDep,
    client: ClientDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    revision: RevisionCreate,
) -> JobAccepted:
    """A new version of the latest stored one, written as its instruction asks (docs/revisions.md); the job
    runs to its end and streams like a first portrait. 409 `conflict` while a job writes this portrait."""
    request = RevisionRequest(artist_id, params.language, params.length, revision.instruction, client)
    outcome = await portraits.revise(request)
    if isinstance(outcome, Refused):
        raise _refusal_error(outcome)
    return JobAccepted.of(outcome.job)


@router.post(ARTIST_ARTICLE, responses=error_responses(401, 403, 404, *GENERATION_REFUSALS, 502, 504))
async def generate_now(
    _same_site: SameSiteRequired,
    portraits: PortraitsDep,
    articles: ArticlesDep,
    client: ClientDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    refresh: bool = False,
) -> ArticlePublic:
    """Synchronous mode: the finished article, or 504 `timeout` with the job's URLs after ATELIER_SYNC_WAIT."""
    request = PortraitRequest(artist_id, params.language, params.length, "sync", client, refresh)
    outcome = await portraits.open(request)
    if isinstance(outcome, Refused):
        raise _refusal_error(outcome)
    if isinstance(outcome, StillWriting):
        job_id = outcome.job.id
        raise SyncTimeout(job_id=job_id, status_url=status_url(job_id), stream_url=stream_url(job_id))
    if isinstance(outcome, Failed):
        status = 503 if outcome.error.code == "cancelled" else 502
        raise AppError.of(status, outcome.error.code, outcome.error.message, job_id=outcome.job_id)
    assert isinstance(outcome, Stored), outcome
    return articles.public_view(outcome.article, outcome.artist)
