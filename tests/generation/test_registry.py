"""`JobRegistry` (app/generation/registry.py): one running job per key, readers and grace, retention,
cancelling and shutdown.

Each test builds a registry on an in-process broker and a manual clock, launches jobs whose `work` is a
small coroutine of the test's own (it waits until released or cancelled), and drives time by hand: no
database, no upstream, no sleeping. Where the job's last event matters (a cancel), the job runs the real
`GenerationRun` with a scripted chat paused at a `Gate`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from app.articles.models import Article
from app.articles.service import ArticleDraft
from app.catalog.schemas import ArtistFacts
from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, JobKey, Origin
from app.generation.registry import JobRegistry
from app.generation.run import GenerationRun, Writer
from app.llm.breaker import Breaker
from app.llm.client import Finish
from app.streaming.broker import InProcessBroker
from app.streaming.events import Error, Event, Metadata, Payload
from tests.fakes.chat import USAGE, Gate, ScriptedChat
from tests.fakes.clock import ManualClock

pytestmark = pytest.mark.timeout(10)

GRACE = 10.0
RETENTION = 900.0
EPSILON = 0.001
NINA: JobKey = (1, "en", "long")


# --- helpers -------------------------------------------------------------------------------------------


@dataclass
class Parts:
    clock: ManualClock
    broker: InProcessBroker
    registry: JobRegistry

    async def log(self, job: Job) -> list[Event]:
        batch = await self.broker.read(job.id, 0, wait=0)
        return [] if batch is None else batch.events


@asynccontextmanager
async def registry_parts(grace: float = GRACE, retention: float = RETENTION) -> AsyncIterator[Parts]:
    clock = ManualClock()
    broker = InProcessBroker(clock)
    registry = JobRegistry(broker=broker, clock=clock, grace=grace, retention=retention)
    try:
        yield Parts(clock, broker, registry)
    finally:
        await registry.aclose()
        await broker.aclose()


class Work:
    """A job's body: it starts, then waits until the test releases it (it ends normally) or the job is
    cancelled (it records that and lets the cancellation through, as a body that writes no event)."""

    def __init__(self) -> None:
        self.started: list[Job] = []
        self.cancelled: list[Job] = []
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.started.append(job)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(job)
            raise


def make_job(key: JobKey = NINA, origin: Origin = "stream") -> Job:
    artist_id, language, length = key
    return Job(
        id=uuid.uuid4().hex,
        artist_id=artist_id,
        facts=ArtistFacts(name=f"Artist {artist_id}"),
        language=language,
        length=length,  # type: ignore[arg-type]
        origin=origin,
    )


async def launched(parts: Parts, work: Callable[[Job], Awaitable[None]], **fields: Any) -> Job:
    """A job made by `make_job(**fields)`, launched with `work`, its task past its first step."""
    started = make_job(**fields)
    await parts.registry.launch(started, work)
    await turns()
    return started


async def turns(n: int = 5) -> None:
    """Let the event loop run the tasks that are ready (a cancellation reaching a job, a job's end)."""
    for _ in range(n):
        await asyncio.sleep(0)


async def ended(job: Job) -> None:
    async with asyncio.timeout(1):
        await job.finished.wait()


async def never_stored(draft: ArticleDraft) -> Article:
    raise AssertionError("a cancelled job must not store anything")


# --- starting ------------------------------------------------------------------------------------------


def test_starting_when_two_starters_race_for_one_key_then_they_share_one_job() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()

            async def start_or_join() -> Job:
                async with parts.registry.starting(NINA):
                    job = parts.registry.running(NINA)
                    if job is not None:
                        return job
                    await asyncio.sleep(0)  # an await between the check and the launch (limiter, breaker)
                    job = make_job(NINA)
                    await parts.registry.launch(job, work)
                    return job

            async with asyncio.timeout(1):
                first, second = await asyncio.gather(start_or_join(), start_or_join())
            await turns()

            assert first is second
            assert parts.registry.running(NINA) is first
            assert work.started == [first]

    asyncio.run(scenario())


def test_starting_when_one_key_is_held_then_another_key_starts_without_waiting() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            other_key: JobKey = (2, "en", "long")
            held, release = asyncio.Event(), asyncio.Event()

            async def hold_nina() -> None:
                async with parts.registry.starting(NINA):
                    held.set()
                    await release.wait()

            async def start_nina() -> None:
                async with parts.registry.starting(NINA):
                    pass

            holder = asyncio.create_task(hold_nina())
            async with asyncio.timeout(1):
                await held.wait()
            blocked = asyncio.create_task(start_nina())

            async with asyncio.timeout(1), parts.registry.starting(other_key):
                other = make_job(other_key)
                await parts.registry.launch(other, Work())
            await turns()

            assert parts.registry.running(other_key) is other
            assert not blocked.done()  # the same key's lock is still held
            release.set()
            async with asyncio.timeout(1):
                await asyncio.gather(holder, blocked)

    asyncio.run(scenario())


# --- grace ---------------------------------------------------------------------------------------------


def test_grace_when_stream_job_has_no_reader_then_cancelled_once_grace_passes_and_not_before() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")

            parts.clock.advance(GRACE - EPSILON)
            await turns()
            assert job.running and work.cancelled == []

            parts.clock.advance(EPSILON)
            await ended(job)
            assert work.cancelled == [job]
            assert parts.registry.running(NINA) is None

    asyncio.run(scenario())


def test_grace_when_reader_attached_then_job_runs_past_grace() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")

            parts.registry.attach(job)
            assert job.grace is None and parts.clock.pending == 0  # the timer is disarmed, not just ignored

            parts.clock.advance(GRACE * 10)
            await turns()
            assert job.running and work.cancelled == []

    asyncio.run(scenario())


def test_grace_when_one_of_two_readers_detaches_then_job_keeps_running() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")
            parts.registry.attach(job)
            parts.registry.attach(job)

            parts.registry.detach(job)
            parts.clock.advance(GRACE * 10)
            await turns()

            assert job.readers == 1
            assert job.running and work.cancelled == []

    asyncio.run(scenario())


def test_grace_when_last_reader_detaches_then_cancelled_grace_after_the_detach() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")
            parts.registry.attach(job)
            parts.clock.advance(
                GRACE * 3
            )  # read for a while: the grace counts from the detach, not the start

            parts.registry.detach(job)
            parts.clock.advance(GRACE - EPSILON)
            await turns()
            assert job.running and work.cancelled == []

            parts.clock.advance(EPSILON)
            await ended(job)
            assert work.cancelled == [job]

    asyncio.run(scenario())


def test_grace_when_reader_reattaches_within_grace_then_job_keeps_running() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")
            parts.registry.attach(job)
            parts.registry.detach(job)
            parts.clock.advance(GRACE - 1)

            parts.registry.attach(job)  # the reader reconnects
            parts.clock.advance(GRACE * 10)
            await turns()

            assert job.running and work.cancelled == []
            work.release.set()
            await ended(job)
            assert work.cancelled == []

    asyncio.run(scenario())


def test_keep_alive_when_job_origin_joins_stream_job_then_grace_no_longer_cancels_it() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")

            await parts.registry.keep_alive(job, "job")
            assert job.grace is None and parts.clock.pending == 0

            parts.clock.advance(GRACE * 10)
            await turns()

            assert job.origin == "job" and job.runs_to_end
            assert job.running and work.cancelled == []
            parts.registry.attach(job)
            parts.registry.detach(job)  # a reader leaving no longer arms anything either
            assert parts.clock.pending == 0
            work.release.set()
            await ended(job)
            assert work.cancelled == []

    asyncio.run(scenario())


def test_keep_alive_when_another_stream_joins_then_job_stays_a_stream_job() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="stream")

            await parts.registry.keep_alive(job, "stream")
            parts.clock.advance(GRACE)
            await ended(job)

            assert job.origin == "stream"
            assert work.cancelled == [job]

    asyncio.run(scenario())


