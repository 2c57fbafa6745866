"""The one owner of "a portrait request": every route, the page's form and the command line ask here,
and only here is it decided whether the answer comes from the store (a replay or the stored article),
resumes a job's log, joins the running job, or starts a new one.

What is decided before anything starts is raised as an HTTP-shaped error (401 for a refresh without a
token, 404 for an unknown artist or job); everything else is an `Outcome` the caller translates to its
medium (an SSE stream, a 202, a redirect, a line on a terminal). For a stream, a refusal (rate limit, open
circuit) is itself a stream: `metadata` then `error`, which an EventSource can see.

A revision (`revise`, docs/revisions.md) is decided here too: it rewrites the latest stored version as a
job of its own under the same key, so it never runs beside another job for that portrait (409 instead).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from app.articles.errors import ArticleNotFound
from app.articles.models import Article
from app.articles.params import Length
from app.articles.service import ArticleService
from app.auth import Client
from app.catalog.models import Artist
from app.catalog.schemas import ArtistFacts
from app.errors import Unauthorized
from app.generation.errors import (
    BROKER_UNAVAILABLE_MESSAGE,
    RATE_LIMITED_MESSAGE,
    BrokerDown,
    JobNotFound,
    PortraitBusy,
)
from app.generation.jobs import Job, JobError, JobKey, Origin, Revision
from app.generation.positions import ReplayPosition, parse_position, replay_stream_id, seq_in
from app.generation.ratelimit import GenerationLimiter, LimitUnavailable
from app.generation.registry import JobRegistry
from app.generation.replay import replay_events
from app.generation.run import GenerationRun, error_event
from app.llm.breaker import Breaker
from app.llm.errors import UpstreamError
from app.streaming.broker import Broker, BrokerUnavailable
from app.streaming.events import Event
from app.streaming.responses import follow_list, follow_log

Format = Literal["sse", "markdown"]
Batches = AsyncIterator[list[Event] | None]


@dataclass(frozen=True)
class PortraitRequest:
    artist_id: int
    language: str
    length: Length
    origin: Origin
    client: Client
    refresh: bool = False
    resume: str | None = None  # `Last-Event-ID` as the reader sent it
    format: Format = "sse"  # the bare markdown cannot resume (it carries no ids)


@dataclass(frozen=True)
class RevisionRequest:
    """A new version of the latest stored portrait of (artist, language, length), as `instruction` asks."""

    artist_id: int
    language: str
    length: Length
    instruction: str
    client: Client


# --- outcomes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """A reader's events: from `batches`, under `stream_id`; call `on_close` when the reader is gone."""

    stream_id: str
    batches: Batches
    on_close: Callable[[], None] | None = None
    stored: bool = False  # a replay of a stored article: the same bytes for every reader until it changes


@dataclass(frozen=True)
class NothingAfter:
    """The reader already has every event of a finished stream (HTTP 204: an EventSource stops)."""


@dataclass(frozen=True)
class Stored:
    artist: Artist
    article: Article


@dataclass(frozen=True)
class Accepted:
    job: Job


@dataclass(frozen=True)
class Refused:
    code: str  # rate_limited, or the circuit's upstream_unavailable
    message: str
    retry_after: float | None


@dataclass(frozen=True)
class Failed:
    job_id: str
    error: JobError


@dataclass(frozen=True)
class StillWriting:
    job: Job


Outcome = Stream | NothingAfter | Stored | Accepted | Refused | Failed | StillWriting


