"""The jobs of every process, on Redis: what makes several Atelier processes one service (docs/deploy.md).

The registry (`registry.py`) runs jobs; this board is what the processes agree on through Redis. Keys, all
under the settings' prefix:

- `claim:<artist>:<language>:<length>` → the id of the job writing that portrait. Taken with one script
  (`_CLAIM`) that also writes the job's record and adds it to `running`: two readers arriving on two
  processes at once get one job. Per key: no claim waits on another portrait's.
- `job:<id>` (hash): the job's record — key, origin, the facts it writes from and, for a revision, its
  instruction and the text of the version it revises (a process taking it over needs them all), `owner` (the process running it; empty once handed over, `-` once ended), `cancel`.
- `running` (set): the ids of running jobs, which every process scans for orphans.
- `proc:<process>`: a process's lease, renewed every third of `ATELIER_JOB_LEASE`. A job whose owner has no
  lease is orphaned; `_TAKE` gives it to one claimer atomically (the owner field is compared and set in one
  step). The job's log (the broker's) is fenced separately: its owner writes explicit seqs.
- `readers:<id>` (hash): readers of the job per process; a dead process's field is ignored (its lease is
  gone), so its readers disappear with it.
- channel `jobs`: `cancel <id>`, `cancel-artist <id>`, `orphans` (a process handing its jobs over): only
  for promptness; owners also read their jobs' `cancel` field at every tick.

Every call may raise `BrokerUnavailable` (Redis unreachable or timed out); callers decide what that means.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import redis.asyncio as aredis
from redis import exceptions as redis_errors

from app.articles.params import Length, as_length
from app.catalog.schemas import ArtistFacts
from app.generation.jobs import Job, JobKey, Origin, Revision
from app.streaming.broker import BrokerUnavailable

log = logging.getLogger("atelier.board")

CLOSE_WAIT = 6.0  # seconds the listener gets to stop: above its pub/sub read's own timeout (5 s)
READERS_TTL = 3600  # seconds: far above any running job's life (ATELIER_LLM_TOTAL_TIMEOUT)
OWNER_ENDED = "-"
OWNER_RELEASED = ""

# KEYS: claim, job record, running set, the claimer's lease. ARGV: job id, the lease in ms, then the record's
# fields. Returns the job holding the key. The lease is renewed with the claim: a process that claims is alive, and
# a job must never look orphaned at birth (after a Redis restart, before the claimer's next tick renews it).
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('SADD', KEYS[3], ARGV[1])
return ARGV[1]
"""

# KEYS: job record. ARGV: the owner expected, the new owner, the lease key prefix. 1 if taken.
_TAKE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner == false or owner ~= ARGV[1] or owner == '-' then return 0 end
if owner ~= '' and redis.call('EXISTS', ARGV[3] .. owner) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[2])
return 1
"""

# KEYS: claim, job record, running set, readers. ARGV: job id, retention in ms.
_FINISH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'owner', '-')
  if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) else redis.call('DEL', KEYS[2]) end
end
return 1
"""

