"""`ReadCacheBus` (app/kit/read_cache_bus.py): the read cache's invalidations between processes over Redis.

Each test starts its own redis-server on a free port (never the shared one on 6379). A "process" is a
`ReadCache` with its own Redis client and bus.

Covered: an invalidation on one process reaches the other (timed: well under the 1 s bound), only the scopes
named; a process skips its own messages; the first subscription and every later one clear the cache; Redis
stopped and restarted: the other's cache is cleared on reconnect and messages flow again, whether redis-py
reconnects by itself (its default retries) or the bus's own loop does (no client retries); publishing while
Redis is down neither raises nor waits, and is logged; too many pending publications are dropped; an
unreadable message clears; a silent Redis (SIGSTOP) is noticed by the keepalive and, once it answers, the
cache is cleared; `aclose()` stops publishing.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.kit.read_cache import Entry, Key, ReadCache
from app.kit.read_cache_bus import ReadCacheBus
from tests.redis_server import RedisServer
from tests.redis_server import redis_server as private_redis_server

pytestmark = pytest.mark.timeout(30)

CHANNEL = "test:read-cache"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with private_redis_server() as server:
        yield server


@dataclass
class Process:
    cache: ReadCache
    redis: Redis
    bus: ReadCacheBus

    def keep(self, path: str, *scopes: str) -> Key:
        """A response showing `scopes`, built now and kept."""
        key: Key = (path, b"", (None, None))
        entry = Entry(200, [], b"body", b'"etag"', scopes, self.cache.sequence(), self.cache.monotonic())
        assert self.cache.put(key, entry)
        return key

    def holds(self, key: Key) -> bool:
        return self.cache.get(key) is not None


@asynccontextmanager
async def process(port: int, keepalive: float = 5.0, **client_options: Any) -> AsyncIterator[Process]:
    redis = Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2, **client_options)
    cache = ReadCache(max_bytes=1 << 20, ttl=60)
    bus = ReadCacheBus(cache, redis, CHANNEL, keepalive=keepalive, backoff=(0.02, 0.2))
    bus.start()
    try:
        yield Process(cache, redis, bus)
    finally:
        await bus.aclose()
        await redis.aclose()


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> float:
    """Seconds until `condition()` held (polled every millisecond); fails the test after `within` seconds."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > within:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def subscribed(*processes: Process, times: int = 1, within: float = 5.0) -> None:
    await wait_until(lambda: all(p.bus.subscriptions >= times for p in processes), within)


NO_RETRIES: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}


@pytest.mark.parametrize("decode_responses", [False, True])
def test_when_one_process_invalidates_then_the_other_forgets_those_scopes_within_a_second(
    redis_server: RedisServer, decode_responses: bool
) -> None:
    async def scenario() -> list[float]:
        delays = []
        async with (
            process(redis_server.port, decode_responses=decode_responses) as a,
            process(redis_server.port, decode_responses=decode_responses) as b,
        ):
            await subscribed(a, b)
            heard: list[float] = []
            apply = b.cache.invalidate_local

            def timed(scopes: Iterable[str]) -> None:  # when B applies it, to the microsecond
                heard.append(time.perf_counter())
                apply(scopes)

            b.cache.invalidate_local = timed  # type: ignore[method-assign]

            def heard_more_than(count: int) -> Callable[[], bool]:
                return lambda: len(heard) > count

            for round in range(20):
                shown = b.keep("/artists/1", "artist:1")
                other = b.keep("/artists/2", "artist:2")

                sent = time.perf_counter()
                a.cache.invalidate("artist:1")
                await wait_until(heard_more_than(round), within=1.0)
                delays.append(heard[-1] - sent)

                assert not b.holds(shown)
                assert b.holds(other)
        return delays

    delays = asyncio.run(scenario())

    print(
        f"invalidation A -> B: median {statistics.median(delays) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms"
    )
    assert max(delays) < 1.0


