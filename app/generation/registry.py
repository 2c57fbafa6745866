"""The registry of jobs in this process: one running job per key, its readers, its grace, its retention,
and cancelling it. It never calls the upstream: what a job does is `run.py`'s; when it runs is decided
by the portrait service (`portrait.py`).

Lifetimes (every one bounded, every timer on the injected clock):
- a job started by a stream is cancelled `grace` seconds after its last reader left (or after it started,
  if no reader ever came), long enough for a reconnect to resume it;
- any other job runs to its end (the upstream call is bounded by the client's timeouts);
- a finished job's log and record stay `retention` seconds, for resume and polling.

With a board (several processes on Redis, `board.py`), the same rules hold across processes: a start claims
its key on the board (the first claim wins; the others join that job), a job another process runs is known
here as a mirror kept up to date from its log (`Job.remote`), readers are counted on the board per process
and the grace ends only when no live process has one, a cancel reaches the owner wherever it runs. One task,
`_tick`, renews this process's lease, gives up jobs another process took over while this one was stalled,
cancels those asked to be cancelled, and takes over orphaned jobs (their owner's lease expired, or it handed
them over at shutdown), continuing them from their log (`resume`, the run's continuation).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from app.generation.board import JobBoard
from app.generation.jobs import CANCELLED_MESSAGE, Job, JobError, JobKey, Recovery
from app.kit.clock import Clock, Timer
from app.streaming.broker import AppendRefused, Broker, BrokerUnavailable
from app.streaming.events import Error, Event

log = logging.getLogger("atelier.jobs")

SHUTDOWN_WAIT = 5.0  # seconds running jobs get to write their last event when the process stops
MIRROR_RETRY = 0.5  # seconds a mirror waits before reading its log again after Redis failed it
TAKEOVERS_PER_TICK = 8  # orphans one process takes per tick: the rest are left to the other survivors
LOST_MESSAGE = "The process writing this portrait was lost."
BROKER_UNAVAILABLE_MESSAGE = "Atelier's shared state cannot be reached; try again shortly."
Resume = Callable[[Job, Recovery], Awaitable[None]]


@dataclass
class _KeyLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class JobRegistry:
    def __init__(
        self,
        *,
        broker: Broker,
        clock: Clock,
        grace: float,
        retention: float,
        board: JobBoard | None = None,
        scan: float = 1.0,
    ) -> None:
        self.broker = broker
        self.clock = clock
        self.grace = grace
        self.retention = retention
        self.board = board
        self.scan = scan
        # How a job taken over from another process goes on (the run's `resume`, set by the assembly).
        self.resume: Resume | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False
        self._tasks: set[asyncio.Future[None]] = set()
        self._jobs: dict[str, Job] = {}  # running and retained jobs, by id
        self._running: dict[JobKey, Job] = {}
        self._starting: dict[JobKey, _KeyLock] = {}
        self._expiry: dict[str, Timer] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        # Called with each job as it starts: a running job shows on its artist's page (the read cache).
        self.on_launched: list[Callable[[Job], None]] = []
        # Called with each job this process ran once it has ended (its status and error final): metrics.
        self.on_finished: list[Callable[[Job], None]] = []

    # --- finding ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def running(self, key: JobKey) -> Job | None:
        return self._running.get(key)

    async def find(self, job_id: str) -> Job | None:
        """The job, run here or (with a board) by any process; `BrokerUnavailable` if that cannot be known."""
        job = self._jobs.get(job_id)
        if job is not None or self.board is None:
            return job
        record = await self.board.record(job_id)
        if record is None:
            return None
        return await self._mirror(record.job())

    async def find_running(self, key: JobKey) -> Job | None:
        """The running job for `key`, wherever it runs."""
        job = self._running.get(key)
        if job is not None or self.board is None:
            return job
        job_id = await self.board.claimed(key)
        if job_id is None:
            return None
        job = await self.find(job_id)
        return job if job is not None and job.running else None

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

    async def launch(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> Job:
        """Open the job's log and run `work(job)` as the job's own task (never a request's). With a board,
        the key is claimed first: if another process claimed it meanwhile, its job is returned (to join)
        and `work` does not run."""
        # The log first: once the key is claimed, any process may look the job up and read its log.
        await self.broker.create(job.id)
        if self.board is not None:
            try:
                holder = await self.board.claim(job)
            except BaseException:
                await self._drop_log(job.id)
                raise
            if holder != job.id:
                await self._drop_log(job.id)  # never written: gone at once
                found = await self.find(holder)
                if found is not None:
                    return found
                raise BrokerUnavailable(f"job {holder} holds the key but has no record")
        self._start(job, work)
        return job

    async def _drop_log(self, job_id: str) -> None:
        try:
            await self.broker.close(job_id, 0)
        except (BrokerUnavailable, AppendRefused) as exc:
            log.warning("job %s: its unused log could not be dropped (%s)", job_id, exc)

    def _start(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        self._jobs[job.id] = job
        self._running[job.key] = job
        job.task = asyncio.create_task(self._supervise(job, work), name=f"job-{job.id}")
        job.task.add_done_callback(lambda _task: self._check_finished(job))
        if not job.runs_to_end:
            self._arm_grace(job)  # a stream that never attaches must not leave the job running
        for hook in self.on_launched:
            hook(job)
        log.info("job %s started for artist %s (%s, %s)", job.id, job.artist_id, job.language, job.length)

    async def keep_alive(self, job: Job, origin: str) -> None:
        """Someone who needs the end joined a stream's job (an API job, the synchronous route): it now
        runs to its end whoever reads it."""
        if job.runs_to_end or origin == "stream":
            return
        job.origin = "job"
        self._disarm_grace(job)
        if self.board is not None:
            await self.board.runs_to_end(job.id)

    # --- readers ---------------------------------------------------------------------------------------

    def attach(self, job: Job) -> None:
        job.readers += 1
        self._disarm_grace(job)
        self._count_reader(job, 1)

    def detach(self, job: Job) -> None:
        job.readers = max(0, job.readers - 1)
        self._count_reader(job, -1)
        if job.readers == 0 and not job.runs_to_end and job.running and not job.remote:
            self._arm_grace(job)

    def _count_reader(self, job: Job, delta: int) -> None:
        board = self.board
        if board is not None and job.running:
            self._spawn(board.add_readers(job.id, delta), f"job {job.id}: counting a reader")

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
            if self.board is not None:
                self._spawn(self._grace_across(job), f"job {job.id}: its grace")
                return
            log.info("job %s: no reader for %ss, cancelling", job.id, self.grace)
            self.cancel(job)

    async def _grace_across(self, job: Job) -> None:
        """The grace ended with no reader here: ask the other processes. While some process has a reader
        (or someone made the job run to its end), look again every scan; the grace starts over once none
        has."""
        assert self.board is not None
        seen_readers = False
        while job.running and job.readers == 0 and not job.remote:
            try:
                readers = await self.board.readers(job.id)
                origin = await self.board.origin(job.id)
            except BrokerUnavailable:
                readers, origin = 1, None  # unknown: do not cancel on a guess; the job ends on its own
            if origin is not None and origin != "stream":
                job.origin = "job"
                return
            if readers == 0:
                if seen_readers:
                    self._arm_grace(job)
                else:
                    log.info("job %s: no reader on any process for %ss, cancelling", job.id, self.grace)
                    self.cancel(job)
                return
            if not seen_readers:
                log.info("job %s: no reader here, %d on other processes: watching", job.id, readers)
            seen_readers = True
            await asyncio.sleep(self.scan)

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
        if job.remote and self.board is not None:
            await self.board.cancel(job.id)  # its owner hears it (or reads it at its next tick)
        else:
            self.cancel(job)
        if job.running:
            try:
                async with asyncio.timeout(SHUTDOWN_WAIT + self.scan):
                    await job.finished.wait()
            except TimeoutError:
                # asked, and it will end (its owner reads the flag at every tick): the caller need not wait
                log.warning("job %s: cancel asked, its end not seen within %ss", job.id, SHUTDOWN_WAIT)

    async def cancel_artist(self, artist_id: int) -> None:
        """Every running job of this artist (its catalog entry was deleted), on every process."""
        self._cancel_artist_here(artist_id)
        if self.board is not None:
            try:
                await self.board.cancel_artist(artist_id)
            except BrokerUnavailable:
                # its jobs elsewhere end anyway: their article cannot be stored for a deleted artist
                log.warning("artist %s deleted: its jobs on other processes could not be told", artist_id)

    def _cancel_artist_here(self, artist_id: int) -> None:
        for job in [job for job in self._running.values() if job.artist_id == artist_id and not job.remote]:
            self.cancel(job)

    async def aclose(self) -> None:
        """At shutdown: without a board, cancel every running job and wait (bounded) for them to write their
        last event; with one, hand them over: stop them without an end, and let another process go on."""
        self._closing = True  # from now on this process takes over nothing (not even what it hands over)
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            # a cancel can be swallowed inside redis-py (its reconnect logic): the flag ends the loop at its
            # next turn, and the wait is bounded either way
            ticker.cancel()
            await asyncio.wait([ticker], timeout=SHUTDOWN_WAIT)
        if self.board is not None:
            await self.board.aclose()  # no more messages: an `orphans` of our own would bring our jobs back
        running = [job for job in self._running.values() if not job.remote]
        for job in running:
            if self.board is not None:
                job.abandoned = True
            self.cancel(job)
        # a handed-over job never finishes here: wait for its task to stop instead
        waits: list[asyncio.Future[Any]] = [
            job.task if job.abandoned and job.task is not None else asyncio.ensure_future(job.finished.wait())
            for job in running
        ]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=SHUTDOWN_WAIT)
            for wait in pending:
                wait.cancel()
        for job in self._jobs.values():
            if job.watcher is not None:
                job.watcher.cancel()
        if self.board is not None:
            try:
                await self.board.release([job.id for job in running])
                await self.board.leave()
            except BrokerUnavailable:
                log.warning("shutting down: Redis unreachable, %d jobs left to the lease", len(running))
        for task in list(self._tasks):
            task.cancel()
        for timer in self._expiry.values():
            timer.cancel()

    # --- the end ---------------------------------------------------------------------------------------

    async def _supervise(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        try:
            await work(job)
        finally:
            await self._finish(job)

    async def _finish(self, job: Job) -> None:
        self._disarm_grace(job)
        if job.abandoned:
            self._given_up(job)
            return
        if self._running.get(job.key) is job:
            del self._running[job.key]
        try:
            await self.broker.close(job.id, self.retention)
            if self.board is not None:
                await self.board.finish(job, self.retention)
        except (BrokerUnavailable, AppendRefused) as exc:
            log.warning("job %s: its end could not be recorded (%s)", job.id, exc)
        job.finished.set()
        for hook in self.on_finished:
            hook(job)
        self._expiry[job.id] = self.clock.call_later(self.retention, lambda: self._forget(job.id))

    def _check_finished(self, job: Job) -> None:
        """A task cancelled before its first step never runs its own `finally`: end its job here."""
        if not job.finished.is_set():
            cleanup = asyncio.ensure_future(self._finish_unstarted(job))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)

    async def _finish_unstarted(self, job: Job) -> None:
        if job.abandoned:
            await self._finish(job)
            return
        job.status = "cancelled"
        job.error = JobError("cancelled", CANCELLED_MESSAGE)
        await self.broker.append(job.id, Error("cancelled", CANCELLED_MESSAGE, retryable=False))
        await self._finish(job)

    def _forget(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        self._expiry.pop(job_id, None)
        if job is not None and job.watcher is not None:
            job.watcher.cancel()

    def _spawn(self, work: Awaitable[None], what: str) -> None:
        async def logged() -> None:
            try:
                await work
            except BrokerUnavailable as exc:
                log.warning("%s: Redis unreachable (%s)", what, exc)

        task = asyncio.ensure_future(logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- other processes' jobs ---------------------------------------------------------------------------

    async def _mirror(self, job: Job) -> Job:
        """Know `job` (run by another process) from its log: read what is there now, then follow it."""
        known = self._jobs.get(job.id)
        if known is not None:
            return known
        job.remote = True
        batch = await self.broker.read(job.id, 0, wait=0)
        if batch is None:
            job.status, job.error = "error", JobError("worker_lost", LOST_MESSAGE)
            job.finished.set()
            return job
        for event in batch.events:
            job.apply(event)
        known = self._jobs.get(job.id)  # another request mirrored it during the read
        if known is not None:
            return known
        self._jobs[job.id] = job
        if batch.closed:
            self._mirror_ended(job)
        else:
            self._running.setdefault(job.key, job)
            job.watcher = asyncio.create_task(self._watch(job), name=f"mirror-{job.id}")
        return job

    async def _watch(self, job: Job) -> None:
        """Keep a mirror up to date until its log closes (or is gone: Redis lost it)."""
        while True:
            try:
                batch = await self.broker.read(job.id, job.seq, wait=self.grace + 15)
            except BrokerUnavailable:
                await asyncio.sleep(MIRROR_RETRY)
                continue
            except Exception:
                log.exception("job %s: following its log failed; again shortly", job.id)
                await asyncio.sleep(MIRROR_RETRY)
                continue
            if batch is None:
                if not job.ended:
                    job.status = "error"
                    job.error = JobError("broker_unavailable", BROKER_UNAVAILABLE_MESSAGE)
                break
            for event in batch.events:
                job.apply(event)
            if batch.closed:
                break
        job.watcher = None
        self._mirror_ended(job)

    def _mirror_ended(self, job: Job) -> None:
        if self._running.get(job.key) is job:
            del self._running[job.key]
        job.finished.set()
        if job.id not in self._expiry:
            self._expiry[job.id] = self.clock.call_later(self.retention, lambda: self._forget(job.id))

    def _given_up(self, job: Job) -> None:
        """This process stopped running `job` without ending it (another owns it now): a mirror from here."""
        if job.remote:
            return  # already (its task's own end and its done-callback both land here)
        log.warning("job %s: given up to another process", job.id)
        job.remote = True
        job.task = None
        if self.board is not None and not self._closing:
            # Fenced out while the board still names this process: another writer got into the log (an old
            # owner back from a stall, between our read of the log and our first append). Hand it over: the
            # next takeover reads the log as it now is.
            self._spawn(self._hand_over_if_owned(job.id), f"job {job.id}: handing it over")
        if job.watcher is None and self.board is not None and self._ticker is not None:
            job.watcher = asyncio.create_task(self._watch(job), name=f"mirror-{job.id}")

    async def _hand_over_if_owned(self, job_id: str) -> None:
        assert self.board is not None
        if await self.board.owns(job_id):
            await self.board.release([job_id])

    # --- the tick: lease, ownership, cancels, takeovers ----------------------------------------------------

    def start(self) -> None:
        """Start the tick and the board's messages (with a board; inside the event loop)."""
        if self.board is None or self._ticker is not None:
            return
        self.board.listen(self._on_message)
        self._ticker = asyncio.create_task(self._tick_forever(), name="job-registry-tick")

    async def _tick_forever(self) -> None:
        assert self.board is not None
        every = min(self.scan, self.board.lease / 3)
        while not self._closing:
            try:
                await self._tick()
            except BrokerUnavailable as exc:
                log.debug("job registry tick: Redis unreachable (%s)", exc)
            except asyncio.CancelledError:
                if cancelled_for_real():
                    raise
                # raised by a library, not asked of this task (redis-py can, around a lost connection): the
                # tick is what keeps this process's lease and cancels, so it must not die of it
                log.warning("job registry tick: a stray cancellation from below; going on")
            except Exception:
                log.exception("job registry tick failed")
            await asyncio.sleep(every)

    async def _tick(self) -> None:
        board = self.board
        assert board is not None
        await board.renew()
        own = [job for job in self._running.values() if not job.remote]
        lost, cancelled = await board.check([job.id for job in own])
        for job in own:
            if job.id in lost:
                job.abandoned = True  # taken over while this process was stalled: stop without a word
                self.cancel(job)
            elif job.id in cancelled:
                self.cancel(job)
        await self._take_orphans()

    async def _take_orphans(self) -> None:
        board = self.board
        if board is None or self.resume is None or self._closing:
            return
        local = {job.id for job in self._jobs.values() if not job.remote}
        for job_id, owner in (await board.orphans(local))[:TAKEOVERS_PER_TICK]:
            if await board.take(job_id, owner):
                await self._take_over(job_id)

    async def _take_over(self, job_id: str) -> None:
        """Go on with a job this process has just taken: its state from its log, then the run's `resume`."""
        assert self.board is not None and self.resume is not None
        record = await self.board.record(job_id)
        if record is None:
            return
        mirror = self._jobs.pop(job_id, None)
        if mirror is not None:
            if mirror.watcher is not None:
                mirror.watcher.cancel()
                mirror.watcher = None
            if self._running.get(mirror.key) is mirror:
                del self._running[mirror.key]
            expiry = self._expiry.pop(job_id, None)
            if expiry is not None:
                expiry.cancel()
        job = mirror if mirror is not None else record.job()
        job.remote = job.abandoned = job.cancel_requested = False
        job.parts, job.seq, job.status, job.origin = [], 0, "queued", record.origin
        job.finished.clear()
        events = await self._read_all(job_id)
        if events is None:  # the log is gone (Redis lost it): nothing to go on from
            await self.board.finish(job, 0)
            return
        recovery = Recovery()
        recovery.read(job, events)
        if record.cancel or job.ended:
            # asked to be cancelled, or its owner wrote its end and died before recording it
            if not job.ended:
                event = Error("cancelled", CANCELLED_MESSAGE, retryable=False)
                await self._append_end(job, event)
            self._jobs[job.id] = job
            await self._finish(job)
            return
        resume = self.resume
        log.info("job %s: taken over at seq %d (%d chars written)", job.id, job.seq, len(job.text))
        self._start(job, lambda job: resume(job, recovery))

    async def _append_end(self, job: Job, payload: Error) -> None:
        try:
            event = await self.broker.append_at(job.id, job.seq + 1, payload)
            job.apply(event)
        except (AppendRefused, BrokerUnavailable) as exc:
            log.warning("job %s: its end could not be written (%s)", job.id, exc)

    async def _read_all(self, job_id: str) -> list[Event] | None:
        events: list[Event] = []
        while True:
            batch = await self.broker.read(job_id, len(events), wait=0)
            if batch is None:
                return None
            if not batch.events:
                return events
            events += batch.events
            if batch.closed:
                return events

    async def _on_message(self, kind: str, argument: str) -> None:
        if kind == "cancel":
            job = self._jobs.get(argument)
            if job is not None and not job.remote:
                self.cancel(job)
        elif kind == "cancel-artist" and argument.isdigit():
            self._cancel_artist_here(int(argument))
        elif kind == "orphans":
            await self._take_orphans()


def cancelled_for_real() -> bool:
    """Whether the current task was asked to stop (a `CancelledError` may also come from a library's own
    timeout handling, which asked nothing of this task)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