# KEYS: job record, claim, running set. ARGV: the owner giving it up. Hands a job over (SIGTERM) or drops its
# claim when its start failed: only while this process still owns it.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
return 1
"""


@dataclass(frozen=True)
class JobRecord:
    id: str
    artist_id: int
    language: str
    length: Length
    origin: Origin
    owner: str
    facts: ArtistFacts
    facts_version: int
    started_at: datetime
    cancel: bool
    revision: Revision | None = None

    @property
    def key(self) -> JobKey:
        return (self.artist_id, self.language, self.length)

    @property
    def ended(self) -> bool:
        return self.owner == OWNER_ENDED

    def job(self) -> Job:
        """The job as this process will know it (a mirror of another's, or one it takes over)."""
        return Job(
            id=self.id,
            artist_id=self.artist_id,
            facts=self.facts,
            language=self.language,
            length=self.length,
            origin=self.origin,
            revision=self.revision,
            facts_version=self.facts_version,
            started_at=self.started_at,
        )


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Redis: {type(exc).__name__}: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class JobBoard:
    def __init__(self, redis: aredis.Redis, prefix: str, *, lease: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lease = lease
        self.process = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.channel = f"{prefix}jobs"
        self._claim = redis.register_script(_CLAIM)
        self._take = redis.register_script(_TAKE)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    # --- keys ------------------------------------------------------------------------------------------

    def _claim_key(self, key: JobKey) -> str:
        artist_id, language, length = key
        return f"{self.prefix}claim:{artist_id}:{language}:{length}"

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _readers_key(self, job_id: str) -> str:
        return f"{self.prefix}readers:{job_id}"

    @property
    def _running_key(self) -> str:
        return f"{self.prefix}running"

    @property
    def _lease_prefix(self) -> str:
        return f"{self.prefix}proc:"

    # --- this process ----------------------------------------------------------------------------------

    async def renew(self) -> None:
        """This process is alive for another lease."""
        with _unavailable():
            await self.redis.set(self._lease_prefix + self.process, "1", px=max(1, round(self.lease * 1000)))

    async def leave(self) -> None:
        """This process is gone: its jobs (released before) and its readers are no longer its."""
        with _unavailable():
            await self.redis.delete(self._lease_prefix + self.process)

    # --- claims and records ----------------------------------------------------------------------------

    async def claim(self, job: Job) -> str:
        """Claim the job's key for it, writing its record; the id of the job holding the key (ours, or the
        one another process claimed first)."""
        fields = {
            "artist_id": str(job.artist_id),
            "language": job.language,
            "length": job.length,
            "origin": job.origin,
            "owner": self.process,
            "facts": job.facts.model_dump_json(),
            "facts_version": str(job.facts_version),
            "started_at": job.started_at.isoformat(),
            "cancel": "",
            "revision": _revision_field(job.revision),
        }
        args = [job.id, str(max(1, round(self.lease * 1000)))]
        for name, value in fields.items():
            args += [name, value]
        with _unavailable():
            held = await self._claim(
                keys=[
                    self._claim_key(job.key),
                    self._job_key(job.id),
                    self._running_key,
                    self._lease_prefix + self.process,
                ],
                args=args,
            )
        return _text(held)

    async def claimed(self, key: JobKey) -> str | None:
        with _unavailable():
            held = await self.redis.get(self._claim_key(key))
        return None if held is None else _text(held)

    async def record(self, job_id: str) -> JobRecord | None:
        with _unavailable():
            raw = await self.redis.hgetall(self._job_key(job_id))
        if not raw:
            return None
        fields = {_text(name): _text(value) for name, value in raw.items()}
        length = as_length(fields.get("length"))
        try:
            if length is None:
                raise ValueError(f"no such length: {fields.get('length')!r}")
            return JobRecord(
                id=job_id,
                artist_id=int(fields["artist_id"]),
                language=fields["language"],
                length=length,
                origin=_origin(fields["origin"]),
                owner=fields.get("owner", OWNER_RELEASED),
                facts=ArtistFacts.model_validate_json(fields["facts"]),
                facts_version=int(fields.get("facts_version", "0")),
                started_at=datetime.fromisoformat(fields["started_at"]),
                cancel=bool(fields.get("cancel")),
                revision=_revision_of(fields.get("revision", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("job %s: its record cannot be read (%s)", job_id, exc)
            return None

    async def runs_to_end(self, job_id: str) -> None:
        """Someone who needs the end joined this job (an API job, the synchronous route), on any process."""
        with _unavailable():
            await self.redis.hset(self._job_key(job_id), "origin", "job")

    async def origin(self, job_id: str) -> str | None:
        with _unavailable():
            value = await self.redis.hget(self._job_key(job_id), "origin")
        return None if value is None else _text(value)

    async def finish(self, job: Job, retention: float) -> None:
        """The job ended (its last event is in its log): its key is free, its record kept for polling."""
        with _unavailable():
            await self._finish(
                keys=[
                    self._claim_key(job.key),
                    self._job_key(job.id),
                    self._running_key,
                    self._readers_key(job.id),
                ],
                args=[job.id, max(0, round(retention * 1000))],
            )

    async def release(self, job_ids: list[str]) -> None:
        """Hand these jobs over now (this process stops): any other process may take them at once."""
        if not job_ids:
            return
        with _unavailable():
            for job_id in job_ids:
                await self._release(keys=[self._job_key(job_id)], args=[self.process])
            await self.redis.publish(self.channel, "orphans")

    # --- ownership -------------------------------------------------------------------------------------

    async def check(self, job_ids: list[str]) -> tuple[set[str], set[str]]:
        """Of this process's jobs: those it no longer owns (taken over while it was stalled), and those
        asked to be cancelled (a cancel message may have been lost)."""
        if not job_ids:
            return set(), set()
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hmget(self._job_key(job_id), ["owner", "cancel"])
                replies = await pipe.execute()
        lost, cancelled = set(), set()
        for job_id, (owner, cancel) in zip(job_ids, replies, strict=True):
            if owner is not None and _text(owner) != self.process:
                lost.add(job_id)
            if cancel:
                cancelled.add(job_id)
        return lost, cancelled

    async def owns(self, job_id: str) -> bool:
        with _unavailable():
            owner = await self.redis.hget(self._job_key(job_id), "owner")
        return owner is not None and _text(owner) == self.process

    async def orphans(self, local: set[str]) -> list[tuple[str, str]]:
        """Running jobs whose owner has no lease (or handed them over): (job id, owner) pairs."""
        with _unavailable():
            members = [_text(member) for member in await self.redis.smembers(self._running_key)]
            candidates = [job_id for job_id in members if job_id not in local]
            if not candidates:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in candidates:
                    pipe.hget(self._job_key(job_id), "owner")
                owners = await pipe.execute()
            known = [
                (job_id, _text(owner))
                for job_id, owner in zip(candidates, owners, strict=True)
                if owner is not None and _text(owner) != OWNER_ENDED
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _job_id, owner in known:
                    pipe.exists(self._lease_prefix + owner if owner else self._lease_prefix)
                alive = await pipe.execute()
        orphaned = [pair for pair, live in zip(known, alive, strict=True) if not pair[1] or not live]
        random.shuffle(orphaned)  # the survivors scan together: each starts with a different orphan
        return orphaned

    async def take(self, job_id: str, owner: str) -> bool:
        """Take an orphaned job: True for exactly one claimer."""
        with _unavailable():
            taken = await self._take(
                keys=[self._job_key(job_id)], args=[owner, self.process, self._lease_prefix]
            )
        return bool(taken)

    # --- readers ---------------------------------------------------------------------------------------

    async def add_readers(self, job_id: str, delta: int) -> None:
        key = self._readers_key(job_id)
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(key, self.process, delta)
                # the job's end deletes it; a count landing after that end must not stay forever
                pipe.expire(key, READERS_TTL)
                await pipe.execute()

    async def readers(self, job_id: str) -> int:
        """Readers of the job on every live process."""
        with _unavailable():
            counts = {
                _text(process): int(count)
                for process, count in (await self.redis.hgetall(self._readers_key(job_id))).items()
            }
            counted = [process for process, count in counts.items() if count > 0]
            if not counted:
                return 0
            async with self.redis.pipeline(transaction=False) as pipe:
                for process in counted:
                    pipe.exists(self._lease_prefix + process)
                alive = await pipe.execute()
        return sum(counts[process] for process, live in zip(counted, alive, strict=True) if live)

    # --- cancelling ------------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> None:
        with _unavailable():
            await self.redis.hset(self._job_key(job_id), "cancel", "1")
            await self.redis.publish(self.channel, f"cancel {job_id}")

    async def cancel_artist(self, artist_id: int) -> None:
        """Every running job of the artist, wherever it runs: flagged (their owners read the flag at their
        next tick, should the message be lost), then told."""
        with _unavailable():
            job_ids = [_text(member) for member in await self.redis.smembers(self._running_key)]
            if job_ids:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in job_ids:
                        pipe.hget(self._job_key(job_id), "artist_id")
                    artists = await pipe.execute()
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id, artist in zip(job_ids, artists, strict=True):
                        if artist is not None and _text(artist) == str(artist_id):
                            pipe.hset(self._job_key(job_id), "cancel", "1")
                    await pipe.execute()
            await self.redis.publish(self.channel, f"cancel-artist {artist_id}")

    # --- messages --------------------------------------------------------------------------------------

    def listen(self, on_message: Callable[[str, str], Awaitable[None]]) -> None:
        """Hear `cancel`, `cancel-artist` and `orphans` from every process (this one's own included)."""
        self._listener = asyncio.create_task(self._listen_forever(on_message), name="job-board")

    async def _listen_forever(self, on_message: Callable[[str, str], Awaitable[None]]) -> None:
        pause = 0.05
        while not self._closing:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    pause = 0.05
                    while not self._closing:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if message is None:
                            await pubsub.ping()
                            continue
                        kind, _, argument = _text(message["data"]).partition(" ")
                        try:
                            await on_message(kind, argument)
                        except Exception:
                            log.exception("job board: handling %r failed", message["data"])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing or task is None or task.cancelling() > 0:
                    raise
                # raised by redis-py around a lost connection, not asked of this task: listen again
                log.warning("job board: a stray cancellation from below; subscribing again")
            except Exception as exc:
                log.debug("job board: subscription lost (%s); trying again", exc)
                await asyncio.sleep(random.uniform(0.5, 1.0) * pause)
                pause = min(2.0, pause * 2)

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        # redis-py's pub/sub read can swallow a cancel (its reconnect logic): the flag ends the loop at its
        # next turn, and the wait is bounded either way.
        self._closing = True
        listener.cancel()
        await asyncio.wait([listener], timeout=CLOSE_WAIT)


def _revision_field(revision: Revision | None) -> str:
    """A revision as its record keeps it: JSON, or "" for a job that revises nothing."""
    if revision is None:
        return ""
    return json.dumps(
        {
            "instruction": revision.instruction,
            "revises_version": revision.revises_version,
            "article_id": revision.article_id,
            "markdown": revision.markdown,
        },
        ensure_ascii=False,
    )


def _revision_of(value: str) -> Revision | None:
    """The revision a record names (`ValueError` or `TypeError` when the field is not one)."""
    if not value:
        return None
    fields = json.loads(value)
    instruction, markdown = fields["instruction"], fields["markdown"]
    revises_version, article_id = fields["revises_version"], fields.get("article_id")
    if not isinstance(instruction, str) or not isinstance(markdown, str):
        raise ValueError("a revision's instruction and markdown are text")
    if not isinstance(revises_version, int) or not (article_id is None or isinstance(article_id, int)):
        raise ValueError("a revision's version and article id are integers")
    return Revision(instruction, revises_version, markdown, article_id)


def _origin(value: str) -> Origin:
    if value == "stream":
        return "stream"
    if value == "sync":
        return "sync"
    return "job"
