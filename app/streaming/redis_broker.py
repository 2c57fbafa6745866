"""The broker interface on Redis Streams, so several processes (and hosts) share every job's event log.

Layout: one stream per job, `<prefix>log:<stream_id>`; nothing else. An event's `seq` is its entry id
`0-<seq>`, so a `Last-Event-ID` is an `XRANGE`/`XREAD` position as it stands. The log's end is an entry of its
own, the end marker `1-0` (greater than every `0-<seq>`): written by `close()` after the terminal event
(`done`/`error`, an ordinary event), it makes `read` report `closed=True` exactly when it is in the range read,
wakes readers on every process like any entry, and fences the log: Redis refuses any later `0-<seq>`. The
same script sets the retention (`PEXPIRE`); a running log has no TTL and is never trimmed.

Appends: `append` (the next seq, whatever process wrote the last) runs one small Lua script (`_APPEND`) that
reads the top entry and `XADD`s `0-<last+1>` atomically. `append_at` (a job's owner, which numbers its own
events and is fenced out by the first seq a new owner wrote) is a plain `XADD <log> NOMKSTREAM 0-<seq>`: Redis
itself refuses an id at or below the top (a stale owner, or the end marker), and every `append_at` of one loop
turn, whatever its log, goes out in one pipeline. Only a refusal is looked into. Each entry carries a writer
nonce (`w`), which makes a retried append whose first try landed (the client retries on a lost reply) a no-op
instead of a duplicated event or a false `StaleAppend`.

Reads: each process keeps, for the logs it reads, the decoded events (`_Tail`, the full log from seq 1,
the same `Event` objects for every local reader, as the in-process broker does, so the SSE memo is shared),
fed by ONE follower task per broker: `XREAD BLOCK <block_ms> STREAMS k1 .. kn 0-<hi1> .. 0-<hin>` over every
open log it holds, which appends the new entries and wakes the local waiters (plain futures). A reader that
finds nothing after its cursor waits on its future without touching Redis; a wait that ends quiet is
confirmed with one `XRANGE` (the log may be gone: expired, or Redis restarted). A log read for the first
time on a process is loaded with one `XRANGE - +` shared by every reader that asks meanwhile, and it joins
the follower's next `XREAD`, at most `block_ms` later (the only latency the short block adds). Appends made
on this process extend its tail directly (no round trip for local readers), and a log this process writes is
left out of the follower's `XREAD` (`WRITER_QUIET`): else each append would wake it to read back its own entry.
The follower is paced (`PACE`): under load one call reads many entries instead of each call a few.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis
from redis import exceptions as redis_errors
from redis.typing import KeyT, StreamIdT

from app.streaming import codec
from app.streaming.broker import (
    Batch,
    BrokerUnavailable,
    LogLost,
    SeqGap,
    StaleAppend,
    StreamClosed,
)
from app.streaming.events import Event, Payload

log = logging.getLogger(__name__)

END_ID = "1-0"  # the end marker's entry id: after every event id `0-<seq>`
NONCE_FIELD = "w"
READ_COUNT = 1000  # entries per log per XREAD (a log with more is read on the next turn)
LINGER = 5.0  # seconds a tail with no reader stays followed (a reader comes back between batches)
SWEEP_EVERY = 0.5
RETRY_AFTER_FAILURE = 0.2  # the follower's pause after Redis failed it
# A log this process appended to within this many seconds is not followed: its appends extend the local tail
# (a writer fenced out stops writing, and its log is followed again this long after).
WRITER_QUIET = 1.0
PACE = 0.002  # seconds, at least, between the starts of two of the follower's XREADs

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XGROUP', 'CREATE', KEYS[1], 'atelier-create', '0', 'MKSTREAM')
redis.call('XGROUP', 'DESTROY', KEYS[1], 'atelier-create')
return 1
"""

