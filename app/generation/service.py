"""What a stream request turns into: a replay of a stored article, a cursor over a live job's log, or a
refusal (rate limit, open circuit) told as `metadata` then `error`. Decided before the response starts, so
404 and 422 stay plain HTTP errors and everything later is an event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.articles.models import Article
from app.articles.service import ArticleService, is_stale
from app.catalog.models import Artist
from app.generation import events
from app.generation.jobs import Job, JobManager, RateLimited
from app.generation.prompt import ArtistFacts
from app.generation.replay import replay_events, replay_stream_id
from app.llm.errors import UpstreamError
from app.streaming.events import Event
from app.streaming.responses import follow_list, follow_log


@dataclass
class StreamPlan:
    """Where a reader's events come from, and from which seq on."""

    stream_id: str
    batches: AsyncIterator[list[Event] | None]
    on_close: Callable[[], None] | None = None
    past_end: bool = False  # the reader already has every event: answer 204


def facts_of(artist: Artist) -> ArtistFacts:
    return ArtistFacts(
        id=artist.id,
        name=artist.name,
        kind=artist.kind,
        country=artist.country,
        genres=list(artist.genres),
        active_from=artist.active_from,
        active_to=artist.active_to,
        notable_works=list(artist.notable_works),
        notes=artist.notes,
    )


class StreamService:
    def __init__(self, jobs: JobManager, articles: ArticleService) -> None:
        self.jobs = jobs
        self.articles = articles

    def replay(self, article: Article, artist: Artist, after: int = 0) -> StreamPlan:
        stale = is_stale(article, artist.updated_at, self.articles.upstream_configured)
        log = replay_events(article, artist.name, stale)
        return StreamPlan(
            stream_id=replay_stream_id(article),
            batches=follow_list(log, after),
            past_end=after >= len(log),
        )

    async def follow(self, job: Job, after: int = 0) -> StreamPlan:
        last = await self.jobs.broker.last_seq(job.id)
        if last is None:  # retention ended between lookup and now
            return StreamPlan(stream_id=job.id, batches=follow_list([], 0), past_end=True)
        if not job.running and after >= last:
            return StreamPlan(stream_id=job.id, batches=follow_list([], 0), past_end=True)
        self.jobs.attach(job)
        return StreamPlan(
            stream_id=job.id,
            batches=follow_log(self.jobs.broker, job.id, after),
            on_close=lambda: self.jobs.detach(job),
        )

    def refusal(
        self, artist: Artist, language: str, length: str, code: str, message: str, retry_after: float | None
    ) -> StreamPlan:
        metadata = events.metadata(
            job_id=None,
            artist_id=artist.id,
            artist_name=artist.name,
            model=self.jobs.llm.config.model,
            writer=self.jobs.writer,
            cached=False,
            article_id=None,
            version=None,
            language=language,
            length=length,
            started_at=datetime.now(UTC),
        )
        log = [
            Event(seq=1, type="metadata", data={"type": "metadata", **metadata}),
            Event(seq=2, type="error", data={"type": "error", **events.error(code, message, retry_after)}),
        ]
        return StreamPlan(stream_id=f"refused-{uuid.uuid4().hex}", batches=follow_list(log, 0))

    async def start(self, artist: Artist, language: str, length: str, *, client: str | None) -> StreamPlan:
        try:
            job = await self.jobs.start_or_join(
                facts_of(artist), language, length, origin="stream", client=client
            )
        except RateLimited as exc:
            message = "Too many new portraits from this address; try again later."
            return self.refusal(artist, language, length, "rate_limited", message, exc.retry_after)
        except UpstreamError as exc:
            return self.refusal(artist, language, length, exc.code, exc.message, exc.retry_after)
        return await self.follow(job)
