"""The registry of jobs in this process: one running job per key, its readers, its grace, its retention,
and cancelling it. It never calls the upstream: what a job does is `run.py`'s; when it runs is decided
by the portrait service (`portrait.py`).

Lifetimes (every one bounded, every timer on the injected clock):
- a job started by a stream is cancelled `grace` seconds after its last reader left (or after it started,
  if no reader ever came), long enough for a reconnect to resume it;
- any other job runs to its end (the upstream call is bounded by the client's timeouts);
- a finished job's log and record stay `retention` seconds, for resume and polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, JobKey
from app.kit.clock import Clock, Timer
from app.streaming.broker import Broker
from app.streaming.events import Error

log = logging.getLogger("atelier.jobs")

SHUTDOWN_WAIT = 5.0  # seconds running jobs get to write their last event when the process stops


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class JobRegistry:
    def __init__(self, *, broker: Broker, clock: Clock, grace: float, retention: float) -> None:
        self.broker = broker
        self.clock = clock
        self.grace = grace
        self.retention = retention
        self._jobs: dict[str, Job] = {}  # running and retained jobs, by id
        self._running: dict[JobKey, Job] = {}
        self._starting: dict[JobKey, _KeyLock] = {}
        self._expiry: dict[str, Timer] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        # Called with each job as it starts: a running job shows on its artist's page (the read cache).
        self.on_launched: list[Callable[[Job], None]] = []

    # --- finding ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self, key: JobKey) -> Job | None:
        return self._running.get(key)

    # --- starting --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def starting(self, key: JobKey) -> AsyncIterator[None]:
        """Held while deciding whether to join or start the job for `key`: between the check for a running
        job and its registration there are awaits (the rate limiter, the breaker, the broker), and two
        readers arriving together must share one job. Per key: no start waits on another portrait's."""
        entry = self._starting.setdefault(key, _KeyLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._starting[key]

    async def launch(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        """Open the job's log and run `work(job)` as the job's own task (never a request's)."""
        await self.broker.create(job.id)
        self._jobs[job.id] = job
        self._running[job.key] = job
        job.task = asyncio.create_task(self._supervise(job, work), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _task: self._check_finished(job))
        if not job.runs_to_end:
            self._arm_grace(job)  # a stream that never attaches must not leave the job running
        for hook in self.on_launched:
            hook(job)
        log.info("job %s started for artist %s (%s, %s)", job.id, job.artist_id, job.language, job.length)

    def keep_alive(self, job: Job, origin: str) -> None:
        """Someone who needs the end joined a stream's job (an API job, the synchronous route): it now
        runs to its end whoever reads it."""
        if job.runs_to_end or origin == "stream":
            return
        job.origin = "job"
        self._disarm_grace(job)

    # --- readers ---------------------------------------------------------------------------------------

    def attach(self, job: Job) -> None:
        job.readers += 1
        self._disarm_grace(job)

    def detach(self, job: Job) -> None:
        job.readers = max(0, job.readers - 1)
        if job.readers == 0 and not job.runs_to_end and job.running:
            self._arm_grace(job)

    def _arm_grace(self, job: Job) -> None:
        self._disarm_grace(job)
        job.grace = self.clock.call_later(self.grace, lambda: self._grace_expired(job))

    def _disarm_grace(self, job: Job) -> None:
        if job.grace is not None:
            job.grace.cancel()
            job.grace = None

    def _grace_expired(self, job: Job) -> None:
        job.grace = None
        if job.readers == 0 and not job.runs_to_end and job.running:
            log.info("job %s: no reader for %ss, cancelling", job.id, self.grace)
            self.cancel(job)

    # --- cancelling ------------------------------------------------------------------------------------

    def cancel(self, job: Job) -> bool:
        """Ask the job's task to stop. Only once: the run answers a cancel by storing what it must (a
        finished portrait) and writing its last event, and a second cancel would cut those steps short."""
        if job.task is None or job.task.done() or job.cancel_requested:
            return False
        job.cancel_requested = True
        job.task.cancel()
        return True

    async def cancel_and_wait(self, job: Job) -> None:
        self.cancel(job)
        if job.running:
            async with asyncio.timeout(SHUTDOWN_WAIT):
                await job.finished.wait()

    async def cancel_artist(self, artist_id: int) -> None:
        """Every running job of this artist (its catalog entry was deleted)."""
        for job in [job for job in self._running.values() if job.artist_id == artist_id]:
            self.cancel(job)

    async def aclose(self) -> None:
        """At shutdown: cancel every running job and wait (bounded) for them to write their last event."""
        running = list(self._running.values())
        for job in running:
            self.cancel(job)
        waits = [asyncio.ensure_future(job.finished.wait()) for job in running]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_WAIT)
            for wait in pending:
                wait.cancel()
        for timer in self._expiry.values():
            timer.cancel()

    # --- the end ---------------------------------------------------------------------------------------

    async def _supervise(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        try:
            await work(job)
        finally:
            await self._finish(job)

    async def _finish(self, job: Job) -> None:
        if self._running.get(job.key) is job:
            del self._running[job.key]
        self._disarm_grace(job)
        await self.broker.close(job.id, self.retention)
        job.finished.set()
        self._expiry[job.id] = self.clock.call_later(self.retention, lambda: self._forget(job.id))

    def _check_finished(self, job: Job) -> None:
        """A task cancelled before its first step never runs its own `finally`: end its job here."""
        if not job.finished.is_set():
            cleanup = asyncio.ensure_future(self._finish_unstarted(job))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    async def _finish_unstarted(self, job: Job) -> None:
        job.status = "cancelled"
        job.error = JobError("cancelled", CANCELLED_MESSAGE)
        await self.broker.append(job.id, Error("cancelled", CANCELLED_MESSAGE, retryable=False))
        await self._finish(job)

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._expiry.pop(job_id, None)