# KEYS[1] the log; ARGV[1] the seq ('' for the next one), ARGV[2] the writer nonce, ARGV[3..] the fields.
_APPEND = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return redis.error_reply('ATELIER_LOST no such log') end
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
local last = 0
if top then
  if top[1] == '1-0' then return redis.error_reply('ATELIER_CLOSED the log is closed') end
  last = tonumber(string.sub(top[1], 3))
end
local seq
if ARGV[1] == '' then
  if top and top[2][2] == ARGV[2] then return last end
  seq = last + 1
else
  seq = tonumber(ARGV[1])
  if seq <= last then
    local at = redis.call('XRANGE', key, '0-' .. ARGV[1], '0-' .. ARGV[1])[1]
    if at and at[2][2] == ARGV[2] then return seq end
    return redis.error_reply('ATELIER_STALE seq ' .. ARGV[1] .. ' is taken: the log is at ' .. last)
  end
  if seq ~= last + 1 then
    return redis.error_reply('ATELIER_GAP seq ' .. ARGV[1] .. ' would leave a gap after ' .. last)
  end
end
redis.call('XADD', key, '0-' .. string.format('%d', seq), 'w', ARGV[2], unpack(ARGV, 3))
return seq
"""

# KEYS[1] the log; ARGV[1] the retention in ms. Returns the last seq, or -1 if it was closed already.
_CLOSE = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return redis.error_reply('ATELIER_LOST no such log') end
local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
local last = 0
if top then
  if top[1] == '1-0' then return -1 end
  last = tonumber(string.sub(top[1], 3))
end
redis.call('XADD', key, '1-0', 'end', last, 'ttl', ARGV[1])
redis.call('PEXPIRE', key, ARGV[1])
return last
"""


class StreamExists(ValueError):
    pass


_REFUSALS: dict[str, type[Exception]] = {
    "ATELIER_LOST": LogLost,
    "ATELIER_CLOSED": StreamClosed,
    "ATELIER_STALE": StaleAppend,
    "ATELIER_GAP": SeqGap,
}


@dataclass(eq=False)
class _Append:
    stream_id: str
    key: str
    seq: int
    nonce: str
    fields: dict[str, str]
    landed: asyncio.Future[None]


@dataclass(eq=False)
class _Tail:
    """What this process knows of one log: every event from seq 1 (`events[i].seq == i + 1`), whether
    the end marker follows them, and the readers waiting for more."""

    key: str
    used_at: float
    events: list[Event] = field(default_factory=list)
    closed: bool = False
    expires_at: float = math.inf  # loop time after which a closed log may be gone from Redis
    dropped: bool = False  # replaced or forgotten: its waiters look the log up again
    waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    @property
    def hi(self) -> int:
        return len(self.events)

    def batch(self, after: int) -> Batch:
        return Batch(events=self.events[max(after, 0) :], closed=self.closed)

    def extend(self, entries: Iterable[tuple[Any, Any]], now: float) -> bool:
        """Append the entries after `hi` (those at or before it are known already); False on a gap."""
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if entry_id == END_ID:
                self.closed = True
                ttl = _field(fields, "ttl")
                self.expires_at = now + int(ttl) / 1000 if ttl is not None else now
                continue
            seq = int(entry_id[2:])
            if seq <= self.hi:
                continue
            if seq != self.hi + 1 or self.closed:
                return False
            self.events.append(Event(seq=seq, payload=codec.decode(fields)))
        return True

    def wake(self) -> None:
        waiting = []
        for after, waiter in self.waiters:
            if waiter.done():
                continue
            if self.dropped or self.closed or after < self.hi:
                waiter.set_result(None)
            else:
                waiting.append((after, waiter))
        self.waiters = waiting

    def drop(self) -> None:
        self.dropped = True
        self.wake()

    def has_waiters(self) -> bool:
        return any(not waiter.done() for _, waiter in self.waiters)


