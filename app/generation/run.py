"""One generation, as a job's task runs it: metadata, the text as the upstream writes it, the article stored,
then `done`; or an `error` and nothing stored. Everything it does goes into the job's event log.

A portrait is written by as many upstream calls as it takes (docs/longform.md):
- a planned portrait (`ATELIER_WRITER_PLAN`) asks for an outline first (`outline`), then writes each section
  in its own call (`section` before each), asking each for the words still missing;
- a call cut by the token limit, or broken mid-stream (connection, silence, an upstream error) after text
  was written, is continued (`ATELIER_LLM_CONTINUATION`): called again with the text so far as a trailing
  assistant turn, its echo removed, a `continued` event at the seam; so is one that stops with open
  structure (an unclosed fence, a heading at the very end);
- when no continuation can be made (continuations spent, the circuit open, the upstream refusing the
  request, the portrait's time spent), what was written is stored as `truncated`: never lost.

Every call goes through the breaker: the first with the permit the job was started with, each later one
with its own; a call counts as a success at its first text token and as a failure if it breaks, even after
that token. An artist deleted before its portrait is stored ends the job `cancelled`, as the deletion asks.
It needs nothing but the job (its facts, its revision if it is one, and its text so far) to go on: a
continuation is built from them. A revision (`job.revision`) is written in one unit from its conversation
(prompt.revision_messages), never planned, and continued like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from app.articles.models import Article
from app.articles.params import TARGET_WORDS
from app.articles.service import ArticleDraft, ArtistGone, JobStored
from app.generation import prompt
from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, Recovery, Status
from app.generation.longform import (
    EchoFilter,
    Plan,
    PlannedSection,
    length_score,
    next_ask,
    open_structure,
    parse_outline,
)
from app.kit.text import count_words
from app.llm import errors
from app.llm.breaker import Breaker, Permit
from app.llm.client import ChatModel, Finish, Messages, TextDelta
from app.llm.errors import NOT_RETRYABLE, UpstreamError
from app.streaming.broker import AppendRefused, Broker, BrokerUnavailable
from app.streaming.events import (
    Continued,
    Done,
    Error,
    Metadata,
    Outline,
    OutlineSection,
    Payload,
    Section,
    Text,
    Usage,
)

log = logging.getLogger("atelier.jobs")

INTERNAL_ERROR_MESSAGE = "Something went wrong on our side; it has been logged."
BROKER_UNAVAILABLE_MESSAGE = "Atelier's shared state cannot be reached; try again shortly."
WORKER_LOST_MESSAGE = "The process writing this portrait was lost, and continuation is off."
LOST_AFTER_STORE_MESSAGE = "The portrait was stored by the process that began it; reload to read it."
Store = Callable[[ArticleDraft], Awaitable[Article]]
Owns = Callable[[Job], Awaitable[bool]]
ContinuationMode = Literal["prefix", "prefill", "off"]
PlanMode = Literal["auto", "always", "never"]
# Failures after which a portrait goes on with another call (the contract's "Long portraits").
CONTINUABLE = frozenset({"upstream_connection", "upstream_timeout", "upstream_error"})


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


@dataclass(frozen=True)
class LongForm:
    """How a portrait is written across calls (settings: ATELIER_LLM_CONTINUATION, _MAX_CONTINUATIONS,
    ATELIER_WRITER_PLAN, ATELIER_LLM_TOTAL_TIMEOUT)."""

    continuation: ContinuationMode = "prefix"
    max_continuations: int = 6
    plan: PlanMode = "never"
    total_timeout: float = 600.0

    def plans(self, length: str) -> bool:
        return self.plan == "always" or (self.plan == "auto" and length == "long")


class Fenced(Exception):
    """This process no longer owns the job (another took it over): stop, writing nothing more."""


class Cut(Exception):
    """The portrait cannot go on, and text was written: it is stored as `truncated`, ending as `reason`
    says (`length`, `stop` for open structure, or the code of the error that stopped it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Tally:
    """What the calls of one portrait add up to."""

    started: float
    deadline: float
    permit: Permit | None  # the job's own, for its first call
    continuations: int = 0
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    finish_reason: str = "stop"
    truncated: bool = False
    ttft_ms: int | None = None
    # a planned portrait's outline as stored: each section's start once it began (a cut one keeps it too)
    outline: dict[str, Any] | None = None

    def add(self, finish: Finish) -> None:
        self.finish_reason = finish.reason
        usage = finish.usage
        # summed over the calls; unknown as soon as one call did not say
        prompt_tokens = None if usage is None else usage.prompt_tokens
        completion_tokens = None if usage is None else usage.completion_tokens
        self.prompt_tokens = (
            None
            if self.prompt_tokens is None or prompt_tokens is None
            else (self.prompt_tokens + prompt_tokens)
        )
        self.completion_tokens = (
            None
            if self.completion_tokens is None or completion_tokens is None
            else self.completion_tokens + completion_tokens
        )

    def usage_unknown(self) -> None:
        self.prompt_tokens = self.completion_tokens = None

    @property
    def usage(self) -> Usage | None:
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return Usage(self.prompt_tokens, self.completion_tokens)


class GenerationRun:
    def __init__(
        self,
        *,
        broker: Broker,
        writer: Writer,
        store: Store,
        system_prompt: str,
        breaker: Breaker,
        longform: LongForm | None = None,
        owns: Owns | None = None,
    ) -> None:
        self.broker = broker
        # With several processes: whether this process still owns a job, asked before its article is stored.
        self.owns = owns
        self.writer = writer
        self.store = store
        self.system_prompt = system_prompt
        self.breaker = breaker
        self.longform = longform or LongForm()

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
        tally = Tally(started=started, deadline=started + self.longform.total_timeout, permit=permit)
        await self._run(job, tally, None)

    async def resume(self, job: Job, recovery: Recovery) -> None:
        """Go on with a job taken over from a process that died, from what its log holds (`job.text`): a
        `continued` seam (`reason: takeover`) and the continuation, within the portrait's total time. With
        continuation off it ends with `worker_lost`."""
        elapsed = max(0.0, (datetime.now(UTC) - job.started_at).total_seconds())
        now = time.monotonic()
        tally = Tally(
            started=now - elapsed,
            deadline=now - elapsed + self.longform.total_timeout,
            permit=None,
            continuations=job.continuations,
        )
        tally.usage_unknown()  # what the lost process's calls used is lost with it
        if recovery.began and self.longform.continuation == "off":
            await self._guarded(job, self._fail(job, "worker_lost", WORKER_LOST_MESSAGE, None))
            return
        await self._run(job, tally, recovery if recovery.began else None)

    async def _run(self, job: Job, tally: Tally, recovery: Recovery | None) -> None:
        job.status = "running"
        try:
            if recovery is None:
                metadata = self.metadata(
                    job_id=job.id,
                    artist_id=job.artist_id,
                    artist_name=job.facts.name,
                    language=job.language,
                    length=job.length,
                    started_at=job.started_at,
                )
                await self._emit(job, metadata)
            try:
                if recovery is not None:
                    await self._go_on(job, recovery, tally)
                else:
                    # a revision is written in one unit (its conversation is the plan), continued like any
                    plans = job.revision is None and self.longform.plans(job.length)
                    plan = await self._outline(job, tally) if plans else None
                    if plan is not None:
                        await self._write_plan(job, plan, tally)
                    else:
                        await self._write(job, self._messages(job), tally, start=0)
            except Cut as cut:
                tally.truncated, tally.finish_reason = True, cut.reason
            if not job.text.strip():
                raise errors.upstream_bad_response("The writing service returned an empty portrait.")
            await self._finish(job, tally)
        except UpstreamError as exc:
            if tally.permit is not None:
                await tally.permit.fail(exc)  # failed before its first call could be made
                tally.permit = None
            await self._guarded(job, self._fail(job, exc.code, exc.message, exc.retry_after))
        except asyncio.CancelledError:
            await self._release(tally)  # a reader leaving says nothing about the upstream's health
            if job.abandoned:
                return  # handed over (shutdown) or taken over: another process writes its end
            await self._guarded(
                job, self._fail(job, "cancelled", CANCELLED_MESSAGE, None, status="cancelled")
            )
        except ArtistGone:
            # Deleted while we wrote or stored: the deletion cancels its jobs (catalog's on_deleted), and
            # its commit may land before that cancel does. Either way the end is the same: cancelled, and
            # nothing stored.
            await self._release(tally)
            await self._guarded(
                job, self._fail(job, "cancelled", CANCELLED_MESSAGE, None, status="cancelled")
            )
        except JobStored:
            # Stored by the process this job was taken from, stalled between its store and its `done`: one
            # article, as promised; this stream ends without claiming it.
            await self._release(tally)
            await self._guarded(job, self._fail(job, "worker_lost", LOST_AFTER_STORE_MESSAGE, None))
        except (Fenced, AppendRefused) as exc:
            # Another process owns the job now (this one was stalled past its lease): not a word more.
            await self._release(tally)
            job.abandoned = True
            log.warning("job %s: fenced out (%s): another process goes on with it", job.id, exc)
        except BrokerUnavailable as exc:
            # The log cannot be written: the job ends here; its readers hear `broker_unavailable` from
            # their own read of the log, which fails the same way.
            await self._release(tally)
            job.status, job.error = "error", JobError("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE)
            log.warning("job %s: Redis unreachable (%s): ended", job.id, exc)
        except Exception:
            log.exception("job %s failed", job.id)
            await self._release(tally)
            await self._guarded(job, self._fail(job, "internal_error", INTERNAL_ERROR_MESSAGE, None))

    async def _guarded(self, job: Job, ending: Awaitable[None]) -> None:
        """Write a job's `error` end, unless its log cannot take it (fenced out, or Redis unreachable)."""
        try:
            await ending
        except AppendRefused as exc:
            job.abandoned = True
            log.warning("job %s: fenced out at its end (%s)", job.id, exc)
        except BrokerUnavailable as exc:
            job.status, job.error = "error", JobError("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE)
            log.warning("job %s: its end could not be written: Redis unreachable (%s)", job.id, exc)

    async def _emit(self, job: Job, payload: Payload) -> None:
        """Append to the job's log at the seq after this process's last: a process whose job was taken
        over meanwhile finds that seq written by the new owner, and is fenced out (`StaleAppend`)."""
        event = await self.broker.append_at(job.id, job.seq + 1, payload)
        job.seq = event.seq

    async def _go_on(self, job: Job, recovery: Recovery, tally: Tally) -> None:
        """The rest of a taken-over portrait: the unit it was in, continued, then (planned) the next ones."""
        outline = recovery.outline
        if outline is None:
            await self._write(job, self._messages(job), tally, start=0, seam="takeover")
            return
        if recovery.section is None:  # planned, but lost before its first section: its seam, then the plan
            tally.continuations += 1
            job.continuations = tally.continuations
            await self._emit(job, Continued(reason="takeover", attempt=tally.continuations))
        await self._write_plan(job, _plan_of(job, outline), tally, resume=recovery)

    def _messages(self, job: Job) -> Messages:
        """The messages of a one-unit portrait: the first request, or a revision's conversation (built from
        the job alone, so a process taking a revision over rebuilds the same ones)."""
        revision = job.revision
        if revision is None:
            return prompt.build_messages(self.system_prompt, job.facts, job.language, job.length)
        return prompt.revision_messages(
            self.system_prompt,
            job.facts,
            job.language,
            job.length,
            portrait=revision.markdown,
            instruction=revision.instruction,
        )

    # --- the calls -------------------------------------------------------------------------------------

    async def _permit(self, job: Job, tally: Tally) -> Permit:
        """The breaker's permit for the next call: the job's own for its first, then one each. An open
        circuit stops a portrait that has text as a cut (stored truncated), one without as its error."""
        if tally.permit is not None:
            permit, tally.permit = tally.permit, None
            return permit
        try:
            return await self.breaker.acquire()
        except UpstreamError as exc:
            if job.text:
                raise Cut(exc.code) from None
            raise

    async def _release(self, tally: Tally) -> None:
        if tally.permit is not None:
            await tally.permit.release()
            tally.permit = None

    async def _call(
        self, job: Job, messages: Messages, permit: Permit, tally: Tally, *, echo: str, emit: bool
    ) -> tuple[Finish, str]:
        """One upstream call: its finish and its new text (the echo of `echo` removed), sent to readers
        as it comes when `emit`. The permit is resolved here: success at the first text, failure if the
        call breaks (also after that), released if it is cancelled."""
        echoes = EchoFilter(echo)
        written: list[str] = []
        finish: Finish | None = None
        try:
            time_left = tally.deadline - time.monotonic()
            async with aclosing(self.writer.model.stream(messages, time_left=time_left)) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, TextDelta):
                        if not permit.resolved:
                            await permit.succeed()  # the call (a trial too) succeeds at its first text
                        text = echoes.feed(chunk.text)
                        if text:
                            await self._text(job, text, written, tally, emit)
                    else:
                        finish = chunk
            if finish is None:
                raise errors.upstream_bad_response("The writing service ended without finishing.")
            # Stopped while still repeating the text it was given: not proven an echo, so it is kept.
            held = echoes.end()
            if held:
                await self._text(job, held, written, tally, emit)
        except UpstreamError as exc:
            await permit.fail(exc)
            raise
        except BaseException:
            await permit.release()
            raise
        await permit.succeed()  # a call that finished without text still answered
        return finish, "".join(written)

    async def _text(self, job: Job, text: str, written: list[str], tally: Tally, emit: bool) -> None:
        written.append(text)
        if not emit:
            return
        if tally.ttft_ms is None:
            tally.ttft_ms = round((time.monotonic() - tally.started) * 1000)
        job.parts.append(text)
        await self._emit(job, Text(text))

    async def _write(
        self, job: Job, messages: Messages, tally: Tally, *, start: int, seam: str | None = None
    ) -> None:
        """Write one unit (the whole portrait, or one section, whose text begins at `start` in the job's
        text) with as many continuations as it takes and the settings allow. With `seam` (a takeover), the
        unit was begun by another process: it starts with a seam of that reason (not counted against the
        limit: the writer did nothing wrong)."""
        mode = self.longform.continuation
        call_messages, echo = messages, ""
        reason = seam
        permit = None if seam is not None else await self._permit(job, tally)
        while True:
            if reason is not None:
                if mode == "off" or (
                    reason != seam and tally.continuations >= self.longform.max_continuations
                ):
                    raise Cut(reason)
                # the next call's permit before its seam: a circuit that refuses it leaves no seam behind
                permit = await self._permit(job, tally)
                tally.continuations += 1
                job.continuations = tally.continuations
                await self._emit(job, Continued(reason=reason, attempt=tally.continuations))
                unit = job.text[start:]
                # go on from this unit's text; with none yet (a section that broke before its first word),
                # ask again
                call_messages = prompt.continuation_messages(messages, unit, mode) if unit else messages
                echo = unit
                seam = None
            assert permit is not None
            try:
                finish, _ = await self._call(job, call_messages, permit, tally, echo=echo, emit=True)
            except UpstreamError as exc:
                if not job.text or mode == "off":
                    raise  # nothing to keep, or continuation off: the portrait fails as it always did
                tally.usage_unknown()  # a broken call reports no usage: the sum is unknown
                if exc.code not in CONTINUABLE or not exc.counts or not exc.resumable:
                    raise Cut(exc.code) from None  # refused, or out of time: keep what was written
                reason = exc.code
            else:
                tally.add(finish)
                unit = job.text[start:]
                if finish.reason == "length":
                    reason = "length"
                elif open_structure(unit) is not None:
                    reason = "stop"
                else:
                    return
                if mode == "off":
                    raise Cut(reason)

    # --- planned portraits -----------------------------------------------------------------------------

    async def _outline(self, job: Job, tally: Tally) -> Plan | None:
        """The outline, or None to write in one call: when it cannot be read, or its call broke twice (a
        break is retried once: nothing was written yet, so there is no seam). Any other failure fails the
        portrait like a call that fails before the first word (nothing written, nothing stored)."""
        messages = prompt.outline_messages(self.system_prompt, job.facts, job.language, job.length)
        for attempt in (1, 2):
            permit = await self._permit(job, tally)
            try:
                finish, text = await self._call(job, messages, permit, tally, echo="", emit=False)
            except UpstreamError as exc:
                if exc.code not in CONTINUABLE or not exc.counts or not exc.resumable:
                    raise
                tally.usage_unknown()
                log.info("job %s: the outline call broke (%s), attempt %d", job.id, exc.code, attempt)
                continue
            tally.add(finish)
            plan = parse_outline(text, TARGET_WORDS[job.length])
            if plan is None:
                log.info("job %s: the outline could not be read: writing in one call", job.id)
            return plan
        return None

    async def _write_plan(
        self, job: Job, plan: Plan, tally: Tally, *, resume: Recovery | None = None
    ) -> None:
        """Each section in its own call, in order. The outline as stored with the version records where
        each section began in the markdown (so a replay announces it there), as soon as it begins: a
        portrait cut mid-way keeps the sections it reached. `resume`: a taken-over portrait, whose outline and
        sections up to `resume.section` are in its log already; that one is continued, then the rest."""
        target = TARGET_WORDS[job.length]
        planned = [section.target_words for section in plan.sections]
        sections = plan.as_prompt()
        stored: list[dict[str, Any]] = [
            {"title": s.title, "target_words": s.target_words, "start": None} for s in plan.sections
        ]
        tally.outline = {"title": plan.title, "sections": stored}
        first = 0
        if resume is None or resume.section is None:
            await self._emit(
                job,
                Outline(tuple(OutlineSection(s.title, s.target_words) for s in plan.sections)),
            )
        else:
            first, start = resume.section, resume.section_start
            for index, begun in resume.starts.items():
                if 0 <= index < len(stored):
                    stored[index]["start"] = begun
            so_far = job.text[:start]
            ask = next_ask(target, count_words(so_far), planned, first, 1.0)
            messages = self._section_messages(job, plan, sections, first, ask, so_far)
            await self._write(job, messages, tally, start=start, seam="takeover")
            first += 1
        asked = written = 0
        for index, section in enumerate(plan.sections):
            if index < first:
                continue
            if job.text and not job.text.endswith("\n\n"):
                # sections are blocks: the next heading starts after a blank line
                separator = "\n\n" if not job.text.endswith("\n") else "\n"
                job.parts.append(separator)
                await self._emit(job, Text(separator))
            await self._emit(job, Section(index=index, title=section.title))
            start = len(job.text)
            stored[index]["start"] = start
            ratio = written / asked if asked else 1.0
            ask = next_ask(target, count_words(job.text), planned, index, ratio)
            messages = self._section_messages(job, plan, sections, index, ask, job.text)
            await self._write(job, messages, tally, start=start)
            asked += ask
            written += count_words(job.text[start:])

    def _section_messages(
        self, job: Job, plan: Plan, sections: list[dict[str, Any]], index: int, words: int, so_far: str
    ) -> Messages:
        return prompt.section_messages(
            self.system_prompt,
            job.facts,
            job.language,
            title=plan.title,
            sections=sections,
            index=index,
            words=words,
            so_far=so_far,
        )

    # --- the end ---------------------------------------------------------------------------------------

    async def _finish(self, job: Job, tally: Tally) -> None:
        markdown = job.text
        usage = tally.usage
        duration_ms = round((time.monotonic() - tally.started) * 1000)
        words = count_words(markdown)
        score = length_score(TARGET_WORDS[job.length], words)
        if self.owns is not None and not await self.owns(job):
            raise Fenced(f"job {job.id} is owned by another process")  # it stores, not us
        article = await self._store(
            ArticleDraft(
                artist_id=job.artist_id,
                language=job.language,
                length=job.length,
                markdown=markdown,
                model=self.writer.model.model,
                writer=self.writer.kind,
                finish_reason=tally.finish_reason,
                usage=None
                if usage is None
                else {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
                duration_ms=duration_ms,
                ttft_ms=tally.ttft_ms,
                job_id=job.id,
                facts_version=job.facts_version,
                truncated=tally.truncated,
                continuations=tally.continuations,
                length_score=score,
                outline=tally.outline,
                instruction=job.revision.instruction if job.revision is not None else None,
                revises_version=job.revision.revises_version if job.revision is not None else None,
            )
        )
        job.article_id, job.version = article.id, article.version
        await self._emit(
            job,
            Done(
                article_id=article.id,
                version=article.version,
                words=article.words,
                finish_reason=tally.finish_reason,
                truncated=article.truncated,
                usage=usage,
                duration_ms=duration_ms,
                continuations=tally.continuations,
                length_score=score,
            ),
        )
        job.status = "done"

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
        await self._emit(job, error_event(code, message, retry_after))


def _plan_of(job: Job, outline: Outline) -> Plan:
    """A taken-over portrait's plan, as its `outline` event told it (the points of the sections, which only
    the lost process knew, are not needed to go on: each section's title and the text so far guide it)."""
    sections = tuple(PlannedSection(s.title, s.title, s.target_words) for s in outline.sections)
    return Plan(title=job.facts.name, sections=sections)