@pytest.mark.parametrize("origin", ["job", "sync"])
def test_grace_when_job_or_sync_origin_then_no_timer_and_job_runs_to_its_end(origin: Origin) -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin=origin)
            assert job.grace is None and parts.clock.pending == 0

            parts.registry.attach(job)
            parts.registry.detach(job)
            assert job.grace is None and parts.clock.pending == 0

            parts.clock.advance(GRACE * 100)
            await turns()
            assert job.running and work.cancelled == []
            work.release.set()
            await ended(job)
            assert work.cancelled == []

    asyncio.run(scenario())


# --- retention -----------------------------------------------------------------------------------------


def test_retention_when_job_ended_then_record_and_log_kept_until_retention_passes() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = await launched(parts, work, origin="job")
            await parts.broker.append(job.id, Error("upstream_error", "boom", retryable=True))
            work.release.set()
            await ended(job)
            assert parts.registry.running(NINA) is None

            parts.clock.advance(RETENTION - EPSILON)
            assert parts.registry.get(job.id) is job
            assert await parts.broker.last_seq(job.id) == 1
            batch = await parts.broker.read(job.id, 0, wait=0)
            assert batch is not None and batch.closed

            parts.clock.advance(EPSILON)
            assert parts.registry.get(job.id) is None
            assert await parts.broker.last_seq(job.id) is None
            assert await parts.broker.read(job.id, 0, wait=0) is None
            assert parts.clock.pending == 0

    asyncio.run(scenario())


# --- cancelling ----------------------------------------------------------------------------------------


