"""The portrait service's decisions, on real parts (SQLite, the registry, the in-process log, the breaker)
with a scripted chat model and a manual clock: replay, resume, join, start, refuse, wait, cancel.

Every scenario runs in `asyncio.run()`; every wait is bounded by `asyncio.timeout(1)`, and nothing sleeps
except the one synchronous wait that is meant to run out (`sync_wait` of 0.05 s).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import pytest

from app.articles.models import Article
from app.articles.service import ArticleDraft
from app.catalog.errors import ArtistNotFound
from app.catalog.models import Artist
from app.catalog.schemas import ArtistUpdate
from app.errors import Unauthorized
from app.generation.errors import RATE_LIMITED_MESSAGE, JobNotFound
from app.generation.jobs import Job
from app.generation.portrait import (
    Accepted,
    Failed,
    NothingAfter,
    Outcome,
    Refused,
    StillWriting,
    Stored,
    Stream,
)
from app.llm import errors
from app.llm.client import Finish
from app.streaming.events import Done, Error, Event, Metadata, Text
from tests.fakes.chat import USAGE, Gate, Step, script
from tests.generation.parts import ANONYMOUS, TRUSTED, GenerationParts, generation_parts

STORED_MARKDOWN = "# Nina Simone\n\nThe High Priestess of Soul.\n\n## Origins\n\nTryon, 1933.\n"
FRESH = ("Hello ", "world.")  # a new generation: metadata 1, text 2, text 3, done 4


# --- helpers ---------------------------------------------------------------------------------------------


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def gated(gate: Gate, before: str = "Hello ", after: str = "world.") -> list[Step]:
    """A script that writes `before`, waits for the test to open `gate`, then writes `after` and finishes."""
    return [before, gate, after, Finish(reason="stop", usage=USAGE)]


def draft(artist_id: int, markdown: str = STORED_MARKDOWN, **fields: str) -> ArticleDraft:
    values = {"language": "en", "length": "long", "writer": "upstream", **fields}
    return ArticleDraft(
        artist_id=artist_id,
        language=values["language"],
        length=values["length"],
        markdown=markdown,
        model="scripted-model",
        writer=values["writer"],
        finish_reason="stop",
        usage={"prompt_tokens": 10, "completion_tokens": 20},
        duration_ms=1200,
        ttft_ms=80,
        job_id=None,
    )


async def stored_artist(parts: GenerationParts, name: str = "Nina Simone") -> tuple[Artist, Article]:
    artist = await parts.add_artist(name)
    return artist, await parts.articles.store(draft(artist.id))


def as_stream(outcome: Outcome) -> Stream:
    assert isinstance(outcome, Stream), outcome
    return outcome


async def drain(outcome: Outcome) -> list[Event]:
    """Every event of a stream outcome, to its end; the reader then leaves."""
    stream = as_stream(outcome)
    events: list[Event] = []
    try:
        async with asyncio.timeout(1), aclosing(stream.batches) as batches:  # type: ignore[type-var]
            async for batch in batches:
                events.extend(batch or [])
    finally:
        if stream.on_close is not None:
            stream.on_close()
    return events


async def read_until(outcome: Outcome, seq: int) -> list[Event]:
    """A stream's events up to (at least) `seq`; then the reader leaves mid-stream."""
    stream = as_stream(outcome)
    events: list[Event] = []
    try:
        async with asyncio.timeout(1), aclosing(stream.batches) as batches:  # type: ignore[type-var]
            async for batch in batches:
                events.extend(batch or [])
                if events and events[-1].seq >= seq:
                    break
    finally:
        if stream.on_close is not None:
            stream.on_close()
    return events


def text_of(events: list[Event]) -> str:
    return "".join(event.payload.delta for event in events if isinstance(event.payload, Text))


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


async def finished(job: Job) -> None:
    async with asyncio.timeout(1):
        await job.finished.wait()


async def settle() -> None:
    """A few loop turns: whatever a fired timer set in motion (a cancelled task) has happened."""
    for _ in range(10):
        await asyncio.sleep(0)