def test_when_a_process_hears_its_own_invalidation_then_it_skips_it(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with process(redis_server.port) as a, process(redis_server.port) as b:
            await subscribed(a, b)
            kept = a.keep("/artists/2", "artist:2")
            before = a.cache.sequence()

            a.cache.invalidate("catalog")
            await wait_until(lambda: a.bus.own == 1 and b.bus.applied == 1)

            assert a.bus.applied == 0
            assert a.cache.sequence() == before + 1  # its own invalidation only, not applied a second time
            assert a.holds(kept)
            assert b.bus.own == 0

    asyncio.run(scenario())


def test_when_the_bus_subscribes_then_the_cache_is_cleared(redis_server: RedisServer) -> None:
    # Entries built before the subscription may have missed another process's invalidation.
    async def scenario() -> None:
        redis = Redis(host="127.0.0.1", port=redis_server.port)
        cache = ReadCache(max_bytes=1 << 20, ttl=60)
        early = Process(cache, redis, ReadCacheBus(cache, redis, CHANNEL)).keep("/", "catalog")
        bus = ReadCacheBus(cache, redis, CHANNEL)
        bus.start()
        try:
            await wait_until(lambda: bus.subscriptions == 1)
            assert cache.get(early) is None
            assert bus.connected
        finally:
            await bus.aclose()
            await redis.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("client_retries", ["redis-py default", "none"])
def test_when_redis_restarts_then_the_other_cache_is_cleared_and_messages_flow_again(
    redis_server: RedisServer, client_retries: str
) -> None:
    options = NO_RETRIES if client_retries == "none" else {}

    async def scenario() -> None:
        async with process(redis_server.port, **options) as a, process(redis_server.port, **options) as b:
            await subscribed(a, b)
            redis_server.stop()
            await wait_until(lambda: not b.bus.connected)  # b has seen the subscription go
            # Built while the subscription is down: it may miss an invalidation, so it must go on reconnect.
            during = b.keep("/artists/3", "artist:3")

            redis_server.start()
            started = time.perf_counter()
            await subscribed(a, b, times=2, within=10)
            reconnected = time.perf_counter() - started

            assert not b.holds(during)
            after = b.keep("/artists/3", "artist:3")
            a.cache.invalidate("artist:3")
            await wait_until(lambda: b.bus.applied == 1, within=1.0)
            assert not b.holds(after)
            print(
                f"client retries {client_retries}: resubscribed {reconnected * 1000:.0f} ms after the restart"
            )

    asyncio.run(scenario())


def test_when_redis_goes_silent_then_the_bus_notices_by_keepalive_and_clears_when_it_answers_again(
    redis_server: RedisServer,
) -> None:
    # SIGSTOP: the connection stays open but nothing answers, as behind a dead link that sent no FIN.
    assert redis_server.process is not None
    server = redis_server.process

    async def scenario() -> None:
        async with process(redis_server.port, keepalive=0.1) as b:
            await subscribed(b)
            server.send_signal(signal.SIGSTOP)
            try:
                silent = await wait_until(lambda: not b.bus.connected, within=2.0)
                kept = b.keep("/artists/1", "artist:1")
            finally:
                server.send_signal(signal.SIGCONT)
            await subscribed(b, times=2)

            assert not b.holds(kept)
            print(f"silence noticed after {silent * 1000:.0f} ms (keepalive 100 ms)")
            assert silent >= 0.25  # three quiet keepalive periods, not one missed beat

    asyncio.run(scenario())


def test_when_redis_is_down_then_invalidating_neither_raises_nor_waits_and_the_failure_is_logged(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.read_cache_bus")

    async def scenario() -> None:
        async with process(redis_server.port, **NO_RETRIES) as a:
            await subscribed(a)
            kept = a.keep("/artists/1", "artist:1")
            redis_server.stop()

            started = time.perf_counter()
            for _ in range(3):
                a.cache.invalidate("artist:1")
            elapsed = time.perf_counter() - started

            assert elapsed < 0.01  # nothing awaited on the write path
            assert not a.holds(kept)  # the local invalidation happened all the same
            await wait_until(lambda: a.bus.publish_failures == 3)
            assert a.bus.published == 0

    asyncio.run(scenario())

    failures = [r for r in caplog.records if "publishing an invalidation failed" in r.getMessage()]
    assert len(failures) == 1  # once per outage, not once per write


def test_when_too_many_publications_are_pending_then_the_next_is_dropped(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with process(redis_server.port) as a:
            a.bus.max_pending = 2
            redis_server.stop()  # with redis-py's default retries, each publication now takes seconds to fail

            for _ in range(3):
                a.cache.invalidate("catalog")

            assert a.bus.publish_failures == 1  # the third, dropped at once
            await a.bus.aclose(publish_grace=0.05)  # the two pending ones are cancelled, not waited out
            assert a.bus.published == 0

    asyncio.run(scenario())


def test_when_a_message_cannot_be_read_then_the_cache_is_cleared(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with process(redis_server.port) as b:
            await subscribed(b)
            kept = b.keep("/", "catalog")
            sequence = b.cache.sequence()

            await b.redis.publish(CHANNEL, '{"scopes": "catalog"}')  # from some other version, say
            await wait_until(lambda: b.cache.sequence() > sequence)

            assert not b.holds(kept)
            assert len(b.cache) == 0
            assert b.bus.applied == 0

    asyncio.run(scenario())


def test_when_the_bus_is_closed_then_invalidations_are_no_longer_published(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with process(redis_server.port) as a, process(redis_server.port) as b:
            await subscribed(a, b)
            await a.bus.aclose()

            a.cache.invalidate("catalog")
            b.cache.invalidate("artist:1")  # b still publishes: proof that the channel works
            await wait_until(lambda: b.bus.own == 1)

            assert a.cache.listeners == []
            assert a.bus.published == 0
            assert b.bus.applied == 0

    asyncio.run(scenario())
