"""The read cache's invalidations carried between processes over Redis pub/sub (docs/architecture.md,
"Reads": several processes).

`ReadCacheBus(cache, redis, channel)`; `start()` inside the event loop, `aclose()` at shutdown (the Redis
client stays the caller's to close).

- **Out.** A listener on `cache.listeners` publishes each local invalidation as JSON
  `{"origin": <this bus>, "scopes": [...]}`. The write path never waits for it and never sees it fail: the
  listener only starts a task (at most `max_pending` at once; past that an invalidation is dropped and
  logged), and the task logs a failure (once per outage, then at debug level) instead of raising.
- **In.** One subscriber task applies the other processes' invalidations with `invalidate_local` (its own,
  recognised by `origin`, are skipped) and calls `cache.clear()` each time the subscription is confirmed:
  after a disconnect it may have missed messages, and at the first it may have built entries before it
  listened. The confirmation is the signal, not our own reconnect: redis-py may reconnect and resubscribe
  by itself inside a read (its retry policy), and that confirmation clears too. A message that cannot be
  read clears the cache as well (a newer format from a process of a later version, say). Lost connections
  are retried with jittered exponential backoff; a silent one (no FIN) is found by a PING every `keepalive`
  seconds of quiet, and given up after three such periods without a byte.

What is lost anyway (a publish that failed while the subscribers stayed connected) is bounded by the cache's
TTL. Nothing here imports the app: the channel name is the caller's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import uuid

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError

from app.kit.read_cache import ReadCache

log = logging.getLogger("atelier.read_cache_bus")


class ReadCacheBus:
    def __init__(
        self,
        cache: ReadCache,
        redis: Redis,
        channel: str,
        *,
        keepalive: float = 5.0,
        backoff: tuple[float, float] = (0.05, 5.0),
        max_pending: int = 1000,
    ) -> None:
        self.cache = cache
        self.redis = redis
        self.channel = channel
        self.keepalive = keepalive
        self.backoff = backoff
        self.max_pending = max_pending
        # This process (host, pid, and a nonce: two buses in one process are two origins too).
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.connected = False
        # Counters, for tests and metrics.
        self.subscriptions = 0  # confirmed (re)subscriptions, each of which cleared the cache
        self.applied = 0  # others' invalidations applied
        self.own = 0  # our own messages heard back and skipped
        self.published = 0
        self.publish_failures = 0  # failed, or dropped for too many pending
        self._pending: set[asyncio.Task[None]] = set()
        self._subscriber: asyncio.Task[None] | None = None
        self._publish_failing = False
        self._closing = False

    # --- lifecycle ---

    def start(self) -> None:
        if self._subscriber is not None:
            raise RuntimeError("the read cache bus is already started")
        self.cache.listeners.append(self._on_invalidate)
        self._subscriber = asyncio.get_running_loop().create_task(self._subscribe_forever())

    async def aclose(self, publish_grace: float = 1.0) -> None:
        """Stop listening; give invalidations still being published `publish_grace` seconds to go out."""
        if self._on_invalidate in self.cache.listeners:
            self.cache.listeners.remove(self._on_invalidate)
        if self._subscriber is not None:
            # redis-py's pub/sub read can swallow a cancel (its reconnect logic): the flag ends the loops at
            # their next turn, and the wait is bounded either way (a read times out after `keepalive`).
            self._closing = True
            self._subscriber.cancel()
            await asyncio.wait([self._subscriber], timeout=self.keepalive + 1)
            self._subscriber = None
        if self._pending:
            _done, late = await asyncio.wait(self._pending, timeout=publish_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.connected = False

    # --- out ---

    def _on_invalidate(self, scopes: tuple[str, ...]) -> None:
        """Called on the write path: starts the publication and returns; never raises."""
        try:
            if len(self._pending) >= self.max_pending:
                self.publish_failures += 1
                log.warning(
                    "read cache bus: %d invalidations already pending; dropped %s", len(self._pending), scopes
                )
                return
            payload = json.dumps({"origin": self.origin, "scopes": list(scopes)})
            task = asyncio.get_running_loop().create_task(self._publish(payload))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        except Exception:
            self.publish_failures += 1
            log.exception("read cache bus: could not publish the invalidation of %s", scopes)

    async def _publish(self, payload: str) -> None:
        try:
            await self.redis.publish(self.channel, payload)
        except Exception as exc:
            self.publish_failures += 1
            level = logging.DEBUG if self._publish_failing else logging.WARNING
            self._publish_failing = True
            log.log(
                level, "read cache bus: publishing an invalidation failed: %s: %s", type(exc).__name__, exc
            )
            return
        self.published += 1
        if self._publish_failing:
            self._publish_failing = False
            log.warning("read cache bus: publishing invalidations again")

    # --- in ---

    async def _subscribe_forever(self) -> None:
        failures = 0  # attempts in a row that never got a subscription
        while not self._closing:
            subscriptions = self.subscriptions
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = 0 if self.subscriptions > subscriptions else failures + 1
                level = logging.WARNING if self.connected or failures == 1 else logging.DEBUG
                log.log(
                    level,
                    "read cache bus: %s %r: %s: %s; trying again",
                    "lost the subscription to" if self.connected else "cannot subscribe to",
                    self.channel,
                    type(exc).__name__,
                    exc,
                )
                self.connected = False
                low, high = self.backoff
                await asyncio.sleep(random.uniform(0.5, 1.0) * min(high, low * 2 ** min(failures, 20)))

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while not self._closing:
            message = await pubsub.get_message(timeout=self.keepalive)
            now = loop.time()
            if message is None:
                if now - heard >= 3 * self.keepalive:
                    raise RedisConnectionError(f"nothing from Redis in {now - heard:.1f} s")
                if now - pinged >= self.keepalive:
                    pinged = now
                    await pubsub.ping()  # its pong is heard like any message
                continue
            heard = now
            kind = _text(message["type"])
            if kind == "subscribe":
                self._subscribed()
            elif kind == "message":
                self._receive(message["data"])

    def _subscribed(self) -> None:
        """Listening (again): whatever was said while we were not is unknown, so forget everything."""
        self.cache.clear()
        self.subscriptions += 1
        if self.subscriptions > 1:
            log.warning("read cache bus: subscribed to %r again; the read cache was cleared", self.channel)
        self.connected = True

    def _receive(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
            origin = message["origin"]
            scopes = message["scopes"]
            if not isinstance(scopes, list) or not all(isinstance(scope, str) for scope in scopes):
                raise ValueError("scopes is not a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("read cache bus: unreadable message %r (%s); the read cache was cleared", data, exc)
            self.cache.clear()
            return
        if origin == self.origin:
            self.own += 1
            return
        self.cache.invalidate_local(scopes)
        self.applied += 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