def test_cancel_when_job_is_writing_then_it_ends_cancelled_with_error_event_last() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            gate = Gate()
            chat = ScriptedChat(["Hello ", gate, "world.", Finish("stop", USAGE)])
            breaker = Breaker(2, 30.0, clock=parts.clock)
            run = GenerationRun(
                broker=parts.broker,
                writer=Writer(chat, "upstream"),
                store=never_stored,
                system_prompt="You write portraits.",
                breaker=breaker,
            )
            permit = await breaker.acquire()
            job = make_job(origin="job")
            await parts.registry.launch(job, lambda job: run(job, permit))
            async with asyncio.timeout(1):
                await gate.reached.wait()

            assert parts.registry.cancel(job) is True
            await ended(job)

            events = await parts.log(job)
            assert job.status == "cancelled"
            assert job.error == JobError("cancelled", CANCELLED_MESSAGE)
            assert [event.type for event in events] == ["metadata", "text", "error"]
            assert isinstance(events[0].payload, Metadata)
            assert events[-1].payload == Error("cancelled", CANCELLED_MESSAGE, retryable=False)
            assert parts.registry.running(job.key) is None
            assert parts.registry.cancel(job) is False  # already ended: nothing to cancel

    asyncio.run(scenario())


def test_cancel_artist_when_two_artists_have_jobs_then_only_that_artists_jobs_end() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            nina_en = await launched(parts, work, key=(1, "en", "long"))
            nina_fr = await launched(parts, work, key=(1, "fr", "short"), origin="job")
            miles = await launched(parts, work, key=(2, "en", "long"), origin="job")

            await parts.registry.cancel_artist(1)
            await ended(nina_en)
            await ended(nina_fr)
            await turns()

            assert {job.id for job in work.cancelled} == {nina_en.id, nina_fr.id}
            assert miles.running
            assert parts.registry.running((2, "en", "long")) is miles
            assert parts.registry.running((1, "en", "long")) is None
            assert parts.registry.running((1, "fr", "short")) is None

    asyncio.run(scenario())


def test_aclose_when_jobs_are_running_then_all_are_cancelled_and_no_timer_is_left() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        broker = InProcessBroker(clock)
        registry = JobRegistry(broker=broker, clock=clock, grace=GRACE, retention=RETENTION)
        work = Work()
        stream_job, api_job = make_job((1, "en", "long"), "stream"), make_job((2, "en", "long"), "job")
        await registry.launch(stream_job, work)
        await registry.launch(api_job, work)
        await turns()

        async with asyncio.timeout(1):
            await registry.aclose()

        assert not stream_job.running and not api_job.running
        assert {job.id for job in work.cancelled} == {stream_job.id, api_job.id}
        assert registry.running(stream_job.key) is None and registry.running(api_job.key) is None
        await broker.aclose()
        assert clock.pending == 0

    asyncio.run(scenario())


def test_cancel_when_task_never_ran_a_step_then_job_still_ends_with_cancelled_error() -> None:
    async def scenario() -> None:
        async with registry_parts() as parts:
            work = Work()
            job = make_job(origin="job")
            await parts.registry.launch(job, work)

            assert parts.registry.cancel(job) is True  # before the job's task ran at all
            await ended(job)

            events = await parts.log(job)
            batch = await parts.broker.read(job.id, 0, wait=0)
            assert work.started == []
            assert job.status == "cancelled"
            assert job.error == JobError("cancelled", CANCELLED_MESSAGE)
            assert [event.payload for event in events] == [
                Error("cancelled", CANCELLED_MESSAGE, retryable=False)
            ]
            assert batch is not None and batch.closed
            assert parts.registry.running(NINA) is None
            assert parts.registry.get(job.id) is job  # kept for its retention, like any ended job

    asyncio.run(scenario())


def test_aclose_when_a_job_was_cancelled_before_its_first_step_then_it_has_ended_when_aclose_returns() -> (
    None
):
    # Regression: aclose waited for the tasks only, not for the registry's own clean-up of a task that was
    # cancelled before it ran; with a broker that awaits on writes, it returned with the job still running.
    class SlowBroker(InProcessBroker):
        async def append(self, stream_id: str, payload: Payload) -> Event:
            await asyncio.sleep(0)
            return await super().append(stream_id, payload)

    async def scenario() -> None:
        clock = ManualClock()
        broker = SlowBroker(clock)
        registry = JobRegistry(broker=broker, clock=clock, grace=10, retention=900)
        started = asyncio.Event()

        async def work(job: Job) -> None:
            started.set()

        job = Job(
            id="a1", artist_id=1, facts=ArtistFacts(name="N"), language="en", length="long", origin="job"
        )
        await registry.launch(job, work)
        await registry.aclose()  # before the task's first step

        assert not started.is_set()
        assert job.finished.is_set() and registry.running(job.key) is None
        batch = await broker.read(job.id, 0, wait=0)
        assert batch is not None and [event.type for event in batch.events] == ["error"]
        await broker.aclose()

    asyncio.run(scenario())
