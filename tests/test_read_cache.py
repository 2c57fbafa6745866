"""The read cache's own rules, on the cache alone: what it keeps, for how long, and what a write makes it
forget, including a read that raced the write."""

from __future__ import annotations

from app.kit.read_cache import ENTRY_OVERHEAD, Entry, Key, ReadCache, strong_etag


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def key(path: str) -> Key:
    return (path, b"", (None, None))


def entry(cache: ReadCache, body: bytes, *scopes: str, built_at: int | None = None) -> Entry:
    return Entry(
        status=200,
        headers=[(b"etag", strong_etag(body))],
        body=body,
        etag=strong_etag(body),
        scopes=scopes,
        built_at=cache.sequence() if built_at is None else built_at,
        born=cache.monotonic(),
    )


def make(max_bytes: int = 1 << 20, ttl: float = 5.0) -> tuple[ReadCache, Monotonic]:
    clock = Monotonic()
    return ReadCache(max_bytes, ttl, monotonic=clock), clock


def test_put_then_get_same_bytes_and_counts_hit() -> None:
    cache, _ = make()
    assert cache.get(key("/a")) is None
    assert cache.put(key("/a"), entry(cache, b"one", "artist:1"))
    found = cache.get(key("/a"))
    assert found is not None and found.body == b"one"
    assert (cache.hits, cache.misses) == (1, 1)


def test_invalidate_scope_then_only_its_entries_go() -> None:
    cache, _ = make()
    cache.put(key("/a"), entry(cache, b"a", "artist:1", "catalog"))
    cache.put(key("/b"), entry(cache, b"b", "artist:2"))
    cache.invalidate("artist:1")
    assert cache.get(key("/a")) is None
    assert cache.get(key("/b")) is not None
    cache.invalidate("catalog")
    assert cache.get(key("/b")) is not None


def test_build_that_began_before_a_write_then_never_stored() -> None:
    """The race: a read takes its sequence, reads the old rows, a write commits and invalidates, and only
    then does the read try to keep what it built: refused, so no stale 200 after the write returned."""
    cache, _ = make()
    began = cache.sequence()
    cache.invalidate("artist:1")
    assert not cache.put(key("/a"), entry(cache, b"old", "artist:1", built_at=began))
    assert cache.get(key("/a")) is None
    # a build of another artist that began at the same moment is not affected
    assert cache.put(key("/b"), entry(cache, b"other", "artist:2", built_at=began))


def test_entry_older_than_ttl_then_rebuilt() -> None:
    cache, clock = make(ttl=5.0)
    cache.put(key("/a"), entry(cache, b"a", "artist:1"))
    clock.now += 4.9
    assert cache.get(key("/a")) is not None
    clock.now += 0.2
    assert cache.get(key("/a")) is None
    assert len(cache) == 0 and cache.bytes == 0


def test_bytes_bounded_least_recently_used_out_first() -> None:
    body = b"x" * 1000
    cache, _ = make(max_bytes=8 * (len(body) + ENTRY_OVERHEAD) + 10)  # room for eight
    names = [f"/{number}" for number in range(8)]
    for name in names:
        assert cache.put(key(name), entry(cache, body, "s"))
    assert cache.get(key("/0")) is not None  # now the most recently used
    cache.put(key("/new"), entry(cache, body, "s"))
    assert cache.get(key("/1")) is None
    assert all(cache.get(key(name)) is not None for name in ["/0", *names[2:], "/new"])
    assert cache.bytes <= cache.max_bytes


def test_entry_over_an_eighth_of_the_bound_then_not_kept() -> None:
    cache, _ = make(max_bytes=8 * 2048)
    assert not cache.put(key("/big"), entry(cache, b"x" * 2048, "s"))
    assert cache.put(key("/small"), entry(cache, b"x" * 512, "s"))


def test_zero_bound_then_keeps_nothing() -> None:
    cache, _ = make(max_bytes=0)
    assert not cache.put(key("/a"), entry(cache, b"a", "s"))
    assert len(cache) == 0


def test_listeners_hear_local_invalidations_not_remote_ones() -> None:
    cache, _ = make()
    heard: list[tuple[str, ...]] = []
    cache.listeners.append(heard.append)
    cache.invalidate("artist:1", "catalog")
    cache.invalidate_local(["artist:2"])  # from another process: not sent back out
    assert heard == [("artist:1", "catalog")]


def test_clear_then_entries_and_builds_before_it_gone() -> None:
    cache, _ = make()
    began = cache.sequence()
    cache.put(key("/a"), entry(cache, b"a", "s"))
    cache.clear()
    assert cache.get(key("/a")) is None
    assert not cache.put(key("/b"), entry(cache, b"b", "t", built_at=began))
