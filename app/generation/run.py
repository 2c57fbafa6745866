"""One generation, as a job's task runs it: metadata, the upstream's text as it comes, the article stored,
then `done`; or an `error` and nothing stored. Everything it does goes into the job's event log.

It is given its parts (the event log, a writer, a store, the breaker's permit), so a test runs it with a
scripted writer and no server. The breaker's permit is resolved exactly once per job: `succeed` at the
first text token, `fail` on a counted upstream error, `release` on cancellation or our own failure. An
artist deleted before its portrait is stored ends the job `cancelled`, as the deletion asks: nothing is
stored, and nothing is logged as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime

from app.articles.models import Article
from app.articles.params import TARGET_WORDS
from app.articles.service import ArticleDraft, ArtistGone
from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, Status
from app.generation.prompt import build_messages
from app.llm import errors
from app.llm.breaker import Permit
from app.llm.client import ChatModel, Finish, TextDelta
from app.llm.errors import NOT_RETRYABLE, UpstreamError
from app.streaming.broker import Broker
from app.streaming.events import Done, Error, Metadata, Text, Usage

log = logging.getLogger("atelier.jobs")

INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."
Store = Callable[[ArticleDraft], Awaitable[Article]]


def error_event(code: str, message: str, retry_after: float | None = None) -> Error:
    """The one way an `error` event is made: retryable per the contract, `retry_after` in whole seconds."""
    return Error(
        code=code,
        message=message,
        retryable=code not in NOT_RETRYABLE,
        retry_after=None if retry_after is None else max(0, round(retry_after)),
    )


@dataclass(frozen=True)
class Writer:
    """Who writes: the chat model, and whether it is the demo writer or a real upstream (`writer` in
    `metadata` and in the stored article)."""

    model: ChatModel
    kind: str  # "demo" or "upstream"


class GenerationRun:
    def __init__(self, *, broker: Broker, writer: Writer, store: Store, system_prompt: str) -> None:
        self.broker = broker
        self.writer = writer
        self.store = store
        self.system_prompt = system_prompt

    def metadata(
        self,
        *,
        job_id: str | None,
        artist_id: int,
        artist_name: str,
        language: str,
        length: str,
        started_at: datetime,
    ) -> Metadata:
        """The `metadata` a new generation opens with (`job_id` None when it was refused before a job)."""
        return Metadata(
            job_id=job_id,
            artist_id=artist_id,
            artist_name=artist_name,
            model=self.writer.model.model,
            writer=self.writer.kind,
            cached=False,
            article_id=None,
            version=None,
            language=language,
            length=length,
            target_words=TARGET_WORDS[length],
            started_at=started_at,
        )

    async def __call__(self, job: Job, permit: Permit) -> None:
        started = time.monotonic()
        ttft_ms: int | None = None
        job.status = "running"
        try:
            metadata = self.metadata(
                job_id=job.id,
                artist_id=job.artist_id,
                artist_name=job.facts.name,
                language=job.language,
                length=job.length,
                started_at=job.started_at,
            )
            await self.broker.append(job.id, metadata)
            messages = build_messages(self.system_prompt, job.facts, job.language, job.length)
            finish: Finish | None = None
            async with aclosing(self.writer.model.stream(messages)) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, TextDelta):
                        if ttft_ms is None:
                            ttft_ms = round((time.monotonic() - started) * 1000)
                            await permit.succeed()  # the trial succeeds at its first text token
                        job.parts.append(chunk.text)
                        await self.broker.append(job.id, Text(chunk.text))
                    else:
                        finish = chunk
            markdown = job.text
            if finish is None or not markdown.strip():
                raise errors.upstream_bad_response("The writing service returned an empty portrait.")
            await permit.succeed()
            usage = None
            if finish.usage is not None:
                usage = Usage(finish.usage.prompt_tokens, finish.usage.completion_tokens)
            duration_ms = round((time.monotonic() - started) * 1000)
            article = await self._store(
                ArticleDraft(
                    artist_id=job.artist_id,
                    language=job.language,
                    length=job.length,
                    markdown=markdown,
                    model=self.writer.model.model,
                    writer=self.writer.kind,
                    finish_reason=finish.reason,
                    usage=None
                    if usage is None
                    else {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                    duration_ms=duration_ms,
                    ttft_ms=ttft_ms,
                    job_id=job.id,
                    facts_version=job.facts_version,
                )
            )
            job.article_id, job.version = article.id, article.version
            await self.broker.append(
                job.id,
                Done(
                    article_id=article.id,
                    version=article.version,
                    words=article.words,
                    finish_reason=finish.reason,
                    truncated=article.truncated,
                    usage=usage,
                    duration_ms=duration_ms,
                ),
            )
            job.status = "done"
        except UpstreamError as exc:
            await permit.fail(exc)
            await self._fail(job, exc.code, exc.message, exc.retry_after)
        except asyncio.CancelledError:
            await permit.release()  # a reader leaving says nothing about the upstream's health
            await self._fail(job, "cancelled", CANCELLED_MESSAGE, None, status="cancelled")
        except ArtistGone:
            # Deleted while we wrote or stored: the deletion cancels its jobs (catalog's on_deleted), and
            # its commit may land before that cancel does. Either way the end is the same: cancelled, and
            # nothing stored.
            await permit.release()
            await self._fail(job, "cancelled", CANCELLED_MESSAGE, None, status="cancelled")
        except Exception:
            log.exception("job %s failed", job.id)
            await permit.release()
            await self._fail(job, "internal_error", INTERNAL_ERROR_MESSAGE, None)

    async def _store(self, draft: ArticleDraft) -> Article:
        """Store a complete portrait even if the job is cancelled meanwhile: a reader leaving at this very
        moment must not throw away a finished article (nor leave it half-reported)."""
        store = asyncio.ensure_future(self.store(draft))
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
        job.error = JobError(code, message)
        log.info("job %s ended: %s", job.id, code)
        await self.broker.append(job.id, error_event(code, message, retry_after))
