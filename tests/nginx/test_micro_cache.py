"""The micro-cache of the shipped nginx.conf, with a real nginx in front of a real Atelier: what it serves
without asking the app, what it never keeps, and that a write is seen through it within 1 s.

Whether the app was asked is counted by a relay between nginx and the app (`Relay`: every request head that
goes through it), not read from nginx's own words (X-Cache-Status, its log), which are what is under test.
Every test uses its own artists, so the count of one URL is the test's own.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from tests.nginx.conftest import BehindNginx
from tests.nginx.servers import ARTISTS, TOKEN, atelier, free_port, nginx, nginx_or_skip
from tests.nginx.test_nginx import through_nginx

AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL = 0.05  # how often a watcher asks
# nginx keeps an entry until the end of the second the app answered in, so a write is seen within 1 s. Added:
# what a loaded 2-core machine may take between a poll's start and nginx's look at its entry, and the race
# the app's own stamp allows (a read that began before the write is stamped when it ends, so it may carry the
# next second if it crossed one): 100 ms covers both with room (measured: a few ms each).
VISIBLE_WITHIN = 1.0 + 0.1
# The lists of artists also serve an expired entry while one request renews it: one more app round trip.
LISTS_VISIBLE_WITHIN = VISIBLE_WITHIN + 0.4
OLD, NEW = "old", "new"


class Relay:
    """A TCP relay on loopback that passes bytes both ways unchanged and notes the request line of every
    request that goes from nginx to the app (nginx sends a request's body with Content-Length, and sends the
    next request on a connection only after the answer to the last one)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.request_lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, method: str, target: str) -> int:
        with self.lock:
            return self.request_lines.count(f"{method} {target} HTTP/1.1")

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._requests, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, downstream), daemon=True).start()

    def _requests(self, source: socket.socket, target: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = source.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                while len(rest) < length:
                    chunk = source.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                with self.lock:
                    self.request_lines.append(lines[0])
                target.sendall(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
        except OSError:
            pass
        finally:
            target.close()

    @staticmethod
    def _answers(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            target.close()


@dataclass
class Cached(BehindNginx):
    relay: Relay


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cached]:
    """Atelier with a fast demo writer (a short portrait in well under a second) and no generation limit
    worth the name, behind the shipped nginx.conf, with the counting relay between them."""
    nginx_or_skip()
    directory = tmp_path_factory.mktemp("micro-cache")
    with atelier(
        directory / "app",
        "serve",
        generation_rate="100000/minute",
        trusted_proxies="127.0.0.1",
        demo_tokens_per_second="10000",
    ) as app:
        relay = Relay(app.port)
        try:
            overrides = {"worker_processes": "1"}
            with nginx(directory / "nginx", upstream_port=relay.port, overrides=overrides) as proxy:
                yield Cached(app=app, nginx=proxy, relay=relay)
        finally:
            relay.close()


def direct(behind: BehindNginx) -> httpx.Client:
    return httpx.Client(base_url=behind.app.url, timeout=10)


def asked(behind: Cached, target: str, method: str = "GET") -> int:
    """How many times nginx asked the app for `target` (path and query, as nginx passes them on)."""
    return behind.relay.count(method, target)


def asked_soon(behind: Cached, target: str, expected: int) -> int:
    """The count once it reached `expected` or 0.5 s passed (nginx renews an entry in the background, after
    it answered)."""
    deadline = time.monotonic() + 0.5
    while (count := asked(behind, target)) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


def cache_status(response: httpx.Response) -> str | None:
    status: str | None = response.headers.get("x-cache-status")
    return status


def early_in_a_second(latest: float = 0.5) -> None:
    """Wait until the wall clock is early in a second: an entry nginx stores now is fresh for the next
    `1 - latest` seconds at least (nginx keeps it until the end of this second)."""
    while not 0.02 <= time.time() % 1 <= latest:
        time.sleep(0.01)


def article(artist_id: int) -> str:
    return f"{ARTISTS}/{artist_id}/article?length=short"


def with_portrait(behind: BehindNginx, name: str | None = None) -> int:
    """A new artist with a stored short portrait (the synchronous route, straight to the app)."""
    with direct(behind) as client:
        data = {"name": name or f"Micro {uuid.uuid4().hex[:8]}"}
        created = client.post(ARTISTS, json=data, headers=AUTH)
        assert created.status_code == 201, created.text
        artist_id: int = created.json()["id"]
        stored = client.post(article(artist_id), headers=AUTH)
        assert stored.status_code == 200, stored.text
    return artist_id


def new_artist(behind: BehindNginx) -> int:
    (artist_id,) = behind.app.add_artists(1)
    return artist_id


def read_stream(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 200, response.read()
    return [(sse.event, sse.data) for sse in EventSource(response).iter_sse() if sse.data]  # not `retry:`


# --- served from the cache ------------------------------------------------------------------------------


def test_a_hot_article_is_served_by_nginx_with_the_apps_bytes_and_etag(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    target = article(artist_id)
    with through_nginx(fast) as client, direct(fast) as app:
        early_in_a_second()
        first, second, third = client.get(target), client.get(target), client.get(target)
        own = app.get(target)
    assert [cache_status(r) for r in (first, second, third)] == ["MISS", "HIT", "HIT"]
    assert asked(fast, target) == 1  # nginx's MISS: the HITs never reached the app
    assert own.status_code == 200 and own.headers["x-accel-expires"].startswith("@")
    for response in (first, second, third):
        assert response.status_code == 200
        assert response.content == own.content
        assert response.headers["etag"] == own.headers["etag"]
        assert response.headers["content-type"] == own.headers["content-type"]
        assert response.headers["cache-control"] == "no-cache"  # browsers revalidate
        assert "x-accel-expires" not in response.headers  # nginx's business, not the browser's


def test_markdown_and_json_of_one_article_are_kept_apart(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    target = article(artist_id)
    markdown = {"Accept": "text/markdown"}
    with through_nginx(fast) as client, direct(fast) as app:
        early_in_a_second()
        as_json, as_markdown = client.get(target), client.get(target, headers=markdown)
        again_json, again_markdown = client.get(target), client.get(target, headers=markdown)
        own_markdown = app.get(target, headers=markdown)
    assert [cache_status(r) for r in (as_json, as_markdown)] == ["MISS", "MISS"]
    assert [cache_status(r) for r in (again_json, again_markdown)] == ["HIT", "HIT"]
    assert again_json.headers["content-type"].startswith("application/json")
    assert again_markdown.headers["content-type"].startswith("text/markdown")
    assert again_markdown.content == own_markdown.content
    assert again_json.headers["etag"] != again_markdown.headers["etag"]


def test_if_none_match_through_nginx_answers_304(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    target = article(artist_id)
    with through_nginx(fast) as client:
        early_in_a_second()
        etag = client.get(target).headers["etag"]
        before = asked(fast, target)
        not_modified = client.get(target, headers={"If-None-Match": etag})
        modified = client.get(target, headers={"If-None-Match": '"something-else"'})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag and cache_status(not_modified) == "HIT"
    assert modified.status_code == 200 and cache_status(modified) == "HIT"
    assert asked(fast, target) == before  # both answered by nginx


def test_the_artist_page_and_record_are_micro_cached(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    page, record = f"/artists/{artist_id}", f"{ARTISTS}/{artist_id}"
    with through_nginx(fast) as client:
        early_in_a_second()
        pages = [client.get(page) for _ in range(3)]
        records = [client.get(record) for _ in range(3)]
    for responses in (pages, records):
        assert [cache_status(r) for r in responses] == ["MISS", "HIT", "HIT"]
        assert all(r.status_code == 200 and r.content == responses[0].content for r in responses)
    assert pages[0].headers["content-type"].startswith("text/html")
    assert (asked(fast, page), asked(fast, record)) == (1, 1)


def test_a_cold_key_asked_by_many_at_once_reaches_the_app_once_or_so(fast: Cached) -> None:
    """proxy_cache_lock: the first asks the app, the others wait for its answer (at most 200 ms)."""
    artist_id = with_portrait(fast)
    target, count = article(artist_id), 20
    with direct(fast) as app:
        assert app.get(target).status_code == 200  # the app's own cache is warm: its answer is quick
    (answers,) = burst(fast, [target], count, lambda: early_in_a_second(0.3))
    kinds = [kind for _, kind in answers]
    assert all(status == 200 for status, _ in answers), answers
    # Only a wait beyond the lock's 200 ms (a very slow answer) would let a waiter ask the app itself.
    assert asked(fast, target) <= 3, kinds
    assert kinds.count("MISS") <= 3 and set(kinds) <= {"MISS", "HIT"}, kinds


def test_an_expired_list_is_renewed_once_while_the_others_are_served_the_old_entry(fast: Cached) -> None:
    """The home page and the catalog serve an expired entry while one background request renews it
    (proxy_cache_use_stale updating, proxy_cache_background_update): a burst reaches the app once."""
    word = f"herd{uuid.uuid4().hex[:8]}"
    with direct(fast) as app:
        assert app.post(ARTISTS, json={"name": f"{word} one"}, headers=AUTH).status_code == 201
    targets, count = [f"{ARTISTS}?q={word}", f"/?q={word}"], 10
    early_in_a_second(0.8)
    with through_nginx(fast) as client:
        assert [cache_status(client.get(target)) for target in targets] == ["MISS", "MISS"]
    assert [asked(fast, target) for target in targets] == [1, 1]

    def next_second() -> None:  # the entries have expired
        time.sleep(1.0 - time.time() % 1 + 0.05)

    for target, answers in zip(targets, burst(fast, targets, count, next_second), strict=True):
        kinds = [kind for _, kind in answers]
        assert all(status == 200 for status, _ in answers), answers
        assert kinds.count("STALE") == 1 and set(kinds) <= {"STALE", "UPDATING", "HIT"}, kinds
        # the background renewal (a revalidation, which the app answers with a 304) and nothing else
        assert asked_soon(fast, target, 2) == 2, kinds


def burst(
    behind: BehindNginx, targets: list[str], count: int, when: Callable[[], None]
) -> list[list[tuple[int, str | None]]]:
    """`count` requests for each of `targets`, each from its own connection, all sent at once once `when()`
    returned."""
    clients = [through_nginx(behind) for _ in range(count * len(targets))]
    start = threading.Barrier(len(clients) + 1)

    def one(client: httpx.Client, target: str) -> tuple[int, str | None]:
        start.wait()
        response = client.get(target)
        return response.status_code, cache_status(response)

    try:
        for client in clients:
            assert client.get("/health").status_code == 200  # connected before the burst
        with ThreadPoolExecutor(len(clients)) as pool:
            futures = [
                pool.submit(one, client, targets[i % len(targets)]) for i, client in enumerate(clients)
            ]
            when()
            start.wait()
            answers = [future.result() for future in futures]
        return [answers[i :: len(targets)] for i in range(len(targets))]
    finally:
        for client in clients:
            client.close()


# --- never cached ---------------------------------------------------------------------------------------


def test_a_request_with_credentials_is_neither_served_nor_stored(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    target = article(artist_id)
    with through_nginx(fast) as client:
        early_in_a_second()
        authorized = [client.get(target, headers=AUTH) for _ in range(2)]
        anonymous = client.get(target)
        with_credentials_again = client.get(target, headers=AUTH)
    assert [cache_status(r) for r in authorized] == ["BYPASS", "BYPASS"]
    assert cache_status(anonymous) == "MISS"  # the authorized answers were not stored
    assert cache_status(with_credentials_again) == "BYPASS"  # nor is an entry served to credentials
    assert asked(fast, target) == 4


def test_a_post_is_never_answered_from_the_cache(fast: Cached) -> None:
    artist_id = with_portrait(fast)
    target = article(artist_id)
    with through_nginx(fast) as client:
        early_in_a_second()
        assert cache_status(client.get(target)) == "MISS"
        posts = [client.post(target, headers=AUTH) for _ in range(2)]  # stored already: answers it
    assert all(r.status_code == 200 and cache_status(r) != "HIT" for r in posts), posts
    assert asked(fast, target, "POST") == 2


def test_errors_are_never_cached(fast: Cached) -> None:
    missing = f"{ARTISTS}/987654321"
    no_portrait = article(new_artist(fast))
    with through_nginx(fast) as client:
        early_in_a_second()
        for target in (missing, no_portrait, "/artists/987654321"):
            responses = [client.get(target) for _ in range(2)]
            assert [r.status_code for r in responses] == [404, 404], target
            assert [cache_status(r) for r in responses] == ["MISS", "MISS"], target
            assert asked(fast, target) == 2, target


def test_an_unmarked_answer_is_never_cached(fast: Cached) -> None:
    """A job's status (no cache in its location), and a page while its artist's portrait is being written
    (a cached location, but the app does not mark it: X-Accel-Expires absent)."""
    # A long portrait takes the fast demo writer about 0.3 s: on a loaded machine it may end before its
    # pages are read, which would prove nothing; then again with another artist.
    for _attempt in range(5):
        artist_id = new_artist(fast)
        page = f"/artists/{artist_id}?length=long"
        with through_nginx(fast) as client, direct(fast) as app:
            early_in_a_second()
            job = client.post(f"{ARTISTS}/{artist_id}/article/jobs?length=long", headers=AUTH)
            assert job.status_code == 202, job.text
            job_url = job.json()["status_url"]
            pages = [client.get(page) for _ in range(2)]
            statuses = [client.get(job_url) for _ in range(2)]
            running = app.get(job_url).json()["status"] == "running"  # the pages were of a running job
            own_page = app.get(page)
        if running:
            break
    else:
        pytest.fail("every job ended before its pages were read")
    assert "x-accel-expires" not in own_page.headers
    assert [cache_status(r) for r in pages] == ["MISS", "MISS"]
    assert asked(fast, page) == 2
    assert [cache_status(r) for r in statuses] == [None, None]
    assert asked(fast, job_url) == 2
    with through_nginx(fast) as client:
        assert client.delete(job_url, headers=AUTH).status_code == 204  # not worth waiting for


def test_a_stream_is_never_cached_live_or_replayed(fast: Cached) -> None:
    artist_id = new_artist(fast)
    target = f"{ARTISTS}/{artist_id}/article/stream?length=short"
    with through_nginx(fast) as first, through_nginx(fast) as second:
        with first.stream("GET", target) as live:
            assert cache_status(live) is None
            live_events = read_stream(live)
        replays = []
        for client in (first, second):
            with client.stream("GET", target) as replay:
                assert cache_status(replay) is None
                replays.append(read_stream(replay))
    assert live_events[0][0] == "metadata" and live_events[-1][0] == "done"
    assert json_of(live_events[0][1])["job_id"] is not None  # written live
    for events in replays:
        assert events[0][0] == "metadata" and json_of(events[0][1])["job_id"] is None  # a replay
        assert events[-1][0] == "done"
        assert "".join(data for event, data in events if event == "text")  # the whole portrait, each
    assert replays[0] == replays[1]
    assert asked(fast, target) == 3


def json_of(data: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


# --- a write is seen within 1 s -------------------------------------------------------------------------


@dataclass
class Seen:
    started: float  # monotonic
    status: int
    cache: str | None
    version: str  # OLD or NEW


class Watcher:
    """Asks nginx for `target` every POLL seconds from before a write until well after it, and remembers
    what each answer showed (`classify` says OLD or NEW). The new version must be all it shows for requests
    made `within` seconds after the write returned (`written`)."""

    def __init__(
        self,
        behind: BehindNginx,
        target: str,
        classify: Callable[[httpx.Response], str],
        *,
        within: float = VISIBLE_WITHIN,
        change: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.classify = classify
        self.within = within
        self.change = change or {}  # what the write sends, for the one that knows
        self.client = through_nginx(behind)
        self.seen: list[Seen] = []
        self.written: float | None = None  # monotonic: when the write's answer (or `done`) arrived
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            response = self.client.get(self.target)
            self.seen.append(
                Seen(started, response.status_code, cache_status(response), self.classify(response))
            )
            time.sleep(max(0.0, POLL - (time.monotonic() - started)))

    def __enter__(self) -> Watcher:
        self.thread.start()
        deadline = time.monotonic() + 5
        while len(self.seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.seen and all(s.version == OLD for s in self.seen), (self.target, self.seen)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.client.close()

    def wait_until_seen(self, within: float, linger: float = 0.25) -> None:
        """Until the new version was seen and `within` + `linger` seconds passed since the write."""
        assert self.written is not None
        deadline = time.monotonic() + within + 3
        while time.monotonic() < deadline:
            if time.monotonic() > self.written + within + linger and self.seen[-1].version == NEW:
                return
            time.sleep(POLL)

    def check(self) -> bool:
        """No answer to a request made `within` s after the write showed the old version, and once the new
        one was seen the old never came back; True if an old one came from nginx's cache after the write
        (the cache was in play)."""
        assert self.written is not None
        after = [s for s in self.seen if s.started >= self.written]
        late = [s for s in after if s.started - self.written > self.within and s.version == OLD]
        offsets = [(round(s.started - self.written, 3), s.cache, s.version) for s in after]
        assert after and after[-1].version == NEW, (self.target, offsets)
        assert not late, (self.target, offsets)
        first_new = next(i for i, s in enumerate(after) if s.version == NEW)
        assert all(s.version == NEW for s in after[first_new:]), (self.target, offsets)
        return any(s.version == OLD and s.cache == "HIT" for s in after)


def shows(text: str) -> Callable[[httpx.Response], str]:
    return lambda response: NEW if text in response.text else OLD


def gone(response: httpx.Response) -> str:
    return NEW if response.status_code == 404 else OLD


def field_is(name: str, value: object) -> Callable[[httpx.Response], str]:
    return lambda response: NEW if response.json().get(name) == value else OLD


@contextmanager
def watching(watchers: list[Watcher]) -> Iterator[None]:
    """All `watchers` running for the block."""
    with ExitStack() as stack:
        for watcher in watchers:
            stack.enter_context(watcher)
        yield


def at_fraction(base: float, fraction: float) -> None:
    """Sleep until wall-clock second `base` + `fraction`."""
    time.sleep(max(0.0, base + fraction - time.time()))


FRACTIONS = (0.1, 0.5, 0.9)  # where in its second each write lands: nginx's entry then has 0.9 .. 0.1 s left


def each_fraction(
    prepare: Callable[[], list[Watcher]], write: Callable[[list[Watcher]], None], within: float
) -> None:
    """For each fraction at once, on its own artist: `prepare()` it (the watchers it returns start polling),
    then `write(watchers)` at that fraction of the same second (`write` tells the watchers when it returned)
    and check what they saw. At least one must have seen nginx serve the old version from its cache after
    the write (else the test proved nothing about the cache)."""
    with ThreadPoolExecutor(len(FRACTIONS)) as pool:
        prepared = list(pool.map(lambda _: prepare(), FRACTIONS))
        with watching([watcher for watchers in prepared for watcher in watchers]):
            base = float(int(time.time()) + 1)

            def one(fraction: float, watchers: list[Watcher]) -> None:
                at_fraction(base, fraction)
                write(watchers)
                for watcher in watchers:
                    watcher.wait_until_seen(within)

            list(pool.map(one, FRACTIONS, prepared))
    cached = [watcher.check() for watchers in prepared for watcher in watchers]
    assert any(cached), "nginx never served the old version after a write: the cache was not in play"


def test_an_artists_update_is_seen_through_nginx_within_1_s(fast: Cached) -> None:
    def prepare() -> list[Watcher]:
        word = f"upd{uuid.uuid4().hex[:8]}"
        artist_id = with_portrait(fast, f"{word} before")
        after = f"{word} after"
        return [
            Watcher(fast, f"{ARTISTS}/{artist_id}", field_is("name", after), change={"name": after}),
            Watcher(fast, article(artist_id), field_is("stale", True)),  # written from older facts now
            Watcher(fast, f"/artists/{artist_id}", shows(after)),
            Watcher(fast, f"{ARTISTS}?q={word}", shows(after), within=LISTS_VISIBLE_WITHIN),
            Watcher(fast, f"/?q={word}", shows(after), within=LISTS_VISIBLE_WITHIN),
        ]

    def write(watchers: list[Watcher]) -> None:
        with direct(fast) as app:
            changed = app.patch(watchers[0].target, json=watchers[0].change, headers=AUTH)
            assert changed.status_code == 200, changed.text
        wrote(watchers)

    each_fraction(prepare, write, LISTS_VISIBLE_WITHIN)


def test_a_new_version_is_seen_through_nginx_within_1_s_of_its_done(fast: Cached) -> None:
    def prepare() -> list[Watcher]:
        artist_id = with_portrait(fast)
        with direct(fast) as app:
            version = app.get(article(artist_id)).json()["version"]
        return [
            Watcher(fast, article(artist_id), field_is("version", version + 1)),
            Watcher(fast, f"{ARTISTS}/{artist_id}/article/versions", shows(f'"version":{version + 1}')),
        ]

    def write(watchers: list[Watcher]) -> None:
        jobs = watchers[0].target.replace("/article?", "/article/jobs?") + "&refresh=true"
        with through_nginx(fast) as client:
            job = client.post(jobs, headers=AUTH)
            assert job.status_code == 202, job.text
            with client.stream("GET", job.json()["stream_url"]) as stream:
                events = (sse.event for sse in EventSource(stream).iter_sse())
                assert next(e for e in events if e in ("done", "error")) == "done"
                wrote(watchers)

    each_fraction(prepare, write, VISIBLE_WITHIN)


def test_a_deleted_artist_is_gone_through_nginx_within_1_s(fast: Cached) -> None:
    def prepare() -> list[Watcher]:
        word = f"del{uuid.uuid4().hex[:8]}"
        artist_id = with_portrait(fast, f"{word} here")
        return [
            Watcher(fast, f"{ARTISTS}/{artist_id}", gone),
            Watcher(fast, article(artist_id), gone),
            Watcher(fast, f"/artists/{artist_id}", gone),
            Watcher(
                fast,
                f"{ARTISTS}?q={word}",
                lambda r: OLD if word in r.text else NEW,
                within=LISTS_VISIBLE_WITHIN,
            ),
        ]

    def write(watchers: list[Watcher]) -> None:
        with direct(fast) as app:
            assert app.delete(watchers[0].target, headers=AUTH).status_code == 204
        wrote(watchers)

    each_fraction(prepare, write, LISTS_VISIBLE_WITHIN)


def wrote(watchers: list[Watcher]) -> None:
    now = time.monotonic()
    for watcher in watchers:
        watcher.written = now
