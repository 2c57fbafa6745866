"""Streams and jobs: thin routes over StreamService and JobManager.

Everything that can be a plain HTTP error (unknown artist or job: 404; bad parameters: 422; a refresh
without a token: 401) is decided before the response starts. Once streaming, every failure is an event.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from app.articles.models import Article
from app.articles.service import ArticleService
from app.auth import has_valid_token, require_token
from app.catalog.models import Artist
from app.catalog.service import catalog_service
from app.deps import ArticlesDep, JobsDep, SessionmakerDep, SettingsDep
from app.errors import AppError, NotFound, error_response
from app.generation.jobs import Job, JobManager, RateLimited
from app.generation.params import ArticleParams, ArticleParamsDep, ResumeDep
from app.generation.ratelimit import client_address
from app.generation.service import StreamPlan, StreamService, facts_of
from app.llm.errors import UpstreamError
from app.streaming.responses import markdown_response, sse_response

router = APIRouter(prefix="/api/v1", tags=["generation"])

ArtistId = Annotated[int, Path(ge=1, le=2**31 - 1)]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
ARTIST_ARTICLE = "/collection/artists/{artist_id}/article"


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "No job has this id (finished jobs are kept for ATELIER_JOB_RETENTION seconds)."


class SyncTimeout(AppError):
    status_code = 504
    code = "timeout"
    message = "The portrait is still being written; follow the job instead."


async def _artist_and_stored(
    request: Request,
    sessionmaker: Any,
    articles: ArticleService,
    artist_id: int,
    params: ArticleParams,
    refresh: bool,
) -> tuple[Artist, Article | None]:
    """What every generation route decides before anything starts: 401 for a refresh without a token, 404
    for an unknown artist, then the stored article (unless refreshing), in one short session."""
    if refresh:
        await require_token(request)
    async with sessionmaker() as session:
        artist = await catalog_service.get(session, artist_id)
        stored = None
        if not refresh:
            stored = await articles.find_latest(session, artist.id, params.language, params.length)
    return artist, stored


def _client(request: Request) -> str | None:
    """Who a new generation is counted against; None for token holders, who are not limited."""
    if has_valid_token(request):
        return None
    return client_address(request, request.state.settings.trusted_proxies)


def _job_urls(job_id: str) -> dict[str, str]:
    return {"status_url": f"/api/v1/jobs/{job_id}", "stream_url": f"/api/v1/jobs/{job_id}/stream"}


def _respond(plan: StreamPlan, format_: str, retry_ms: int) -> Response:
    if plan.past_end:
        return Response(status_code=204)
    if format_ == "markdown":
        return markdown_response(plan.batches, plan.on_close)
    return sse_response(plan.stream_id, plan.batches, retry_ms, plan.on_close)


@router.get(ARTIST_ARTICLE + "/stream", response_model=None)
async def artist_stream(
    request: Request,
    settings: SettingsDep,
    sessionmaker: SessionmakerDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    resume: ResumeDep,
    refresh: bool = False,
    format: Annotated[Literal["sse", "markdown"], Query(description="markdown: the bare text")] = "sse",
) -> Response:
    """The portrait as Server-Sent Events: replayed if stored, else written live (joining a running job)."""
    artist, stored = await _artist_and_stored(request, sessionmaker, articles, artist_id, params, refresh)
    streams = StreamService(jobs, articles)
    if resume is not None and format == "sse":
        stream_id, seq = resume
        plan = await _resumed(streams, sessionmaker, artist, stream_id, seq)
        if plan is not None:
            return _respond(plan, format, settings.sse_retry_ms)
    if stored is not None:
        return _respond(streams.replay(stored, artist), format, settings.sse_retry_ms)
    plan = await streams.start(artist, params.language, params.length, client=_client(request))
    return _respond(plan, format, settings.sse_retry_ms)


async def _resumed(
    streams: StreamService, sessionmaker: Any, artist: Artist, stream_id: str, seq: int
) -> StreamPlan | None:
    """The rest of the stream the reader was on, or None when it is gone (then the reader starts afresh)."""
    if stream_id.startswith("replay-") and stream_id[7:].isdigit():
        async with sessionmaker() as session:
            article = await streams.articles.find_by_id(session, int(stream_id[7:]))
        if article is not None and article.artist_id == artist.id:
            return streams.replay(article, artist, after=seq)
        return None
    job = streams.jobs.get(stream_id)
    if job is not None and job.artist.id == artist.id:
        return await streams.follow(job, after=seq)
    return None


@router.get("/jobs/{job_id}/stream", response_model=None)
async def job_stream(
    settings: SettingsDep, jobs: JobsDep, articles: ArticlesDep, job_id: JobId, resume: ResumeDep
) -> Response:
    job = _job(jobs, job_id)
    after = resume[1] if resume is not None and resume[0] == job_id else 0
    return _respond(await StreamService(jobs, articles).follow(job, after), "sse", settings.sse_retry_ms)


def _job(jobs: JobManager, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None:
        raise JobNotFound()
    return job


def _status(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "artist_id": job.artist.id,
        "language": job.language,
        "length": job.length,
        "words": job.words,
        "article_id": job.article_id,
        "version": job.version,
        "error": job.error,
        "readers": job.readers,
        **_job_urls(job.id),
    }


@router.get("/jobs/{job_id}")
async def job_status(jobs: JobsDep, job_id: JobId) -> dict[str, Any]:
    return _status(_job(jobs, job_id))


@router.delete("/jobs/{job_id}", status_code=204)
async def cancel_job(request: Request, jobs: JobsDep, job_id: JobId) -> Response:
    await require_token(request)
    job = _job(jobs, job_id)
    if jobs.cancel(job):
        await asyncio.wait_for(job.finished.wait(), timeout=5)
    return Response(status_code=204)


async def _api_job(request: Request, jobs: JobManager, artist: Artist, language: str, length: str) -> Job:
    try:
        return await jobs.start_or_join(
            facts_of(artist), language, length, origin="api", client=_client(request)
        )
    except RateLimited as exc:
        retry_after = round(exc.retry_after)
        raise AppError.of(
            429,
            "rate_limited",
            "Too many new portraits from this address; try again later.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        ) from None
    except UpstreamError as exc:
        headers = {"Retry-After": str(round(exc.retry_after))} if exc.retry_after is not None else None
        raise AppError.of(503, exc.code, exc.message, headers=headers, retry_after=exc.retry_after) from None


@router.post(ARTIST_ARTICLE + "/jobs", status_code=202, response_model=None)
async def start_job(
    request: Request,
    sessionmaker: SessionmakerDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    refresh: bool = False,
) -> JSONResponse:
    """Asynchronous mode: the job runs to its end with or without readers; poll it or stream it."""
    artist, stored = await _artist_and_stored(request, sessionmaker, articles, artist_id, params, refresh)
    if stored is not None:
        query = urlencode({"language": params.language, "length": params.length})
        body = {
            "job_id": None,
            "status": "done",
            "article_id": stored.id,
            "version": stored.version,
            "article_url": f"/api/v1/collection/artists/{artist.id}/article?{query}",
        }
        return JSONResponse(body, status_code=200)
    job = await _api_job(request, jobs, artist, params.language, params.length)
    return JSONResponse({"job_id": job.id, "status": job.status, **_job_urls(job.id)}, status_code=202)


@router.post(ARTIST_ARTICLE, response_model=None)
async def generate_now(
    request: Request,
    settings: SettingsDep,
    sessionmaker: SessionmakerDep,
    jobs: JobsDep,
    articles: ArticlesDep,
    artist_id: ArtistId,
    params: ArticleParamsDep,
    refresh: bool = False,
) -> JSONResponse:
    """Synchronous mode: the finished article, or 504 `timeout` with the job's URLs after ATELIER_SYNC_WAIT."""
    artist, article = await _artist_and_stored(request, sessionmaker, articles, artist_id, params, refresh)
    if article is None:
        job = await _api_job(request, jobs, artist, params.language, params.length)
        try:
            await asyncio.wait_for(job.finished.wait(), timeout=settings.sync_wait)
        except TimeoutError:
            urls = _job_urls(job.id)
            raise SyncTimeout(
                job_id=job.id, status_url=urls["status_url"], stream_url=urls["stream_url"]
            ) from None
        if job.article_id is None:
            error = job.error or {"code": "internal_error", "message": "The generation failed."}
            status = 503 if error["code"] == "cancelled" else 502
            return error_response(status, str(error["code"]), str(error["message"]), job_id=job.id)
        async with sessionmaker() as session:
            article = await articles.find_by_id(session, job.article_id)
    assert article is not None
    return JSONResponse(articles.public_view(article, artist).model_dump(mode="json"))
