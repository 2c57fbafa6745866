"""Two processes as one service, in one event loop: two `generation_parts` (each its own registry, broker,
board, breaker and limiter, as `app.main.services()` builds them with ATELIER_REDIS_URL) on one private
redis-server and one SQLite file, with scripted chat models.

What only real processes show (SIGKILL, SIGSTOP, a Redis restart under uvicorn) is in tests/cluster/; here
the rules themselves, fast: one job per portrait across processes, a reader and a resume on the other
process, the grace counted on both, a cancel from the other process, the circuit shared, a handover at
shutdown continued from the text with a `takeover` seam, and Redis going away.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from app.generation.jobs import Job
from app.generation.portrait import Accepted, Refused
from app.llm import errors
from app.llm.client import Finish
from app.streaming.events import Continued, Done, Error, Event, Metadata, Text
from tests.fakes.chat import USAGE, Gate, Step, script
from tests.generation.parts import TRUSTED, GenerationParts, generation_parts
from tests.generation.test_portrait import as_stream, drain, read_until, seqs, text_of
from tests.redis_server import RedisServer, redis_server, unique_prefix

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0  # bound on every wait for the other process (its tick, its messages)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with redis_server() as running:
        yield running


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(bounded(scenario()))


async def bounded(scenario: Awaitable[None], limit: float = 20.0) -> None:
    """The scenario, failing after `limit` seconds with every task's stack (what a hang waits on)."""
    task = asyncio.ensure_future(scenario)
    done, _ = await asyncio.wait([task], timeout=limit)
    if not done:
        stacks = io.StringIO()
        for other in asyncio.all_tasks():
            print(f"--- {other.get_name()}", file=stacks)
            other.print_stack(limit=12, file=stacks)
        task.cancel()
        raise AssertionError(f"the scenario did not end within {limit} s; tasks:\n{stacks.getvalue()}")
    task.result()


@asynccontextmanager
async def two_processes(
    database_url: str,
    server: RedisServer,
    a_scripts: Sequence[Sequence[Step]] = (),
    b_scripts: Sequence[Sequence[Step]] = (),
    **options: float | str,
) -> AsyncIterator[tuple[GenerationParts, GenerationParts, AsyncExitStack]]:
    """A and B on one Redis (a prefix of their own) and one database; the stack closes A alone first."""
    shared = (server.url, unique_prefix())
    async with AsyncExitStack() as b_stack:
        b = await b_stack.enter_async_context(
            generation_parts(database_url, *b_scripts, redis=shared, **options)  # type: ignore[arg-type]
        )
        async with AsyncExitStack() as a_stack:
            a = await a_stack.enter_async_context(
                generation_parts(database_url, *a_scripts, redis=shared, **options)  # type: ignore[arg-type]
            )
            yield a, b, a_stack


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait (bounded) for what another process does at its own pace: its tick, its messages."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT} s: {what}") from None


def gated(gate: Gate, before: str = "Hello ", after: str = "world.") -> list[Step]:
    return [before, gate, after, Finish(reason="stop", usage=USAGE)]


async def running_on(parts: GenerationParts, artist_id: int) -> Job:
    job = parts.registry.running((artist_id, "en", "long"))
    assert job is not None and not job.remote
    return job


def test_two_processes_asked_for_one_portrait_at_once_make_one_job(
    sqlite_database: str, server: RedisServer
) -> None:
    async def scenario() -> None:
        async with two_processes(sqlite_database, server, [script("Hello ", "world.")], [script("Bye.")]) as (
            a,
            b,
            _,
        ):
            artist = await a.add_artist()
            opened = await asyncio.gather(
                a.portraits.open(a.request(artist.id)), b.portraits.open(b.request(artist.id))
            )
            streams = [as_stream(outcome) for outcome in opened]
            assert streams[0].stream_id == streams[1].stream_id  # one job, whoever claimed it
            texts = [text_of(await drain(stream)) for stream in streams]
            assert texts == ["Hello world.", "Hello world."]
            assert len(a.chat.calls) + len(b.chat.calls) == 1  # one upstream call
            _, stored = await b.articles.lookup(artist.id, "en", "long")
            assert stored is not None and stored.markdown == "Hello world."

    run(scenario)


