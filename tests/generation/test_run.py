"""`GenerationRun` (app/generation/run.py): one generation as a job's task runs it.

Each test assembles the real parts (`tests/generation/parts.py`: a migrated SQLite file, the article store,
the registry and the in-process broker on a manual clock, the breaker) around a `ScriptedChat`, launches one
job whose work is the run with a permit from the breaker, and asserts the job's exact event log, what is
(not) stored, and what the breaker learned.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select

from app.articles.models import Article
from app.catalog.models import Artist
from app.catalog.schemas import ArtistFacts
from app.catalog.service import CatalogService
from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, Origin
from app.generation.run import GenerationRun, Writer, error_event
from app.llm import errors
from app.llm.breaker import CLOSED, HALF_OPEN, Circuit, Permit
from app.llm.client import Finish
from app.llm.errors import UpstreamError
from app.streaming.events import Done, Error, Event, Metadata, Text, Usage
from tests.fakes.chat import USAGE, Gate, Step, script
from tests.generation.parts import SYSTEM_PROMPT, GenerationParts, generation_parts

pytestmark = pytest.mark.timeout(10)

RESET = 30.0  # the breaker's reset timeout (the parts' default)


# --- helpers -------------------------------------------------------------------------------------------


def make_job(artist: Artist, length: str = "long", origin: Origin = "job") -> Job:
    return Job(
        id=uuid.uuid4().hex,
        artist_id=artist.id,
        facts=ArtistFacts.of(artist),
        facts_version=artist.facts_version,
        language="en",
        length=length,  # type: ignore[arg-type]
        origin=origin,
    )


async def launch(parts: GenerationParts, job: Job, permit: Permit, run: GenerationRun | None = None) -> None:
    work = run or parts.run
    await parts.registry.launch(job, lambda job: work(job, permit))


def run_storing(parts: GenerationParts, store: Any) -> GenerationRun:
    """The parts' run, but storing with `store` (a store that fails, or takes its time)."""
    return GenerationRun(
        broker=parts.broker,
        writer=Writer(parts.chat, "upstream"),
        store=store,
        system_prompt=SYSTEM_PROMPT,
        breaker=parts.breaker,
    )


async def ended(job: Job) -> None:
    async with asyncio.timeout(1):
        await job.finished.wait()


async def reached(gate: Gate) -> None:
    async with asyncio.timeout(1):
        await gate.reached.wait()


async def generate(parts: GenerationParts, artist: Artist, length: str = "long") -> tuple[Job, list[Event]]:
    """Run one job to its end with a permit from the parts' breaker; its job and its whole log."""
    job = make_job(artist, length)
    await launch(parts, job, await parts.breaker.acquire())
    await ended(job)
    return job, await parts.log(job.id)


async def stored(parts: GenerationParts, artist: Artist, length: str = "long") -> Article | None:
    _, article = await parts.articles.lookup(artist.id, "en", length)
    return article


async def half_open_trial(parts: GenerationParts) -> Permit:
    """Open the circuit (as many failures as the parts' fail_max), let the reset timeout pass, take the trial."""
    for _ in range(parts.breaker.fail_max):
        failing = await parts.breaker.acquire()
        await failing.fail(errors.upstream_error("The writing service failed (HTTP 500)."))
    parts.clock.advance(RESET)
    trial = await parts.breaker.acquire()
    assert trial.trial
    assert (await parts.breaker.storage.load()).state == HALF_OPEN
    return trial


async def trial_taken(parts: GenerationParts) -> bool:
    """Whether the half-open trial is out (everyone else is refused until it resolves)."""
    try:
        permit = await parts.breaker.acquire()
    except UpstreamError as exc:
        assert exc.code == "upstream_unavailable"
        return True
    await permit.release()
    return False


def payloads(events: list[Event]) -> list[Any]:
    return [event.payload for event in events]


@asynccontextmanager
async def parts_with(database_url: str, *steps: Step, **options: Any) -> AsyncIterator[GenerationParts]:
    """The parts with one scripted upstream call."""
    async with generation_parts(database_url, list(steps), **options) as parts:
        yield parts


# --- a generation that succeeds ------------------------------------------------------------------------