class RedisBroker:
    def __init__(
        self,
        redis: aredis.Redis,
        prefix: str = "atelier:",
        block_ms: int = 20,
        *,
        max_in_flight: int = 16,
        owns_client: bool = False,
        linger: float = LINGER,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        self._redis = redis
        self._linger = linger
        self._sweep_every = sweep_every
        self._prefix = prefix
        self._block_ms = block_ms
        self._owns_client = owns_client  # aclose() closes the client too
        # Calls in flight besides the follower's XREAD, so a burst (100 jobs appending, 100 readers' waits
        # ending together) queues here instead of opening a connection each (redis-py's pool refuses >100).
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._refreshing: dict[str, asyncio.Task[_Tail | None]] = {}
        self._create = redis.register_script(_CREATE)
        self._append = redis.register_script(_APPEND)
        self._close = redis.register_script(_CLOSE)
        self._writer = os.urandom(6).hex()
        self._nonces = itertools.count(1)
        self._read_at = -math.inf  # when the follower's last XREAD began
        self._batch: list[_Append] = []  # appends of this loop turn, sent as one pipeline
        self._batch_sender: asyncio.Task[None] | None = None
        # Logs this process writes, with when it last did: its appends extend its own tail, so the follower
        # leaves them out of its XREAD (else every append would wake it to read back what it wrote).
        self._writing: dict[str, float] = {}
        self._tails: dict[str, _Tail] = {}
        self._loading: dict[str, asyncio.Task[_Tail | None]] = {}
        self._follower: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._stopped = False
        self._swept_at = 0.0

    def key(self, stream_id: str) -> str:
        return f"{self._prefix}log:{stream_id}"

    def followed(self) -> int:
        """How many logs this process follows (its XREAD's keys)."""
        return len(self._tails)

    def waiting(self, stream_id: str) -> int:
        """How many of this process's readers wait for the next event of `stream_id`."""
        tail = self._tails.get(self.key(stream_id))
        return 0 if tail is None else sum(not waiter.done() for _, waiter in tail.waiters)

    # --- writing -------------------------------------------------------------------------------------

    async def create(self, stream_id: str) -> None:
        key = self.key(stream_id)
        async with self._in_flight:
            with _unavailable():
                created = await self._create(keys=[key])
        if not created:
            raise StreamExists(f"stream {stream_id} exists")  # ids are unique: a second log would mix two
        # No tail yet: a process with no reader of its own job neither holds nor follows its log. The
        # first local read loads it; from then on this process's appends extend it directly.

    async def append(self, stream_id: str, payload: Payload) -> Event:
        """Append at the next seq, whatever process wrote the previous ones."""
        return await self._write(stream_id, "", payload)

    async def append_at(self, stream_id: str, seq: int, payload: Payload) -> Event:
        """Append at exactly `seq`: `StaleAppend` if it is taken (another owner wrote it), `StreamClosed`
        after the end, `LogLost` if the log is gone. The owner of a job writes each seq after its last one, so
        no gap can arise from it; this path does not check for one (`append` does).

        Batched: every append asked for in one turn of the loop, whatever its log, goes out in one pipeline of
        plain `XADD <log> NOMKSTREAM 0-<seq>`, which Redis itself refuses at or below the log's top entry (a
        stale owner, or the end marker `1-0`): no script, no extra read. Only a refusal is looked at (which of
        the three it was, or our own retried append that had landed)."""
        if seq < 1:
            raise ValueError(f"seq {seq} < 1")
        key = self.key(stream_id)
        nonce = f"{self._writer}:{next(self._nonces)}"
        fields = codec.encode(payload)
        loop = asyncio.get_running_loop()
        landed: asyncio.Future[None] = loop.create_future()
        self._batch.append(_Append(stream_id, key, seq, nonce, fields, landed))
        if self._batch_sender is None or self._batch_sender.done():
            self._batch_sender = loop.create_task(self._send_batch(), name="redis-broker-appends")
        await landed
        event = Event(seq=seq, payload=payload)
        tail = self._tails.get(key)
        if tail is None or (not tail.closed and tail.hi == seq - 1):
            if tail is not None:
                tail.events.append(event)  # local readers get it now, and the same object as the writer
                tail.wake()
            self._writing[key] = self._now()
        else:
            self._writing.pop(
                key, None
            )  # the tail lags this append (loaded meanwhile): the follower catches up
        return event

    async def _send_batch(self) -> None:
        await asyncio.sleep(0)  # the rest of this loop turn's appends join the batch
        while self._batch:
            batch, self._batch = self._batch, []
            try:
                async with self._in_flight:
                    with _unavailable():
                        async with self._redis.pipeline(transaction=False) as pipe:
                            for append in batch:
                                entry: dict[Any, Any] = {NONCE_FIELD: append.nonce, **append.fields}
                                pipe.xadd(
                                    append.key,
                                    entry,
                                    id=f"0-{append.seq}",
                                    nomkstream=True,
                                )
                            replies = await pipe.execute(raise_on_error=False)
            except BaseException as exc:
                for append in batch:
                    if not append.landed.done():
                        append.landed.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for append, reply in zip(batch, replies, strict=True):
                if append.landed.done():
                    continue
                if reply is None:
                    append.landed.set_exception(LogLost(f"stream {append.stream_id} is gone"))
                elif isinstance(reply, Exception):
                    await self._refused(append, reply)
                else:
                    append.landed.set_result(None)

    async def _refused(self, append: _Append, reply: Exception) -> None:
        """Why Redis refused an append at its seq: our own earlier try (a retry after a lost reply), the end
        of the log, or another writer's entry."""
        self._writing.pop(append.key, None)  # someone else writes it now, perhaps: follow it again at once
        self._kick.set()
        try:
            async with self._in_flight:
                with _unavailable():
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.xrange(append.key, f"0-{append.seq}", f"0-{append.seq}")
                        pipe.xrevrange(append.key, "+", "-", count=1)
                        at, top = await pipe.execute()
        except BrokerUnavailable as exc:
            append.landed.set_exception(exc)
            return
        if at and _field(at[0][1], NONCE_FIELD) == append.nonce:
            append.landed.set_result(None)
        elif top and _text(top[0][0]) == END_ID:
            append.landed.set_exception(StreamClosed(f"stream {append.stream_id} is closed"))
        elif not isinstance(reply, redis_errors.ResponseError):
            append.landed.set_exception(BrokerUnavailable(f"Redis: {reply}"))
        else:
            append.landed.set_exception(StaleAppend(f"seq {append.seq} of {append.stream_id} is taken"))

    async def _write(self, stream_id: str, seq_arg: str, payload: Payload) -> Event:
        key = self.key(stream_id)
        fields = codec.encode(payload)
        args: list[str] = [seq_arg, f"{self._writer}:{next(self._nonces)}"]
        for name, value in fields.items():
            args += (name, value)
        try:
            async with self._in_flight:
                with _unavailable():
                    seq = int(await self._append(keys=[key], args=args))
        except redis_errors.ResponseError as exc:
            raise _refusal(stream_id, exc) from exc
        event = Event(seq=seq, payload=payload)
        tail = self._tails.get(key)
        if tail is not None and not tail.closed and tail.hi == seq - 1:
            tail.events.append(event)  # local readers get it now, and the same object as the writer
            tail.wake()
        return event

    async def close(self, stream_id: str, retention: float) -> None:
        key = self.key(stream_id)
        try:
            async with self._in_flight:
                with _unavailable():
                    last = int(await self._close(keys=[key], args=[max(0, round(retention * 1000))]))
        except redis_errors.ResponseError as exc:
            raise _refusal(stream_id, exc) from exc
        self._writing.pop(key, None)
        tail = self._tails.get(key)
        if last >= 0 and tail is not None and not tail.closed and tail.hi == last:
            tail.closed = True
            tail.expires_at = self._now() + retention
            tail.wake()

    # --- reading -------------------------------------------------------------------------------------

    async def read(self, stream_id: str, after: int, wait: float) -> Batch | None:
        """Events with seq > `after`, waiting up to `wait` seconds for some; None for an unknown stream."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        tail = await self._fresh_tail(stream_id)
        while tail is not None:
            if after < tail.hi or tail.closed:
                return tail.batch(after)
            if tail.dropped:
                tail = await self._fresh_tail(stream_id)
                continue
            if loop.time() >= deadline:
                # Quiet for `wait`: ask Redis once (the log may be gone, or the follower behind).
                tail = await self._refresh(stream_id, tail)
                return None if tail is None else tail.batch(after)
            await self._wait(loop, tail, after, deadline)
            if self._stopped:
                return Batch(events=[], closed=False)
        return None

    async def last_seq(self, stream_id: str) -> int | None:
        key = self.key(stream_id)
        async with self._in_flight:
            with _unavailable():
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.exists(key)
                    pipe.xrevrange(key, "+", "-", count=2)
                    exists, top = await pipe.execute()
        if not exists:
            return None
        for raw_id, _ in top:
            entry_id = _text(raw_id)
            if entry_id != END_ID:
                return int(entry_id[2:])
        return 0

    async def _wait(self, loop: asyncio.AbstractEventLoop, tail: _Tail, after: int, deadline: float) -> None:
        waiter: asyncio.Future[None] = loop.create_future()
        tail.waiters.append((after, waiter))
        timer = loop.call_at(deadline, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    async def _fresh_tail(self, stream_id: str) -> _Tail | None:
        key = self.key(stream_id)
        now = self._now()
        tail = self._tails.get(key)
        if tail is not None and (not tail.closed or now < tail.expires_at):
            tail.used_at = now
            return tail
        task = self._loading.get(key)
        if task is None:  # one XRANGE for every reader that asks meanwhile
            task = asyncio.ensure_future(self._load(key))
            self._loading[key] = task
            task.add_done_callback(lambda done: self._settled(self._loading, key, done))
        return await asyncio.shield(task)

    @staticmethod
    def _settled(
        tasks: dict[str, asyncio.Task[_Tail | None]], key: str, task: asyncio.Task[_Tail | None]
    ) -> None:
        if tasks.get(key) is task:
            del tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved: every reader that wanted it got it already

    async def _load(self, key: str) -> _Tail | None:
        async with self._in_flight:
            with _unavailable():
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xrange(key, "-", "+")
                    pipe.pttl(key)
                    entries, pttl = await pipe.execute()
        now = self._now()
        if pttl == -2:
            self._forget(key)
            return None
        tail = _Tail(key, used_at=now)
        if not tail.extend(entries, now):
            raise RuntimeError(f"log {key} has a gap")  # only another writer than this module could
        if tail.closed:
            tail.expires_at = now + pttl / 1000 if pttl >= 0 else math.inf
        self._adopt(tail)
        return tail

    async def _refresh(self, stream_id: str, tail: _Tail) -> _Tail | None:
        """The tail brought up to date with Redis (None if the log is gone); one call for every reader of
        the log whose wait ended meanwhile."""
        if tail.dropped:
            return await self._fresh_tail(stream_id)
        task = self._refreshing.get(tail.key)
        if task is None:
            task = asyncio.ensure_future(self._refresh_now(stream_id, tail))
            self._refreshing[tail.key] = task
            task.add_done_callback(lambda done: self._settled(self._refreshing, tail.key, done))
        return await asyncio.shield(task)

    async def _refresh_now(self, stream_id: str, tail: _Tail) -> _Tail | None:
        async with self._in_flight:
            with _unavailable():
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xrange(tail.key, f"(0-{tail.hi}", "+")
                    pipe.pttl(tail.key)
                    entries, pttl = await pipe.execute()
        if pttl == -2:
            self._forget(tail.key)
            return None
        if self._tails.get(tail.key) is not tail:  # replaced or forgotten meanwhile
            return await self._fresh_tail(stream_id)
        now = self._now()
        if not tail.extend(entries, now):
            self._forget(tail.key)
            return await self._fresh_tail(stream_id)
        if tail.closed and pttl >= 0:
            tail.expires_at = now + pttl / 1000
        tail.wake()
        return tail

    def _adopt(self, tail: _Tail) -> None:
        old = self._tails.get(tail.key)
        self._tails[tail.key] = tail
        self._writing.pop(tail.key, None)  # followed until a local append finds it up to date
        if old is not None and old is not tail:
            old.drop()
        self._ensure_follower()
        self._kick.set()

    def _forget(self, key: str) -> None:
        tail = self._tails.pop(key, None)
        if tail is not None:
            tail.drop()

    # --- the follower: one XREAD for every open log this process holds -------------------------------

    def _ensure_follower(self) -> None:
        if self._stopped:
            return
        if self._follower is None or self._follower.done():
            self._follower = asyncio.get_running_loop().create_task(
                self._follow(), name="redis-broker-follower"
            )

    async def _follow(self) -> None:
        failing = False
        while not self._stopped:
            now = self._now()
            if now - self._swept_at >= self._sweep_every:
                self._sweep(now)
            positions: dict[KeyT, StreamIdT] = {
                key: f"0-{tail.hi}"
                for key, tail in self._tails.items()
                if not tail.closed and now - self._writing.get(key, -math.inf) > WRITER_QUIET
            }
            if not positions:
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._sweep_every)
                continue
            # Paced: when logs keep changing, every XREAD would return at once with a few entries; at most one
            # call per PACE seconds reads more entries per call (a latency cost <= PACE, for readers of
            # another process's job only: a process's own appends reach its readers directly).
            pause = self._read_at + PACE - self._now()
            if pause > 0:
                await asyncio.sleep(pause)
            self._read_at = self._now()
            try:
                reply = await self._redis.xread(positions, count=READ_COUNT, block=self._block_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down, or worse: every reader looks its log up again
                if not failing:
                    log.warning("redis broker: reading the logs failed: %r", exc)
                failing = True
                for key in list(self._tails):
                    self._forget(key)
                await asyncio.sleep(RETRY_AFTER_FAILURE)
                continue
            if failing:
                log.info("redis broker: reading the logs again")
                failing = False
            now = self._now()
            for raw_key, entries in _streams(reply):
                key = _text(raw_key)
                tail = self._tails.get(key)
                if tail is None:
                    continue
                try:
                    kept = tail.extend(entries, now)
                except codec.CodecError:
                    log.exception("redis broker: bad entry in %s", key)
                    kept = False
                if kept:
                    tail.wake()
                else:
                    self._forget(key)  # a gap (the log was replaced): its readers load it again

    def _sweep(self, now: float) -> None:
        self._swept_at = now
        for key, written_at in list(self._writing.items()):
            if now - written_at > WRITER_QUIET:
                del self._writing[key]
        for key, tail in list(self._tails.items()):
            if tail.has_waiters():
                continue
            if now - tail.used_at > self._linger or (tail.closed and now >= tail.expires_at):
                self._forget(key)

    async def aclose(self) -> None:
        self._stopped = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        for task in [*self._loading.values(), *self._refreshing.values()]:
            task.cancel()
        for key in list(self._tails):
            self._forget(key)
        if self._owns_client:
            await self._redis.aclose()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Redis is unreachable: {exc}") from exc


def _refusal(stream_id: str, exc: redis_errors.ResponseError) -> Exception:
    message = str(exc)
    code = message.split(" ", 1)[0]
    kind = _REFUSALS.get(code)
    if kind is None and "equal or smaller than the target stream top item" in message:
        kind = StaleAppend
    if kind is None:
        return exc
    return kind(f"stream {stream_id}: {message.removeprefix(code).strip()}")


def _streams(reply: Any) -> Iterator[tuple[Any, Sequence[tuple[Any, Any]]]]:
    """XREAD's reply as (key, entries) pairs, from RESP2 (a list) or RESP3 (a dict)."""
    if not reply:
        return
    if isinstance(reply, dict):
        for key, value in reply.items():
            entries = value[0] if value and isinstance(value[0], list) else value
            yield key, entries
        return
    for key, entries in reply:
        yield key, entries


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(fields: Any, name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        value = fields.get(name.encode())
    return None if value is None else _text(value)
