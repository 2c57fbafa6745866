"""Whole responses of the hot reads, kept as bytes in front of the app: a stored portrait is written once and
read thousands of times, and a hit here costs a dictionary lookup instead of routing, queries and rendering.

A route opts in by naming what its response shows (`cacheable(request, "artist:1", "catalog")`); the
middleware buffers that response, gives it a strong ETag (a hash of its bytes, so it changes whenever what
it shows changes), answers `If-None-Match` with 304, and keeps it under its URL and the request headers it
varies on. A write names what it changed (`invalidate("artist:1")`) before its response is sent, and from
then on no entry built from older data is served:

- every build remembers the cache's write sequence from *before* it read anything; an invalidation stamps
  its scopes with a later one, so a build that raced a write (read old rows, finished after the write) is
  neither stored nor served — no stale 200 after the write returns, on the process that wrote it;
- entries live at most `ttl` seconds: the bound on staleness when an invalidation from another process is
  lost (`listeners` carry this process's invalidations to the others; docs/architecture.md "Reads");
- the bytes held are bounded (`max_bytes`, least recently used out first).

Responses also tell a proxy in front how long it may keep them: `X-Accel-Expires: @<this second>` lets the
shipped nginx.conf micro-cache them until the end of the current second at most (nginx counts whole seconds:
a relative 1 s could live almost 2), and `Cache-Control: no-cache` has browsers revalidate with the ETag.
Requests with `Authorization` are never answered from, nor stored in, the cache.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where a route leaves the scopes its response shows (the ASGI scope is shared with the middleware).
SCOPE_KEY = "atelier.read_cache"
# The request headers a cached response may vary on; a response that varies on any other is not kept.
VARY_ON = (b"accept", b"last-event-id")
# What an entry costs beyond its body: its key, headers and bookkeeping (measured, rounded up).
ENTRY_OVERHEAD = 1024
# Scopes remembered before the cache starts afresh (each artist ever written is one).
MAX_SCOPES = 65_536

Key = tuple[str, bytes, tuple[bytes | None, ...]]
Headers = list[tuple[bytes, bytes]]


def cacheable(request: Request, *scopes: str) -> None:
    """Mark this request's 200 response as one the read cache keeps, invalidated with any of `scopes`."""
    request.scope[SCOPE_KEY] = scopes


def strong_etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


@dataclass(slots=True)
class Entry:
    status: int
    headers: Headers  # the response's own, with its ETag; without X-Accel-Expires (it is per second)
    body: bytes
    etag: bytes
    scopes: tuple[str, ...]
    built_at: int  # the cache's write sequence when its build began
    born: float  # monotonic seconds

    @property
    def size(self) -> int:
        return len(self.body) + ENTRY_OVERHEAD