def test_run_when_script_writes_then_exact_events_and_markdown_stored_byte_for_byte(
    sqlite_database: str,
) -> None:
    deltas = ["# Nina Simone\n\n", "The High ", "Priestess of Soul.\r\n", "Café — 1933 ✨\u2028", "end"]

    async def scenario() -> None:
        async with parts_with(sqlite_database, *script(*deltas)) as parts:
            artist = await parts.add_artist("Nina Simone")
            job, events = await generate(parts, artist, length="medium")

            article = await stored(parts, artist, length="medium")
            assert article is not None
            done = events[-1].payload
            assert isinstance(done, Done)
            assert payloads(events) == [
                Metadata(
                    job_id=job.id,
                    artist_id=artist.id,
                    artist_name="Nina Simone",
                    model="scripted-model",
                    writer="upstream",
                    cached=False,
                    article_id=None,
                    version=None,
                    language="en",
                    length="medium",
                    target_words=1500,
                    started_at=job.started_at,
                ),
                *[Text(delta) for delta in deltas],
                Done(
                    article_id=article.id,
                    version=1,
                    words=10,
                    finish_reason="stop",
                    truncated=False,
                    usage=Usage(prompt_tokens=10, completion_tokens=20),
                    duration_ms=done.duration_ms,
                    continuations=0,
                    length_score=0.0,  # 10 words of 1,500: S_l floors at 0
                ),
            ]
            assert [event.seq for event in events] == list(range(1, len(deltas) + 3))
            assert done.duration_ms >= 0
            assert article.markdown.encode() == "".join(deltas).encode()
            assert (article.words, article.finish_reason, article.truncated) == (10, "stop", False)
            assert (article.model, article.writer, article.job_id) == ("scripted-model", "upstream", job.id)
            assert article.usage == {"prompt_tokens": 10, "completion_tokens": 20}
            assert (job.status, job.article_id, job.version, job.error) == ("done", article.id, 1, None)
            assert parts.chat.calls[0][0] == {"role": "system", "content": SYSTEM_PROMPT}
            assert parts.chat.closed == 1

    asyncio.run(scenario())