async def reached(gate: Gate) -> None:
    async with asyncio.timeout(1):
        await gate.reached.wait()


def running_job(parts: GenerationParts, artist_id: int) -> Job:
    job = parts.portraits.registry.running((artist_id, "en", "long"))
    assert job is not None
    return job


# --- replay ----------------------------------------------------------------------------------------------


def test_open_when_portrait_stored_then_replayed_from_the_store(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, article = await stored_artist(parts)
            outcome = await parts.portraits.open(parts.request(artist.id))
            assert as_stream(outcome).stream_id == f"replay-{article.id}"
            events = await drain(outcome)
            metadata, done = events[0].payload, events[-1].payload
            assert isinstance(metadata, Metadata) and isinstance(done, Done)
            assert (metadata.cached, metadata.job_id, metadata.stale) == (True, None, False)
            assert (metadata.article_id, metadata.version) == (article.id, 1)
            assert metadata.artist_name == "Nina Simone"
            assert text_of(events) == STORED_MARKDOWN
            assert {type(event.payload) for event in events[1:-1]} == {Text}
            assert (done.article_id, done.version, done.words) == (article.id, 1, article.words)
            assert seqs(events) == list(range(1, len(events) + 1))
            assert parts.chat.calls == []

    run(scenario)


# --- refresh and unknown artists -------------------------------------------------------------------------


def test_open_when_refresh_without_trusted_client_then_unauthorized_and_nothing_started(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist, _ = await stored_artist(parts)
            with pytest.raises(Unauthorized):
                await parts.portraits.open(parts.request(artist.id, refresh=True, client=ANONYMOUS))
            assert parts.chat.calls == []
            assert parts.portraits.registry.running((artist.id, "en", "long")) is None

    run(scenario)


def test_open_when_refresh_by_trusted_client_then_version_two_written(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist, first = await stored_artist(parts)
            outcome = await parts.portraits.open(parts.request(artist.id, refresh=True, client=TRUSTED))
            assert not as_stream(outcome).stream_id.startswith("replay-")
            events = await drain(outcome)
            metadata, done = events[0].payload, events[-1].payload
            assert isinstance(metadata, Metadata) and metadata.cached is False
            assert isinstance(done, Done) and done.version == 2
            assert text_of(events) == "".join(FRESH)
            _, latest = await parts.articles.lookup(artist.id, "en", "long")
            assert latest is not None and (latest.version, latest.markdown) == (2, "".join(FRESH))
            assert latest.id != first.id
            assert len(parts.chat.calls) == 1

    run(scenario)


def test_open_when_artist_unknown_then_artist_not_found(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            with pytest.raises(ArtistNotFound):
                await parts.portraits.open(parts.request(4242))
            assert parts.chat.calls == []

    run(scenario)


# --- resume ----------------------------------------------------------------------------------------------


def test_open_when_resuming_a_running_job_then_follows_it_after_that_seq(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate)) as parts:
            artist = await parts.add_artist()
            first = await parts.portraits.open(parts.request(artist.id))
            job_id = as_stream(first).stream_id
            seen = await read_until(first, 2)  # metadata, "Hello ", then the reader drops
            assert text_of(seen) == "Hello "

            resumed = await parts.portraits.open(parts.request(artist.id, resume=f"{job_id}:2"))
            assert as_stream(resumed).stream_id == job_id
            parts.clock.advance(parts.registry.grace + 1)  # the resumed reader keeps the job alive
            gate.open()
            rest = await drain(resumed)
            assert all(seq > 2 for seq in seqs(rest))
            assert text_of(rest) == "world."
            done = rest[-1].payload
            assert isinstance(done, Done) and done.version == 1
            assert seqs(rest)[-1] == 4
            assert len(parts.chat.calls) == 1

    run(scenario)


def test_open_when_resuming_a_replay_then_replay_continues_after_that_seq(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, article = await stored_artist(parts)
            whole = await drain(await parts.portraits.open(parts.request(artist.id)))
            outcome = await parts.portraits.open(parts.request(artist.id, resume=f"replay-{article.id}:2"))
            assert as_stream(outcome).stream_id == f"replay-{article.id}"
            rest = await drain(outcome)
            assert seqs(rest) == list(range(3, len(whole) + 1))
            assert text_of(rest) == text_of(whole[2:])
            assert isinstance(rest[-1].payload, Done)
            assert parts.chat.calls == []

    run(scenario)


def test_open_when_resuming_another_artists_job_then_fresh_answer(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            other = await parts.add_artist("Miles Davis")
            other_stream = await parts.portraits.open(parts.request(other.id))
            await drain(other_stream)
            artist, article = await stored_artist(parts)
            resume = f"{as_stream(other_stream).stream_id}:2"
            outcome = await parts.portraits.open(parts.request(artist.id, resume=resume))
            assert as_stream(outcome).stream_id == f"replay-{article.id}"
            events = await drain(outcome)
            assert events[0].seq == 1 and text_of(events) == STORED_MARKDOWN
            assert len(parts.chat.calls) == 1  # only the other artist's

    run(scenario)


def test_open_when_resuming_another_artists_replay_then_fresh_answer(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            other, other_article = await stored_artist(parts, "Miles Davis")
            artist, article = await stored_artist(parts)
            resume = f"replay-{other_article.id}:2"
            outcome = await parts.portraits.open(parts.request(artist.id, resume=resume))
            assert as_stream(outcome).stream_id == f"replay-{article.id}"
            events = await drain(outcome)
            assert seqs(events)[0] == 1
            first = events[0].payload
            assert isinstance(first, Metadata) and first.artist_id == artist.id != other.id

    run(scenario)


@pytest.mark.parametrize(
    "resume", ["replay-²:1", "replay-99999999999999999999:1", "zz:1", "replay-0:1", "deadbeef:2", "nonsense"]
)
def test_open_when_resume_unknown_or_garbage_then_fresh_answer(sqlite_database: str, resume: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, article = await stored_artist(parts)
            outcome = await parts.portraits.open(parts.request(artist.id, resume=resume))
            assert as_stream(outcome).stream_id == f"replay-{article.id}"
            events = await drain(outcome)
            assert seqs(events)[0] == 1 and text_of(events) == STORED_MARKDOWN

    run(scenario)


@pytest.mark.parametrize("past", [0, 5])
def test_open_when_resuming_at_end_of_finished_job_then_nothing_after(
    sqlite_database: str, past: int
) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist = await parts.add_artist()
            first = await parts.portraits.open(parts.request(artist.id))
            events = await drain(first)
            job_id, last = as_stream(first).stream_id, events[-1].seq
            resume = f"{job_id}:{last + past}"
            assert await parts.portraits.open(parts.request(artist.id, resume=resume)) == NothingAfter()
            assert await parts.portraits.follow_job(job_id, resume) == NothingAfter()
            assert len(parts.chat.calls) == 1

    run(scenario)


@pytest.mark.parametrize("past", [0, 5])
def test_open_when_resuming_at_end_of_replay_then_nothing_after(sqlite_database: str, past: int) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, article = await stored_artist(parts)
            whole = await drain(await parts.portraits.open(parts.request(artist.id)))
            resume = f"replay-{article.id}:{len(whole) + past}"
            assert await parts.portraits.open(parts.request(artist.id, resume=resume)) == NothingAfter()

    run(scenario)


def test_open_when_markdown_format_then_resume_ignored(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, article = await stored_artist(parts)
            resume = f"replay-{article.id}:2"
            request = dataclasses.replace(parts.request(artist.id, resume=resume), format="markdown")
            events = await drain(await parts.portraits.open(request))
            assert seqs(events)[0] == 1
            assert text_of(events) == STORED_MARKDOWN

    run(scenario)


# --- joining -------------------------------------------------------------------------------------------


def test_open_when_two_streams_ask_for_one_key_then_one_job_and_one_call(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate), script("never ", "used.")) as parts:
            artist = await parts.add_artist()
            request = parts.request(artist.id)
            first, second = await asyncio.gather(parts.portraits.open(request), parts.portraits.open(request))
            assert as_stream(first).stream_id == as_stream(second).stream_id
            job = running_job(parts, artist.id)
            assert job.readers == 2
            await reached(gate)
            gate.open()
            one, two = await asyncio.gather(drain(first), drain(second))
            assert text_of(one) == text_of(two) == "Hello world."
            assert isinstance(one[-1].payload, Done) and isinstance(two[-1].payload, Done)
            assert len(parts.chat.calls) == 1
            assert job.readers == 0 and job.status == "done"

    run(scenario)


# --- origins: job and sync -------------------------------------------------------------------------------


def test_open_when_origin_job_then_accepted_and_runs_to_its_end_without_reader(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate), grace=10.0) as parts:
            artist = await parts.add_artist()
            outcome = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(outcome, Accepted)
            job = outcome.job
            await reached(gate)
            parts.clock.advance(60.0)  # far past the grace: nobody reads, the job goes on
            await settle()
            assert job.running and job.status == "running"
            assert await parts.portraits.job(job.id) is job
            gate.open()
            await finished(job)
            assert job.status == "done" and job.version == 1
            _, article = await parts.articles.lookup(artist.id, "en", "long")
            assert article is not None and article.markdown == "Hello world."

    run(scenario)


def test_open_when_stream_reader_leaves_and_grace_passes_then_job_cancelled(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate), grace=10.0) as parts:
            artist = await parts.add_artist()
            await read_until(await parts.portraits.open(parts.request(artist.id)), 2)
            job = running_job(parts, artist.id)
            parts.clock.advance(9.0)
            await settle()
            assert job.running  # still inside the grace
            parts.clock.advance(2.0)
            await finished(job)
            assert job.status == "cancelled"
            assert (await parts.articles.lookup(artist.id, "en", "long"))[1] is None

    run(scenario)


def test_open_when_origin_job_and_portrait_stored_then_stored(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist, article = await stored_artist(parts)
            outcome = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(outcome, Stored)
            assert (outcome.artist.id, outcome.article.id) == (artist.id, article.id)
            assert parts.chat.calls == []

    run(scenario)


def test_open_when_origin_sync_then_waits_and_returns_new_article(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist = await parts.add_artist()
            async with asyncio.timeout(1):
                outcome = await parts.portraits.open(parts.request(artist.id, origin="sync"))
            assert isinstance(outcome, Stored)
            assert outcome.artist.id == artist.id
            assert (outcome.article.version, outcome.article.markdown) == (1, "Hello world.")
            assert outcome.article.writer == "upstream" and outcome.article.model == "scripted-model"

    run(scenario)


def test_open_when_origin_sync_and_generation_fails_then_failed_with_code(sqlite_database: str) -> None:
    async def scenario() -> None:
        failure = errors.upstream_timeout("The writing service took too long.")
        async with generation_parts(sqlite_database, ["Hel", failure], continuation="off") as parts:
            artist = await parts.add_artist()
            async with asyncio.timeout(1):
                outcome = await parts.portraits.open(parts.request(artist.id, origin="sync"))
            assert isinstance(outcome, Failed)
            assert outcome.error.code == "upstream_timeout"
            assert outcome.error.message == "The writing service took too long."
            assert (await parts.portraits.job(outcome.job_id)).status == "error"
            assert (await parts.articles.lookup(artist.id, "en", "long"))[1] is None

    run(scenario)


def test_open_when_origin_sync_outlasts_sync_wait_then_still_writing(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()  # never opened
        async with generation_parts(sqlite_database, gated(gate), sync_wait=0.05) as parts:
            artist = await parts.add_artist()
            async with asyncio.timeout(1):
                outcome = await parts.portraits.open(parts.request(artist.id, origin="sync"))
            assert isinstance(outcome, StillWriting)
            assert outcome.job.running and outcome.job.text == "Hello "
            assert parts.portraits.registry.running((artist.id, "en", "long")) is outcome.job

    run(scenario)


# --- the rate limit --------------------------------------------------------------------------------------


def test_open_when_anonymous_second_new_stream_then_refusal_stream(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH), rate="1/minute") as parts:
            first, second = await parts.add_artist("Nina Simone"), await parts.add_artist("Miles Davis")
            await drain(await parts.portraits.open(parts.request(first.id)))
            outcome = await parts.portraits.open(parts.request(second.id))
            assert as_stream(outcome).stream_id.startswith("refused-")
            events = await drain(outcome)
            assert seqs(events) == [1, 2]
            metadata, error = events[0].payload, events[1].payload
            assert isinstance(metadata, Metadata)
            assert (metadata.artist_id, metadata.cached, metadata.job_id) == (second.id, False, None)
            assert isinstance(error, Error)
            assert (error.code, error.message, error.retryable) == (
                "rate_limited",
                RATE_LIMITED_MESSAGE,
                True,
            )
            assert error.retry_after is not None and 1 <= error.retry_after <= 60
            assert len(parts.chat.calls) == 1
            assert parts.portraits.registry.running((second.id, "en", "long")) is None

    run(scenario)


def test_open_when_anonymous_second_new_job_then_refused(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH), rate="1/minute") as parts:
            first, second = await parts.add_artist("Nina Simone"), await parts.add_artist("Miles Davis")
            accepted = await parts.portraits.open(parts.request(first.id, origin="job"))
            assert isinstance(accepted, Accepted)
            outcome = await parts.portraits.open(parts.request(second.id, origin="job"))
            assert isinstance(outcome, Refused)
            assert (outcome.code, outcome.message) == ("rate_limited", RATE_LIMITED_MESSAGE)
            assert outcome.retry_after is not None and 1 <= outcome.retry_after <= 60
            await finished(accepted.job)
            assert len(parts.chat.calls) == 1

    run(scenario)


def test_open_when_anonymous_joins_running_job_past_limit_then_not_counted(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate), rate="1/minute") as parts:
            artist = await parts.add_artist()
            first = await parts.portraits.open(parts.request(artist.id))
            joined = await parts.portraits.open(parts.request(artist.id))  # the limit is used up already
            assert as_stream(joined).stream_id == as_stream(first).stream_id
            gate.open()
            events = await drain(joined)
            await drain(first)
            assert isinstance(events[-1].payload, Done)
            assert len(parts.chat.calls) == 1

    run(scenario)


def test_open_when_anonymous_past_limit_asks_stored_portrait_then_replayed(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH), rate="1/minute") as parts:
            fresh = await parts.add_artist("Miles Davis")
            await drain(await parts.portraits.open(parts.request(fresh.id)))  # the one new generation
            artist, article = await stored_artist(parts)
            for _ in range(3):
                outcome = await parts.portraits.open(parts.request(artist.id))
                assert as_stream(outcome).stream_id == f"replay-{article.id}"
                assert text_of(await drain(outcome)) == STORED_MARKDOWN
            assert len(parts.chat.calls) == 1

    run(scenario)


def test_open_when_trusted_client_starts_many_then_never_limited(sqlite_database: str) -> None:
    async def scenario() -> None:
        scripts = [script(*FRESH) for _ in range(3)]
        async with generation_parts(sqlite_database, *scripts, rate="1/minute") as parts:
            for name in ("Nina Simone", "Miles Davis", "Billie Holiday"):
                artist = await parts.add_artist(name)
                outcome = await parts.portraits.open(parts.request(artist.id, origin="job", client=TRUSTED))
                assert isinstance(outcome, Accepted), outcome
                await finished(outcome.job)
                assert outcome.job.status == "done"
            assert len(parts.chat.calls) == 3

    run(scenario)


# --- the circuit breaker ---------------------------------------------------------------------------------


def test_open_when_circuit_open_then_new_job_refused_upstream_unavailable(sqlite_database: str) -> None:
    async def scenario() -> None:
        failure = errors.upstream_connection("The writing service could not be reached.")
        async with generation_parts(
            sqlite_database, [failure], script(*FRESH), fail_max=1, reset_timeout=30.0
        ) as parts:
            first, second = await parts.add_artist("Nina Simone"), await parts.add_artist("Miles Davis")
            failed = await parts.portraits.open(parts.request(first.id, origin="sync"))
            assert isinstance(failed, Failed) and failed.error.code == "upstream_connection"
            outcome = await parts.portraits.open(parts.request(second.id, origin="job", client=TRUSTED))
            assert isinstance(outcome, Refused)
            assert (outcome.code, outcome.retry_after) == ("upstream_unavailable", 30)
            assert len(parts.chat.calls) == 1
            assert parts.portraits.registry.running((second.id, "en", "long")) is None

    run(scenario)


def test_open_when_circuit_open_then_stream_gets_upstream_unavailable_error(sqlite_database: str) -> None:
    async def scenario() -> None:
        failure = errors.upstream_connection("The writing service could not be reached.")
        async with generation_parts(sqlite_database, [failure], fail_max=1, reset_timeout=30.0) as parts:
            artist = await parts.add_artist()
            await drain(await parts.portraits.open(parts.request(artist.id)))  # fails, opens the circuit
            parts.clock.advance(10.0)
            events = await drain(await parts.portraits.open(parts.request(artist.id)))
            assert [event.type for event in events] == ["metadata", "error"]
            error = events[1].payload
            assert isinstance(error, Error)
            assert (error.code, error.retryable, error.retry_after) == ("upstream_unavailable", True, 20)
            assert len(parts.chat.calls) == 1

    run(scenario)


# --- jobs by id ------------------------------------------------------------------------------------------


def test_follow_job_when_id_unknown_then_job_not_found(sqlite_database: str) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            with pytest.raises(JobNotFound):
                await parts.portraits.follow_job("0123abcd", None)
            with pytest.raises(JobNotFound):
                await parts.portraits.job("0123abcd")

    run(scenario)


def test_cancel_when_job_running_then_ends_cancelled(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()  # never opened: the job only ends by being cancelled
        async with generation_parts(sqlite_database, gated(gate)) as parts:
            artist = await parts.add_artist()
            accepted = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(accepted, Accepted)
            await reached(gate)
            async with asyncio.timeout(1):
                await parts.portraits.cancel(accepted.job.id)
            job = await parts.portraits.job(accepted.job.id)
            assert not job.running and job.status == "cancelled"
            assert job.error is not None and job.error.code == "cancelled"
            last = (await parts.log(job.id))[-1].payload
            assert isinstance(last, Error) and last.code == "cancelled" and last.retryable is False
            assert parts.portraits.registry.running((artist.id, "en", "long")) is None
            assert (await parts.articles.lookup(artist.id, "en", "long"))[1] is None

    run(scenario)


def test_catalog_delete_when_artist_has_running_job_then_job_cancelled(sqlite_database: str) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate)) as parts:
            artist = await parts.add_artist()
            accepted = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(accepted, Accepted)
            await reached(gate)
            await parts.catalog.delete(artist.id)
            await finished(accepted.job)
            assert accepted.job.status == "cancelled"
            assert parts.portraits.registry.running((artist.id, "en", "long")) is None
            assert parts.chat.closed == 1

    run(scenario)


def test_open_when_artist_changes_while_the_portrait_is_written_then_stored_article_is_stale(
    sqlite_database: str,
) -> None:
    # Regression (review issue 9): staleness compared the artist's `updated_at` with the article's store
    # time, so a portrait written from the old facts and stored after the PATCH was labelled fresh.
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate)) as parts:
            artist = await parts.add_artist()
            accepted = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(accepted, Accepted)
            assert accepted.job.facts_version == artist.facts_version == 1
            await reached(gate)
            updated = await parts.catalog.update(artist.id, ArtistUpdate(notes="Born in Tryon in 1933."))
            assert updated.facts_version == 2
            gate.open()
            await finished(accepted.job)

            assert accepted.job.status == "done"
            current, article = await parts.articles.lookup(artist.id, "en", "long")
            assert article is not None and article.facts_version == 1
            assert article.created_at > current.updated_at  # stored after the change: a clock says fresh
            assert parts.articles.is_stale(article, current) is True
            summary = (await parts.articles.summaries([current], "en", "long"))[artist.id]
            assert summary.stale is True
            assert parts.articles.public_view(article, current).stale is True

    run(scenario)


def test_open_when_artist_unchanged_while_the_portrait_is_written_then_stored_article_is_fresh(
    sqlite_database: str,
) -> None:
    async def scenario() -> None:
        async with generation_parts(sqlite_database, script(*FRESH)) as parts:
            artist = await parts.add_artist()
            await parts.catalog.update(artist.id, ArtistUpdate(country="United States"))  # version 2
            accepted = await parts.portraits.open(parts.request(artist.id, origin="job"))
            assert isinstance(accepted, Accepted) and accepted.job.facts_version == 2
            await finished(accepted.job)
            current, article = await parts.articles.lookup(artist.id, "en", "long")
            assert article is not None and article.facts_version == 2
            assert parts.articles.is_stale(article, current) is False

    run(scenario)


# --- regressions ---------------------------------------------------------------------------------------


def test_open_when_circuit_refused_then_the_rate_limit_is_not_spent(sqlite_database: str) -> None:
    # Regression: the limiter was hit before the breaker, so a request the open circuit refused (which
    # started no generation) still used up the client's allowance.
    async def scenario() -> None:
        failure = errors.upstream_connection("The writing service could not be reached.")
        async with generation_parts(
            sqlite_database, [failure], script(*FRESH), fail_max=1, reset_timeout=30.0, rate="2/minute"
        ) as parts:
            a, b, c = [await parts.add_artist(name) for name in ("A", "B", "C")]
            failed = await parts.portraits.open(parts.request(a.id, origin="sync"))
            assert isinstance(failed, Failed)  # one generation: counted
            refused = await parts.portraits.open(parts.request(b.id, origin="job"))
            assert isinstance(refused, Refused) and refused.code == "upstream_unavailable"  # not counted
            parts.clock.advance(31.0)  # half-open: one trial may go
            accepted = await parts.portraits.open(parts.request(c.id, origin="job"))
            assert isinstance(accepted, Accepted)

    run(scenario)


def test_open_when_resuming_a_stream_of_another_language_or_length_then_fresh_answer(
    sqlite_database: str,
) -> None:
    # Regression: only the artist was compared, so a request for the long English portrait with the id of
    # the short French one's replay streamed the French text.
    async def scenario() -> None:
        async with generation_parts(sqlite_database) as parts:
            artist, english = await stored_artist(parts)
            french = await parts.articles.store(
                draft(artist.id, "# Nina\n\nEn français.\n", language="fr", length="short")
            )
            outcome = await parts.portraits.open(parts.request(artist.id, resume=f"replay-{french.id}:1"))
            assert as_stream(outcome).stream_id == f"replay-{english.id}"
            events = await drain(outcome)
            assert seqs(events)[0] == 1 and text_of(events) == STORED_MARKDOWN

    run(scenario)


def test_open_when_resuming_past_the_end_of_a_running_job_then_from_its_start(sqlite_database: str) -> None:
    # Regression: a seq the log never reached left the reader waiting for events it would never get.
    async def scenario() -> None:
        gate = Gate()
        async with generation_parts(sqlite_database, gated(gate)) as parts:
            artist = await parts.add_artist()
            first = await parts.portraits.open(parts.request(artist.id))
            job_id = as_stream(first).stream_id
            await read_until(first, 2)
            resumed = await parts.portraits.open(parts.request(artist.id, resume=f"{job_id}:99"))
            gate.open()
            events = await drain(resumed)
            assert seqs(events)[0] == 1 and text_of(events) == "Hello world."

    run(scenario)