class ReadCache:
    def __init__(self, max_bytes: int, ttl: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 8  # one huge answer must not push out everything else
        self.ttl = ttl
        self.monotonic = monotonic
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._sequence = 0
        self._floor = 0  # entries built before this are gone (a clear)
        self._invalidated: dict[str, int] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        # Called with the scopes of every local invalidation: how other processes hear of them.
        self.listeners: list[Callable[[tuple[str, ...]], None]] = []
        # Called with True for each read answered from the cache, False for each read a route marked
        # cacheable that had to be built (reads no route marks are neither): metrics.
        self.on_lookup: list[Callable[[bool], None]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def sequence(self) -> int:
        """Take this before reading what a response will show; give it to `put` with the response."""
        return self._sequence

    def invalidate(self, *scopes: str) -> None:
        """Whatever shows any of `scopes` is outdated from now on, here and (through `listeners`) elsewhere."""
        self.invalidate_local(scopes)
        for listener in self.listeners:
            listener(scopes)

    def invalidate_local(self, scopes: Iterable[str]) -> None:
        self._sequence += 1
        if len(self._invalidated) >= MAX_SCOPES:
            self.clear()
        for scope in scopes:
            self._invalidated[scope] = self._sequence

    def clear(self) -> None:
        """Forget everything (e.g. after missing other processes' invalidations)."""
        self._sequence += 1
        self._floor = self._sequence
        self._invalidated.clear()
        self._entries.clear()
        self.bytes = 0

    def _current(self, entry: Entry) -> bool:
        if entry.built_at < self._floor or self.monotonic() - entry.born > self.ttl:
            return False
        invalidated = self._invalidated
        return all(invalidated.get(scope, 0) <= entry.built_at for scope in entry.scopes)

    def get(self, key: Key) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if not self._current(entry):
            self._drop(key, entry)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        for hook in self.on_lookup:
            hook(True)
        return entry

    def put(self, key: Key, entry: Entry) -> bool:
        """Keep `entry` unless what it shows was invalidated since its build began, or it is too big."""
        if entry.size > self.max_entry_bytes or not self._current(entry):
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            oldest_key, oldest = next(iter(self._entries.items()))
            self._drop(oldest_key, oldest)
        return True

    def _drop(self, key: Key, entry: Entry) -> None:
        del self._entries[key]
        self.bytes -= entry.size


def _not_modified(if_none_match: bytes | None, etag: bytes) -> bool:
    """The weak comparison of RFC 9110 13.1.2 (a gzipping proxy weakens ETags: W/"x" matches "x")."""
    if if_none_match is None:
        return False
    candidates = [tag.strip().removeprefix(b"W/") for tag in if_none_match.split(b",")]
    return etag in candidates or b"*" in candidates


def _expires_header(second: int) -> tuple[bytes, bytes]:
    return (b"x-accel-expires", b"@%d" % second)


# The headers a 304 repeats (RFC 9110 15.4.5): the validator and what governs caching.
_NOT_MODIFIED_KEEPS = frozenset({b"etag", b"cache-control", b"vary", b"content-location", b"expires"})


def _entry(
    start: Message, body: bytes, scopes: tuple[str, ...], built_at: int, born: float
) -> tuple[Entry, bool]:
    """The response as an entry, and whether it may be kept: not if it varies on a header the key
    does not hold (it is answered all the same, with its ETag)."""
    response_headers: Headers = []
    etag = None
    varies_elsewhere = False
    has_cache_control = False
    for name, value in start.get("headers", []):
        lowered = name.lower()
        if lowered == b"etag":
            etag = value
        elif lowered == b"cache-control":
            has_cache_control = True
        elif lowered == b"vary":
            varies_elsewhere = any(part.strip().lower() not in VARY_ON for part in value.split(b","))
        elif lowered == b"content-length":
            continue  # set below, from the body as buffered
        response_headers.append((lowered, value))
    if etag is None:
        etag = strong_etag(body)
        response_headers.append((b"etag", etag))
    if not has_cache_control:
        response_headers.append((b"cache-control", b"no-cache"))
    response_headers.append((b"content-length", str(len(body)).encode()))
    entry = Entry(
        status=start["status"],
        headers=response_headers,
        body=body,
        etag=etag,
        scopes=scopes,
        built_at=built_at,
        born=born,
    )
    return entry, not varies_elsewhere


class ReadCacheMiddleware:
    """Answers GET and HEAD from the cache; keeps the responses routes marked with `cacheable`. The cache is
    the one the app's lifespan built, found in its state under `state_key`."""

    def __init__(self, app: ASGIApp, state_key: str) -> None:
        self.app = app
        self.state_key = state_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        cache: ReadCache = scope["state"][self.state_key]
        headers = dict(scope["headers"])
        storable = b"authorization" not in headers
        key: Key = (scope["path"], scope["query_string"], tuple(headers.get(name) for name in VARY_ON))
        head = scope["method"] == "HEAD"
        if storable:
            entry = cache.get(key)
            if entry is not None:  # current now: a proxy may keep it to the end of this second
                await self._answer(entry, headers.get(b"if-none-match"), head, int(time.time()), send)
                return
        built_at = cache.sequence()
        # A build shows what was true when it began: a proxy may keep it to the end of *that* second, so
        # one that raced a write is never kept past a second after the write.
        began = int(time.time())
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffering_send(message: Message) -> None:
            nonlocal start
            if start is None and message["type"] == "http.response.start":
                if scope.get(SCOPE_KEY) is None or message["status"] != 200:
                    start = {}  # not a kept response: passed through as it comes
                    await send(message)
                else:
                    start = message
                return
            if not start:  # passing through
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            entry, keepable = _entry(start, b"".join(chunks), scope[SCOPE_KEY], built_at, cache.monotonic())
            if storable:
                for hook in cache.on_lookup:
                    hook(False)
                if keepable:
                    cache.put(key, entry)
            await self._answer(entry, headers.get(b"if-none-match"), head, began, send)

        await self.app(scope, receive, buffering_send)

    @staticmethod
    async def _answer(
        entry: Entry, if_none_match: bytes | None, head: bool, expires: int, send: Send
    ) -> None:
        if _not_modified(if_none_match, entry.etag):
            kept = [(name, value) for name, value in entry.headers if name in _NOT_MODIFIED_KEEPS]
            await send(
                {"type": "http.response.start", "status": 304, "headers": [*kept, _expires_header(expires)]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {
                "type": "http.response.start",
                "status": entry.status,
                "headers": [*entry.headers, _expires_header(expires)],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else entry.body})