class PortraitService:
    def __init__(
        self,
        *,
        articles: ArticleService,
        broker: Broker,
        registry: JobRegistry,
        run: GenerationRun,
        breaker: Breaker,
        limiter: GenerationLimiter,
        sync_wait: float,
    ) -> None:
        self.articles = articles
        self.broker = broker
        self.registry = registry
        self.run = run
        self.breaker = breaker
        self.limiter = limiter
        self.sync_wait = sync_wait

    @property
    def writer_kind(self) -> str:
        """Who would write a new portrait: "demo" or "upstream"."""
        return self.run.writer.kind

    # --- the decision ----------------------------------------------------------------------------------

    async def open(self, request: PortraitRequest) -> Outcome:
        if request.refresh and not request.client.trusted:
            raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
        artist, stored = await self.articles.lookup(request.artist_id, request.language, request.length)
        if request.refresh:
            stored = None
        if request.origin == "stream":
            if request.resume is not None and request.format == "sse":
                resumed = await self._resumed(artist, request)
                if resumed is not None:
                    return resumed
            if stored is not None:
                return self._replay(stored, artist)
        elif stored is not None:
            return Stored(artist, stored)
        started = await self._start_or_join(artist, request)
        if isinstance(started, Refused):
            if request.origin == "stream":
                return self._refusal_stream(artist, request, started)
            return started
        if request.origin == "stream":
            return await self._follow(started, after=0)
        if request.origin == "job":
            return Accepted(started)
        return await self._wait(started)

    async def _start_or_join(self, artist: Artist, request: PortraitRequest) -> Job | Refused:
        try:
            return await self._start_or_join_job(artist, request)
        except BrokerUnavailable:
            # Several processes and Redis cannot be reached: no process can know whether another runs this
            # portrait, so none starts it (stored portraits are still served).
            return Refused("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE, None)

    async def _start_or_join_job(self, artist: Artist, request: PortraitRequest) -> Job | Refused:
        key = (artist.id, request.language, request.length)
        async with self.registry.starting(key):
            job = await self.registry.find_running(key)
            if job is not None:
                await self.registry.keep_alive(job, request.origin)
                return job
            try:
                permit = await self.breaker.acquire()
            except UpstreamError as exc:
                return Refused(exc.code, exc.message, exc.retry_after)
            # Counted only once the circuit let it through: a refused request started no generation.
            if not request.client.trusted:
                try:
                    retry_after = await self.limiter.hit(request.client.address)
                except LimitUnavailable:
                    await permit.release()
                    raise BrokerUnavailable("the generation limit cannot be read") from None
                if retry_after is not None:
                    await permit.release()
                    return Refused("rate_limited", RATE_LIMITED_MESSAGE, retry_after)
            job = _new_job(artist, request.language, request.length, request.origin)
            try:
                running = await self.registry.launch(job, lambda job: self.run(job, permit))
            except BaseException:
                await permit.release()  # no call was made: a trial permit must not stay taken
                raise
            if running is not job:  # another process claimed this portrait first: join its job
                await permit.release()
                await self.registry.keep_alive(running, request.origin)
            return running

    # --- revisions -------------------------------------------------------------------------------------

    async def revise(self, request: RevisionRequest) -> Accepted | Refused:
        """Start a revision of the latest stored version: a job that runs to its end (like `POST .../jobs`),
        whose conversation is built from that version and the instruction. Raised before anything starts:
        401 without a token, 404 for an unknown artist or when nothing is stored to revise, 409
        (`PortraitBusy`) while a job writes this portrait on any process. Refused: the circuit is open, or
        (several processes) Redis cannot be reached."""
        if not request.client.trusted:
            raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})
        try:
            return await self._start_revision(request)
        except BrokerUnavailable:
            return Refused("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE, None)

    async def _start_revision(self, request: RevisionRequest) -> Accepted | Refused:
        key: JobKey = (request.artist_id, request.language, request.length)
        async with self.registry.starting(key):
            # The running job first, then the latest version: a job that ends in between has stored its
            # version by the time it is read, and a revision never starts from a version about to be replaced.
            if await self.registry.find_running(key) is not None:
                raise PortraitBusy()
            artist, latest = await self.articles.lookup(*key)
            if latest is None:
                raise ArticleNotFound(
                    f"No {request.length} portrait in {request.language!r} is stored for {artist.name} yet: "
                    "there is nothing to revise."
                )
            try:
                permit = await self.breaker.acquire()
            except UpstreamError as exc:
                return Refused(exc.code, exc.message, exc.retry_after)
            revision = Revision(
                instruction=request.instruction,
                revises_version=latest.version,
                markdown=latest.markdown,
                article_id=latest.id,
            )
            job = _new_job(artist, request.language, request.length, "job", revision)
            try:
                running = await self.registry.launch(job, lambda job: self.run(job, permit))
            except BaseException:
                await permit.release()
                raise
            if running is not job:  # another process claimed this portrait meanwhile
                await permit.release()
                raise PortraitBusy()
        return Accepted(job)

    # --- streams ---------------------------------------------------------------------------------------

    async def follow_job(self, job_id: str, resume: str | None) -> Stream | NothingAfter:
        """The job's own stream (`/jobs/{id}/stream`), from where the reader was."""
        job = await self.job(job_id)
        try:
            return await self._follow(job, after=seq_in(job.id, resume))
        except BrokerUnavailable:
            raise BrokerDown() from None

    async def _follow(self, job: Job, after: int) -> Stream | NothingAfter:
        last = await self.broker.last_seq(job.id)
        if last is None or (not job.running and after >= last):
            return NothingAfter()  # retention ended meanwhile, or the reader has it all
        if after > last:
            after = 0  # a position this log never reached: the reader's id is not ours, start afresh
        self.registry.attach(job)
        return Stream(
            stream_id=job.id,
            batches=follow_log(self.broker, job.id, after),
            on_close=lambda: self.registry.detach(job),
        )

    def _replay(self, article: Article, artist: Artist, after: int = 0) -> Stream | NothingAfter:
        stale = self.articles.is_stale(article, artist)
        events = replay_events(article, artist.name, stale)
        if after >= len(events):
            return NothingAfter()
        return Stream(stream_id=replay_stream_id(article.id), batches=follow_list(events, after), stored=True)

    async def _resumed(self, artist: Artist, request: PortraitRequest) -> Stream | NothingAfter | None:
        """The rest of the stream the reader was on, or None when it is gone or is not a stream of the
        portrait asked for (another artist, language or length): then the reader starts afresh."""
        key = (artist.id, request.language, request.length)
        position = parse_position(request.resume)
        if isinstance(position, ReplayPosition):
            found = await self.articles.find_with_artist(position.article_id)
            if found is not None and (found[0].artist_id, found[0].language, found[0].length) == key:
                return self._replay(found[0], artist, after=position.seq)
        elif position is not None:
            try:
                job = await self.registry.find(position.job_id)
                if job is not None and job.key == key:
                    return await self._follow(job, after=position.seq)
            except BrokerUnavailable:
                return None  # the log cannot be read now: the reader is answered as a new one
        return None

    def _refusal_stream(self, artist: Artist, request: PortraitRequest, refused: Refused) -> Stream:
        metadata = self.run.metadata(
            job_id=None,
            artist_id=artist.id,
            artist_name=artist.name,
            language=request.language,
            length=request.length,
            started_at=datetime.now(UTC),
        )
        events = [
            Event(seq=1, payload=metadata),
            Event(seq=2, payload=error_event(refused.code, refused.message, refused.retry_after)),
        ]
        return Stream(stream_id=f"refused-{uuid.uuid4().hex}", batches=follow_list(events, 0))

    # --- the synchronous route -------------------------------------------------------------------------

    async def _wait(self, job: Job) -> Stored | Failed | StillWriting:
        try:
            async with asyncio.timeout(self.sync_wait):
                await job.finished.wait()
        except TimeoutError:
            return StillWriting(job)
        found = await self.articles.find_with_artist(job.article_id) if job.article_id else None
        if found is None:
            return Failed(job.id, job.error or JobError("internal_error", "The generation failed."))
        article, artist = found
        return Stored(artist, article)

    # --- jobs ------------------------------------------------------------------------------------------

    async def job(self, job_id: str) -> Job:
        try:
            job = await self.registry.find(job_id)
        except BrokerUnavailable:
            raise BrokerDown() from None
        if job is None:
            raise JobNotFound()
        return job

    async def running(self, artist_id: int, language: str, length: str) -> Job | None:
        """The job writing this portrait, wherever it runs; None also when that cannot be known now."""
        try:
            return await self.registry.find_running((artist_id, language, length))
        except BrokerUnavailable:
            return None

    async def cancel(self, job_id: str) -> None:
        job = await self.job(job_id)
        try:
            await self.registry.cancel_and_wait(job)
        except BrokerUnavailable:
            raise BrokerDown() from None


def _new_job(
    artist: Artist, language: str, length: Length, origin: Origin, revision: Revision | None = None
) -> Job:
    return Job(
        id=uuid.uuid4().hex,
        artist_id=artist.id,
        facts=ArtistFacts.of(artist),
        facts_version=artist.facts_version,  # read with the facts, from the same row
        language=language,
        length=length,
        origin=origin,
        revision=revision,
    )
