"""Generation jobs: a job owns one upstream call and writes what happens to its event log; requests only
read that log. One job per (artist, language, length) at a time: a second reader joins the first's job.

Lifetimes (every one bounded):
- a job started by a stream is cancelled `ATELIER_JOB_GRACE` seconds after its last reader left (or after
  it started, if no reader ever came), long enough for a reconnect to resume it;
- a job started by the API (`POST .../jobs`, the synchronous route) runs to its end;
- the upstream call itself is bounded by the client's connect, idle and total timeouts;
- a finished job's log and status stay `ATELIER_JOB_RETENTION` seconds for resume and polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.articles.models import Article
from app.articles.service import ArticleDraft, ArticleService
from app.generation import events
from app.generation.prompt import ArtistFacts, build_messages
from app.generation.ratelimit import GenerationLimiter
from app.kit.text import count_words
from app.llm import errors
from app.llm.breaker import Breaker, Permit
from app.llm.client import Finish, LLMClient, TextDelta
from app.llm.errors import UpstreamError
from app.settings import Settings
from app.streaming.broker import Broker

log = logging.getLogger("atelier.jobs")

JobKey = tuple[int, str, str]
Origin = Literal["stream", "api"]
Status = Literal["queued", "running", "done", "error", "cancelled"]


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


@dataclass
class Job:
    id: str
    artist: ArtistFacts
    language: str
    length: str
    origin: Origin
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    status: Status = "queued"
    readers: int = 0
    parts: list[str] = field(default_factory=list)
    article_id: int | None = None
    version: int | None = None
    error: dict[str, object] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    grace: asyncio.TimerHandle | None = None

    @property
    def key(self) -> JobKey:
        return (self.artist.id, self.language, self.length)

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    @property
    def words(self) -> int:
        return count_words("".join(self.parts))


class JobManager:
    def __init__(
        self,
        *,
        settings: Settings,
        broker: Broker,
        breaker: Breaker,
        llm: LLMClient,
        writer: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        articles: ArticleService,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.breaker = breaker
        self.llm = llm
        self.writer = writer
        self.sessionmaker = sessionmaker
        self.articles = articles
        self.limiter = GenerationLimiter(settings.generation_rate)
        self.jobs: dict[str, Job] = {}  # running and retained jobs, by id
        self.running: dict[JobKey, Job] = {}  # the one running job per key
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._starting = asyncio.Lock()

    # --- starting and joining -------------------------------------------------------------------------

    def find_running(self, artist_id: int, language: str, length: str) -> Job | None:
        return self.running.get((artist_id, language, length))

    async def start_or_join(
        self, facts: ArtistFacts, language: str, length: str, *, origin: Origin, client: str | None
    ) -> Job:
        """Join the running job for (artist, language, length), or start one.

        Raises `RateLimited` (only a new generation counts; `client=None` for token holders) or
        `UpstreamError('upstream_unavailable')` while the circuit is open, before any job exists."""
        # One start at a time: between the check for a running job and its registration there are awaits
        # (the rate limiter, the broker), and two readers arriving together must share one job.
        async with self._starting:
            job = self.find_running(facts.id, language, length)
            if job is not None:
                if origin == "api":
                    self._keep_alive(job)
                return job
            if client is not None:
                retry_after = await self.limiter.hit(client)
                if retry_after is not None:
                    raise RateLimited(retry_after)
            permit = self.breaker.acquire()
            job = Job(id=uuid.uuid4().hex, artist=facts, language=language, length=length, origin=origin)
            try:
                await self.broker.create(job.id)
            except BaseException:
                permit.release()  # no call was made: a trial permit must not stay taken
                raise
            self.jobs[job.id] = job
            self.running[job.key] = job
            job.task = asyncio.create_task(self._run(job, permit), name=f"job-{job.id}")
            if origin == "stream":
                self._arm_grace(job)  # a stream that never attaches must not leave the job running
        log.info("job %s started for artist %s (%s, %s)", job.id, facts.id, language, length)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    # --- readers -------------------------------------------------------------------------------------

    def attach(self, job: Job) -> None:
        job.readers += 1
        if job.grace is not None:
            job.grace.cancel()
            job.grace = None

    def detach(self, job: Job) -> None:
        job.readers = max(0, job.readers - 1)
        if job.readers == 0 and job.origin == "stream" and job.running:
            self._arm_grace(job)

    def _arm_grace(self, job: Job) -> None:
        if job.grace is not None:
            job.grace.cancel()
        loop = asyncio.get_running_loop()
        job.grace = loop.call_later(self.settings.job_grace, self._grace_expired, job)

    def _grace_expired(self, job: Job) -> None:
        job.grace = None
        if job.readers == 0 and job.origin == "stream" and job.running:
            log.info("job %s: no reader for %ss, cancelling", job.id, self.settings.job_grace)
            self.cancel(job)

    def _keep_alive(self, job: Job) -> None:
        job.origin = "api"
        if job.grace is not None:
            job.grace.cancel()
            job.grace = None

    # --- cancelling ----------------------------------------------------------------------------------

    def cancel(self, job: Job) -> bool:
        if job.task is None or job.task.done():
            return False
        job.task.cancel()
        return True

    def cancel_artist(self, artist_id: int) -> int:
        jobs = [job for job in self.running.values() if job.artist.id == artist_id]
        return sum(self.cancel(job) for job in jobs)

    async def aclose(self) -> None:
        """At shutdown: cancel every running job and wait for them to write their last event."""
        tasks = [job.task for job in self.running.values() if job.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        for handle in self._expiry.values():
            handle.cancel()

    # --- the job itself ------------------------------------------------------------------------------

    async def _append_text(self, job: Job, delta: str) -> None:
        job.parts.append(delta)
        await self.broker.append(job.id, "text", events.text(delta))

    async def _run(self, job: Job, permit: Permit) -> None:
        started = time.monotonic()
        ttft_ms: int | None = None
        job.status = "running"
        try:
            await self.broker.append(
                job.id,
                "metadata",
                events.metadata(
                    job_id=job.id,
                    artist_id=job.artist.id,
                    artist_name=job.artist.name,
                    model=self.llm.config.model,
                    writer=self.writer,
                    cached=False,
                    article_id=None,
                    version=None,
                    language=job.language,
                    length=job.length,
                    started_at=job.started_at,
                ),
            )
            messages = build_messages(self.settings.system_prompt, job.artist, job.language, job.length)
            finish: Finish | None = None
            async with aclosing(self.llm.stream(messages)) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, TextDelta):
                        if ttft_ms is None:
                            ttft_ms = round((time.monotonic() - started) * 1000)
                            permit.succeed()  # the trial succeeds at its first text token
                        await self._append_text(job, chunk.text)
                    else:
                        finish = chunk
            markdown = "".join(job.parts)
            if finish is None or not markdown.strip():
                raise errors.upstream_bad_response("The writing service returned an empty portrait.")
            permit.succeed()
            usage = None
            if finish.usage is not None:
                usage = {
                    "prompt_tokens": finish.usage.prompt_tokens,
                    "completion_tokens": finish.usage.completion_tokens,
                }
            duration_ms = round((time.monotonic() - started) * 1000)
            draft = ArticleDraft(
                artist_id=job.artist.id,
                language=job.language,
                length=job.length,
                markdown=markdown,
                model=self.llm.config.model,
                writer=self.writer,
                finish_reason=finish.reason,
                usage=usage,
                duration_ms=duration_ms,
                ttft_ms=ttft_ms,
                job_id=job.id,
            )
            article = await self._store(draft)
            job.article_id, job.version = article.id, article.version
            await self.broker.append(
                job.id,
                "done",
                events.done(
                    article_id=article.id,
                    version=article.version,
                    words=article.words,
                    finish_reason=finish.reason,
                    usage=usage,
                    duration_ms=duration_ms,
                ),
            )
            job.status = "done"
        except UpstreamError as exc:
            permit.fail(exc)
            await self._fail(job, exc.code, exc.message, exc.retry_after)
        except asyncio.CancelledError:
            permit.release()  # a reader leaving says nothing about the upstream's health
            await self._fail(job, "cancelled", "The generation was cancelled.", None, status="cancelled")
        except Exception:
            log.exception("job %s failed", job.id)
            permit.release()
            await self._fail(
                job, "internal_error", "Something went wrong on our side; it has been logged.", None
            )
        finally:
            await self._finish(job)

    async def _store(self, draft: ArticleDraft) -> Article:
        """Store a complete portrait even if the job is cancelled meanwhile: a reader leaving at this very
        moment must not throw away a finished article (nor leave it half-reported)."""
        store = asyncio.ensure_future(self.articles.store(self.sessionmaker, draft))
        try:
            return await asyncio.shield(store)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return await store

    async def _fail(
        self, job: Job, code: str, message: str, retry_after: float | None, status: Status = "error"
    ) -> None:
        job.status = status
        job.error = {"code": code, "message": message}
        log.info("job %s ended: %s", job.id, code)
        await self.broker.append(job.id, "error", events.error(code, message, retry_after))

    async def _finish(self, job: Job) -> None:
        if self.running.get(job.key) is job:
            del self.running[job.key]
        if job.grace is not None:
            job.grace.cancel()
            job.grace = None
        retention = self.settings.job_retention
        await self.broker.close(job.id, retention)
        job.finished.set()
        self._expiry[job.id] = asyncio.get_running_loop().call_later(retention, self._forget, job.id)

    def _forget(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self._expiry.pop(job_id, None)