def test_run_when_finish_reason_is_length_and_continuation_off_then_stored_truncated(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        steps = script("The High ", "Priestess", reason="length")
        async with parts_with(sqlite_database, *steps, continuation="off") as parts:
            artist = await parts.add_artist()
            _job, events = await generate(parts, artist)

            article = await stored(parts, artist)
            done = events[-1].payload
            assert article is not None
            assert (article.markdown, article.finish_reason, article.truncated) == (
                "The High Priestess",
                "length",
                True,
            )
            assert isinstance(done, Done)
            assert (done.finish_reason, done.truncated, done.article_id) == ("length", True, article.id)

    asyncio.run(scenario())


# --- a generation that fails ---------------------------------------------------------------------------


def test_run_when_upstream_sends_no_text_then_bad_response_error_and_nothing_stored(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        async with parts_with(sqlite_database, *script()) as parts:
            artist = await parts.add_artist()
            job, events = await generate(parts, artist)

            assert [event.type for event in events] == ["metadata", "error"]
            error = events[-1].payload
            assert isinstance(error, Error)
            assert (error.code, error.retryable, error.retry_after) == ("upstream_bad_response", False, None)
            assert job.status == "error"
            assert job.error == JobError("upstream_bad_response", error.message)
            assert await stored(parts, artist) is None

    asyncio.run(scenario())


def test_run_when_counted_upstream_error_before_first_token_then_error_event_and_one_failure(
    sqlite_database: str,
) -> None:
    failure = errors.upstream_connection("The writing service closed the stream before the end.")

    async def scenario() -> None:
        async with parts_with(sqlite_database, failure) as parts:
            artist = await parts.add_artist()
            job, events = await generate(parts, artist)

            assert payloads(events)[1:] == [
                Error("upstream_connection", failure.message, retryable=True, retry_after=None)
            ]
            assert job.status == "error" and job.error == JobError("upstream_connection", failure.message)
            assert await stored(parts, artist) is None
            circuit = await parts.breaker.storage.load()
            assert (circuit.state, circuit.failures) == (CLOSED, 1)

    asyncio.run(scenario())


def test_run_when_error_after_first_token_and_continuation_off_then_error_event_and_one_failure(
    sqlite_database: str,
) -> None:
    failure = errors.upstream_error("The writing service reported an error while writing.")

    async def scenario() -> None:
        async with parts_with(sqlite_database, "The High ", failure, continuation="off") as parts:
            artist = await parts.add_artist()
            job, events = await generate(parts, artist)

            assert payloads(events)[1:] == [
                Text("The High "),
                Error("upstream_error", failure.message, retryable=True, retry_after=None),
            ]
            assert job.status == "error"
            assert await stored(parts, artist) is None
            # a call that breaks after its first token failed (the contract's "Long portraits")
            assert (await parts.breaker.storage.load()).failures == 1

    asyncio.run(scenario())


def test_run_when_upstream_error_does_not_count_then_breaker_untouched(sqlite_database: str) -> None:
    rejected = errors.upstream_error("The writing service rejected the request (HTTP 422).", counts=False)

    async def scenario() -> None:
        async with parts_with(sqlite_database, rejected, fail_max=3) as parts:
            earlier = await parts.breaker.acquire()
            await earlier.fail(errors.upstream_error("The writing service failed (HTTP 500)."))
            before = await parts.breaker.storage.load()
            artist = await parts.add_artist()

            job, events = await generate(parts, artist)

            assert payloads(events)[1:] == [
                Error("upstream_error", rejected.message, retryable=True, retry_after=None)
            ]
            assert job.status == "error"
            assert await parts.breaker.storage.load() == before == Circuit(failures=1)

    asyncio.run(scenario())


def test_run_when_rate_limited_with_fractional_retry_after_then_error_retryable_after_whole_seconds(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        async with parts_with(sqlite_database, errors.upstream_rate_limited(2.4)) as parts:
            artist = await parts.add_artist()
            _job, events = await generate(parts, artist)

            error = events[-1].payload
            assert isinstance(error, Error)
            assert (error.code, error.retryable, error.retry_after) == ("upstream_rate_limited", True, 2)

    asyncio.run(scenario())


def test_run_when_upstream_refuses_credentials_then_error_not_retryable(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with parts_with(sqlite_database, errors.upstream_auth(401)) as parts:
            artist = await parts.add_artist()
            _job, events = await generate(parts, artist)

            error = events[-1].payload
            assert isinstance(error, Error)
            assert (error.code, error.retryable, error.retry_after) == ("upstream_auth", False, None)
            assert "HTTP 401" in error.message

    asyncio.run(scenario())


def test_run_when_store_fails_then_internal_error_and_job_errors(sqlite_database: str) -> None:
    async def failing_store(draft: Any) -> Article:
        raise RuntimeError("disk full")

    async def scenario() -> None:
        async with parts_with(sqlite_database, *script("Hello.")) as parts:
            run = run_storing(parts, failing_store)
            artist = await parts.add_artist()
            job = make_job(artist)
            await launch(parts, job, await parts.breaker.acquire(), run)
            await ended(job)

            events = await parts.log(job.id)
            assert [event.type for event in events] == ["metadata", "text", "error"]
            error = events[-1].payload
            assert isinstance(error, Error)
            assert (error.code, error.retryable) == ("internal_error", True)
            assert "disk full" not in error.message  # our own failures are logged, never shown
            assert job.status == "error" and job.error is not None and job.error.code == "internal_error"

    asyncio.run(scenario())


# --- cancelling and the breaker's permit ---------------------------------------------------------------


def test_run_when_cancelled_mid_stream_then_cancelled_error_nothing_stored_and_trial_released(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with parts_with(
            sqlite_database, gate, "Hello.", Finish("stop", USAGE), fail_max=1, reset_timeout=RESET
        ) as parts:
            artist = await parts.add_artist()
            trial = await half_open_trial(parts)
            job = make_job(artist)
            await launch(parts, job, trial)
            await reached(gate)
            assert await trial_taken(parts)

            assert parts.registry.cancel(job)
            await ended(job)

            events = await parts.log(job.id)
            assert payloads(events)[1:] == [Error("cancelled", CANCELLED_MESSAGE, retryable=False)]
            assert job.status == "cancelled" and job.error == JobError("cancelled", CANCELLED_MESSAGE)
            assert await stored(parts, artist) is None
            assert parts.chat.closed == 1
            assert trial.resolved
            assert (await parts.breaker.storage.load()).state == HALF_OPEN
            next_trial = await parts.breaker.acquire()  # a reader leaving says nothing: the trial is free
            assert next_trial.trial

    asyncio.run(scenario())


def test_run_when_first_token_arrives_during_half_open_trial_then_circuit_closes_and_the_break_counts(
    sqlite_database: str,
) -> None:
    failure = errors.upstream_error("The writing service reported an error while writing.")

    async def scenario() -> None:
        gate = Gate()
        async with parts_with(
            sqlite_database, "The High ", gate, failure, fail_max=2, reset_timeout=RESET, continuation="off"
        ) as parts:
            artist = await parts.add_artist()
            trial = await half_open_trial(parts)
            job = make_job(artist)
            await launch(parts, job, trial)
            await reached(gate)

            circuit = await parts.breaker.storage.load()
            assert (circuit.state, circuit.failures) == (CLOSED, 0)  # closed at the first token
            gate.open()
            await ended(job)

            assert payloads(await parts.log(job.id))[1:] == [
                Text("The High "),
                Error("upstream_error", failure.message, retryable=True, retry_after=None),
            ]
            circuit = await parts.breaker.storage.load()
            # closed at the token; the break after it is one failure of the closed circuit
            assert (circuit.state, circuit.failures) == (CLOSED, 1)
            assert (await parts.breaker.acquire()).trial is False

    asyncio.run(scenario())


# --- error events --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "retry_after", "retryable", "whole_seconds"),
    [
        ("upstream_rate_limited", 2.4, True, 2),
        ("upstream_rate_limited", 2.6, True, 3),
        ("upstream_unavailable", 0.2, True, 0),
        ("upstream_timeout", None, True, None),
        ("upstream_auth", None, False, None),
        ("upstream_bad_response", None, False, None),
        ("cancelled", None, False, None),
    ],
)
def test_error_event_when_code_and_retry_after_given_then_retryable_per_contract_and_whole_seconds(
    code: str, retry_after: float | None, retryable: bool, whole_seconds: int | None
) -> None:
    event = error_event(code, "message", retry_after)

    assert event == Error(code, "message", retryable=retryable, retry_after=whole_seconds)


# --- regressions ---------------------------------------------------------------------------------------


def test_run_when_cancelled_twice_while_storing_then_the_finished_portrait_is_still_stored(
    sqlite_database: str,
) -> None:
    # Regression: the grace expired while the article was being stored, then DELETE /jobs/{id} (or the
    # shutdown) cancelled again; the second cancel reached the unshielded store and threw the article away.
    async def scenario() -> None:
        async with parts_with(sqlite_database, *script("Hello ", "world.")) as parts:
            in_store = asyncio.Event()

            async def slow_store(draft: Any) -> Article:
                in_store.set()
                for _ in range(5):  # a store that takes a few loop turns, as a database round trip does
                    await asyncio.sleep(0)
                return await parts.articles.store(draft)

            run = run_storing(parts, slow_store)
            artist = await parts.add_artist()
            job = make_job(artist, origin="stream")
            await launch(parts, job, await parts.breaker.acquire(), run)
            async with asyncio.timeout(1):
                await in_store.wait()
            assert parts.registry.cancel(job) is True
            await asyncio.sleep(0)
            assert parts.registry.cancel(job) is False  # a job is cancelled once
            await ended(job)

            assert job.status == "done"
            assert [event.type for event in await parts.log(job.id)][-1] == "done"
            article = await stored(parts, artist)
            assert article is not None and article.markdown == "Hello world."

    asyncio.run(scenario())


# --- the artist deleted while the portrait is stored ----------------------------------------------------


async def article_count(parts: GenerationParts) -> int:
    async with parts.articles.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(Article)) or 0


def assert_cancelled_and_nothing_stored(job: Job, events: list[Event]) -> None:
    assert [event.type for event in events] == ["metadata", "text", "text", "error"]
    assert events[-1].payload == Error("cancelled", CANCELLED_MESSAGE, retryable=False)
    assert job.status == "cancelled" and job.error == JobError("cancelled", CANCELLED_MESSAGE)
    assert (job.article_id, job.version) == (None, None)


def test_run_when_artist_deleted_while_inside_the_store_then_cancelled_and_nothing_logged(
    sqlite_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression (review issue 9): DELETE committed while the finished portrait was being stored; the
    # foreign key refused the row and the run reported `internal_error` with a traceback.
    async def scenario() -> None:
        async with parts_with(sqlite_database, *script("Hello ", "world.")) as parts:
            in_store, go_on = asyncio.Event(), asyncio.Event()

            async def store_after_the_delete(draft: Any) -> Article:
                in_store.set()
                await go_on.wait()
                return await parts.articles.store(draft)

            run = run_storing(parts, store_after_the_delete)
            artist = await parts.add_artist()
            job = make_job(artist)
            permit = await parts.breaker.acquire()
            await launch(parts, job, permit, run)
            async with asyncio.timeout(1):
                await in_store.wait()
            await parts.catalog.delete(
                artist.id
            )  # committed; its hook cancels the job (the store is shielded)
            go_on.set()
            await ended(job)

            assert_cancelled_and_nothing_stored(job, await parts.log(job.id))
            assert await article_count(parts) == 0
            assert permit.resolved

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert not any(record.exc_info for record in caplog.records)


def test_run_when_artist_deleted_elsewhere_before_the_store_then_cancelled_and_nothing_logged(
    sqlite_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleted by another process (no hook here cancels the job): the store finds the artist gone."""

    async def scenario() -> None:
        gate = Gate()
        async with parts_with(sqlite_database, "Hello ", gate, "world.", Finish("stop", USAGE)) as parts:
            artist = await parts.add_artist()
            job = make_job(artist)
            await launch(parts, job, await parts.breaker.acquire())
            await reached(gate)
            await CatalogService(parts.catalog.sessionmaker).delete(artist.id)  # no hooks: another process
            assert job.running
            gate.open()
            await ended(job)

            assert_cancelled_and_nothing_stored(job, await parts.log(job.id))
            assert await article_count(parts) == 0

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    assert not any(record.exc_info for record in caplog.records)