def test_a_reader_on_b_joins_the_job_on_a_and_resumes_there_from_an_id_read_on_a(
    sqlite_database: str, server: RedisServer
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(sqlite_database, server, [gated(gate)]) as (a, b, _):
            artist = await a.add_artist()
            on_a = await read_until(await a.portraits.open(a.request(artist.id)), 2)  # metadata, "Hello "
            job = await running_on(a, artist.id)
            resumed = await b.portraits.open(b.request(artist.id, resume=f"{job.id}:{on_a[-1].seq}"))
            joined = await b.portraits.open(b.request(artist.id))
            gate.open()
            rest = await drain(resumed)
            whole = await drain(joined)
            # no gap, no repeat (a reader that fell behind gets runs of text merged: compare the text)
            assert rest[0].seq == on_a[-1].seq + 1 and rest[-1].seq == whole[-1].seq
            assert text_of(on_a) + text_of(rest) == text_of(whole) == "Hello world."
            assert isinstance(whole[-1].payload, Done) and b.chat.calls == []
            polled = await b.portraits.job(job.id)
            assert polled.status == "done" and polled.article_id == whole[-1].payload.article_id

    run(scenario)


def test_the_grace_ends_only_when_no_process_has_a_reader(sqlite_database: str, server: RedisServer) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(sqlite_database, server, [gated(gate)], grace=10.0) as (a, b, _):
            artist = await a.add_artist()
            reader_a = as_stream(await a.portraits.open(a.request(artist.id)))
            job = await running_on(a, artist.id)
            reader_b = as_stream(await b.portraits.open(b.request(artist.id)))
            board = a.portraits.registry.board
            assert board is not None
            await eventually(lambda: _readers(board, job.id, 2), "both readers counted")

            assert reader_a.on_close is not None
            reader_a.on_close()  # the reader on A leaves: B still has one
            heard: list[str] = []
            watching = _Heard(heard)
            jobs_log = logging.getLogger("atelier.jobs")
            level = jobs_log.level
            jobs_log.setLevel(logging.INFO)
            jobs_log.addHandler(watching)
            try:
                a.clock.advance(
                    10.0
                )  # A's grace ends: A asks the board, finds B's reader, and keeps watching
                await eventually(_said(heard, "on other processes: watching"), "A watching B's reader")
            finally:
                jobs_log.removeHandler(watching)
                jobs_log.setLevel(level)
            assert job.running and not job.cancel_requested

            assert reader_b.on_close is not None
            reader_b.on_close()  # the last reader, on B, leaves: the grace starts over on A
            await eventually(lambda: _grace_armed(job), "the grace armed again")
            a.clock.advance(10.0)
            async with asyncio.timeout(WAIT):
                await job.finished.wait()
            assert job.status == "cancelled"
            gate.open()

    run(scenario)


def test_a_cancel_on_b_ends_the_job_running_on_a(sqlite_database: str, server: RedisServer) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(sqlite_database, server, [gated(gate)]) as (a, b, _):
            artist = await a.add_artist()
            accepted = await a.portraits.open(a.request(artist.id, origin="job", client=TRUSTED))
            job = await running_on(a, artist.id)
            assert accepted is not None
            await reached_text(a, job)
            await b.portraits.cancel(job.id)  # returns once the job has ended, on A
            assert job.status == "cancelled"
            log = await b.log(job.id)
            assert isinstance(log[-1].payload, Error) and log[-1].payload.code == "cancelled"
            assert (await b.articles.lookup(artist.id, "en", "long"))[1] is None

    run(scenario)


def test_the_circuit_opened_by_a_fails_fast_on_b(sqlite_database: str, server: RedisServer) -> None:
    async def scenario() -> None:
        failing = [errors.upstream_error("boom")]
        async with two_processes(sqlite_database, server, [failing, failing], fail_max=2) as (a, b, _):
            for name in ("Nina Simone", "Miles Davis"):
                artist = await a.add_artist(name)
                events = await drain(await a.portraits.open(a.request(artist.id)))
                assert isinstance(events[-1].payload, Error)
            third = await a.add_artist("Fela Kuti")
            refused = await b.portraits.open(b.request(third.id, origin="job", client=TRUSTED))
            assert isinstance(refused, Refused) and refused.code == "upstream_unavailable"
            assert b.chat.calls == []

    run(scenario)


def test_the_generation_limit_counts_a_client_on_every_process(
    sqlite_database: str, server: RedisServer
) -> None:
    async def scenario() -> None:
        async with two_processes(
            sqlite_database, server, [script("A.")], [script("B.")], rate="2/minute"
        ) as (a, b, _):
            first, second, third = [
                await a.add_artist(name) for name in ("Nina Simone", "Miles Davis", "Fela")
            ]
            assert isinstance(await a.portraits.open(a.request(first.id, origin="job")), Accepted)
            assert isinstance(await b.portraits.open(b.request(second.id, origin="job")), Accepted)
            refused = await a.portraits.open(a.request(third.id, origin="job"))  # the third, anywhere
            assert isinstance(refused, Refused) and refused.code == "rate_limited"
            assert refused.retry_after is not None and refused.retry_after > 0

    run(scenario)


def test_a_process_stopping_hands_its_job_over_and_another_goes_on_from_its_text(
    sqlite_database: str, server: RedisServer
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(sqlite_database, server, [gated(gate)], [script("world.")], grace=10.0) as (
            a,
            b,
            a_stack,
        ):
            artist = await a.add_artist()
            accepted = await a.portraits.open(a.request(artist.id, origin="job", client=TRUSTED))
            assert accepted is not None
            job = await running_on(a, artist.id)
            await reached_text(a, job)
            reader = await b.portraits.open(b.request(artist.id))

            await a_stack.aclose()  # A stops (SIGTERM): its job is handed over, not cancelled

            events = await drain_within(reader)
            seams = [event.payload for event in events if isinstance(event.payload, Continued)]
            assert [(seam.reason, seam.attempt) for seam in seams] == [("takeover", 1)]
            assert text_of(events) == "Hello world."
            assert seqs(events) == list(range(1, len(events) + 1))
            done = events[-1].payload
            assert isinstance(done, Done) and done.continuations == 1
            assert done.usage is None  # what A's call used is lost with A
            # B went on from A's text, as a continuation (prefix mode: the text as the assistant's turn)
            assert b.chat.calls[0][-1] == {"role": "assistant", "content": "Hello ", "prefix": True}
            _, stored = await b.articles.lookup(artist.id, "en", "long")
            assert stored is not None and stored.version == 1  # one article, stored by B for A's job
            assert (stored.job_id, stored.markdown) == (job.id, "Hello world.")
            gate.open()

    run(scenario)


def test_an_owner_that_lost_its_job_while_stalled_writes_nothing_more_and_one_article_is_stored(
    sqlite_database: str, server: RedisServer
) -> None:
    """A stall past the lease, as the board sees it: the job's owner is a process without a lease. B takes
    the job over and finishes it; A, coming back, finds it is no longer the owner (its tick, or its next
    append refused at a seq B wrote) and stops without a word."""

    async def scenario() -> None:
        gate = Gate()
        async with two_processes(sqlite_database, server, [gated(gate)], [script("world.")]) as (a, b, _):
            artist = await a.add_artist()
            await a.portraits.open(a.request(artist.id, origin="job", client=TRUSTED))
            job = await running_on(a, artist.id)
            await reached_text(a, job)
            reader = await b.portraits.open(b.request(artist.id))
            board = a.registry.board
            assert board is not None
            await board.redis.hset(f"{board.prefix}job:{job.id}", "owner", "a-stalled-process")

            task = job.task
            assert task is not None
            events = await drain_within(reader)  # B took it over and finished it
            gate.open()  # A's call goes on: its next event would be at a seq B has written
            await asyncio.wait([task], timeout=WAIT)
            assert task.done()
            assert job.abandoned and job.remote  # A gave it up: a mirror of B's job from now on
            assert text_of(events) == "Hello world." and isinstance(events[-1].payload, Done)

            async def caught_up() -> bool:  # A follows the log again once its append was refused
                return text_of(await a.log(job.id)) == "Hello world."

            await eventually(caught_up, "A's view of the log caught up with B's writing")
            log = await a.log(job.id)
            assert [event.seq for event in log] == list(
                range(1, len(log) + 1)
            )  # nothing of A's after the takeover
            _, stored = await b.articles.lookup(artist.id, "en", "long")
            assert stored is not None and (stored.version, stored.markdown) == (1, "Hello world.")

    run(scenario)


def test_with_continuation_off_a_job_handed_over_ends_with_worker_lost(
    sqlite_database: str, server: RedisServer
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(
            sqlite_database, server, [gated(gate)], [script("never asked")], continuation="off"
        ) as (a, b, a_stack):
            artist = await a.add_artist()
            await a.portraits.open(a.request(artist.id, origin="job", client=TRUSTED))
            job = await running_on(a, artist.id)
            await reached_text(a, job)
            reader = await b.portraits.open(b.request(artist.id))
            await a_stack.aclose()

            events = await drain_within(reader)
            end = events[-1].payload
            assert isinstance(end, Error) and (end.code, end.retryable) == ("worker_lost", True)
            assert text_of(events) == "Hello " and b.chat.calls == []
            assert (await b.articles.lookup(artist.id, "en", "long"))[1] is None  # nothing stored
            gate.open()

    run(scenario)


def test_when_redis_goes_away_new_and_running_generations_end_with_broker_unavailable(
    sqlite_database: str,
) -> None:
    async def scenario(server: RedisServer) -> None:
        gate = Gate()
        async with generation_parts(
            sqlite_database, gated(gate), redis=(server.url, unique_prefix())
        ) as parts:
            artist = await parts.add_artist()
            other = await parts.add_artist("Miles Davis")
            running = await parts.portraits.open(parts.request(artist.id))
            job = await running_on(parts, artist.id)
            await reached_text(parts, job)

            server.stop()
            refused = await parts.portraits.open(parts.request(other.id, origin="job", client=TRUSTED))
            assert isinstance(refused, Refused) and refused.code == "broker_unavailable"
            gate.open()
            async with asyncio.timeout(WAIT):
                await job.finished.wait()
            assert job.status == "error" and job.error is not None
            assert job.error.code == "broker_unavailable"
            events = await drain_within(running)
            assert isinstance(events[-1].payload, Error) and events[-1].payload.code == "broker_unavailable"
            assert events[-1].seq == 0  # said by this process, not read from the log: no id to resume from
            server.start()
            assert (await parts.articles.lookup(artist.id, "en", "long"))[1] is None  # nothing stored

    with redis_server() as own:
        asyncio.run(bounded(scenario(own)))


# --- helpers -----------------------------------------------------------------------------------------------


class _Heard(logging.Handler):
    """What a logger said, as text: a registry's decisions it announces (no other sign of them from outside)."""

    def __init__(self, heard: list[str]) -> None:
        super().__init__(logging.INFO)
        self.heard = heard

    def emit(self, record: logging.LogRecord) -> None:
        self.heard.append(record.getMessage())


def _said(heard: list[str], words: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return any(words in message for message in heard)

    return check


async def _readers(board: object, job_id: str, count: int) -> bool:
    from app.generation.board import JobBoard

    assert isinstance(board, JobBoard)
    return await board.readers(job_id) == count


async def _grace_armed(job: Job) -> bool:
    return job.grace is not None


async def reached_text(parts: GenerationParts, job: Job) -> None:
    async def written() -> bool:
        return any(isinstance(event.payload, Text) for event in await parts.log(job.id))

    await eventually(written, "the job's first text")


async def drain_within(outcome: object) -> list[Event]:
    """Every event of a stream to its end, allowing for a takeover (the lease and a scan)."""
    stream = as_stream(outcome)  # type: ignore[arg-type]
    events: list[Event] = []
    try:
        async with asyncio.timeout(WAIT):
            async for batch in stream.batches:
                events.extend(batch or [])
    finally:
        if stream.on_close is not None:
            stream.on_close()
    assert not events or isinstance(events[0].payload, Metadata) or events[0].seq == 0
    return events
