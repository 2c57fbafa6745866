"""Reads over real HTTP with the read cache in front: every stored representation has a strong ETag, answers
HEAD and If-None-Match, is served from the cache when hot, and is never stale after the write that changed
it has returned (a new version: from its `done`), on the process that wrote it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from app.articles.service import ArticleDraft
from app.main import AppState
from tests.fakes.upstream import Reply, chunk, completion, event, hang
from tests.support import ARTISTS, AUTH, LiveServer, add_artist

MARKDOWN = "# Nina Simone\n\nThe first version.\n"


def store(server: LiveServer, artist_id: int, markdown: str = MARKDOWN) -> int:
    """A finished portrait stored by the server's own service, as a job of that process stores one."""

    async def go(state: AppState) -> int:
        draft = ArticleDraft(
            artist_id=artist_id,
            language="en",
            length="long",
            markdown=markdown,
            model="m",
            writer="upstream",
            finish_reason="stop",
            usage=None,
            duration_ms=10,
            ttft_ms=1,
            job_id=None,
        )
        return (await state["articles"].store(draft)).version

    return server.call(go)


def hits(server: LiveServer) -> int:
    async def go(state: AppState) -> int:
        return state["reads"].hits

    return server.call(go)


def representations(artist_id: int) -> list[tuple[str, dict[str, str]]]:
    article = f"{ARTISTS}/{artist_id}/article"
    return [
        (f"{article}?length=long", {}),
        (f"{article}?length=long", {"Accept": "text/markdown"}),
        (f"{article}/versions", {}),
        (f"{article}/versions/1?length=long", {}),
        (f"{ARTISTS}/{artist_id}", {}),
        (f"{ARTISTS}?per_page=20", {}),
        ("/", {}),
        (f"/artists/{artist_id}", {}),
    ]


REPRESENTATION_NAMES = [
    "article",
    "article-markdown",
    "versions",
    "version",
    "artist",
    "catalog",
    "home",
    "page",
]


@pytest.mark.parametrize("index", range(len(REPRESENTATION_NAMES)), ids=REPRESENTATION_NAMES)
def test_stored_representation_then_strong_etag_304_head_and_hot_from_cache(
    server: LiveServer, index: int
) -> None:
    artist_id = add_artist(server)
    store(server, artist_id)
    path, headers = representations(artist_id)[index]
    first = server.client.get(path, headers=headers)
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["cache-control"] == "no-cache"
    expires = first.headers["x-accel-expires"]
    assert expires.startswith("@") and abs(int(expires[1:]) - time.time()) <= 2
    assert int(first.headers["content-length"]) == len(first.content)

    before = hits(server)
    again = server.client.get(path, headers=headers)
    assert again.content == first.content and again.headers["etag"] == etag
    assert hits(server) == before + 1  # answered from the cache: no route, no query

    head = server.client.head(path, headers=headers)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag
    assert head.headers["content-length"] == first.headers["content-length"]

    for validator in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        conditional = server.client.get(path, headers={**headers, "If-None-Match": validator})
        assert conditional.status_code == 304 and conditional.content == b""
        assert conditional.headers["etag"] == etag
    assert server.client.get(path, headers={**headers, "If-None-Match": '"other"'}).status_code == 200


def test_pages_then_kept_with_their_security_headers(server: LiveServer) -> None:
    artist_id = add_artist(server)
    store(server, artist_id)
    server.client.get(f"/artists/{artist_id}")
    hot = server.client.get(f"/artists/{artist_id}")
    assert "script-src 'self'" in hot.headers["content-security-policy"]
    assert hot.headers["content-type"].startswith("text/html")


def test_new_version_then_every_read_shows_it_at_once(server: LiveServer) -> None:
    artist_id = add_artist(server)
    store(server, artist_id)
    paths = [path for path, _ in representations(artist_id)]
    before = {path: server.client.get(path).content for path in paths}
    store(server, artist_id, "# Nina Simone\n\nThe second version.\n")
    article = server.client.get(f"{ARTISTS}/{artist_id}/article?length=long").json()
    assert article["version"] == 2 and "second version" in article["markdown"]
    assert server.client.get(f"{ARTISTS}/{artist_id}").json()["article"]["version"] == 2
    assert "second version" in server.client.get(f"/artists/{artist_id}").text
    listed = server.client.get(f"{ARTISTS}?per_page=20").json()["items"]
    assert [item["article"]["version"] for item in listed if item["id"] == artist_id] == [2]
    versions = server.client.get(f"{ARTISTS}/{artist_id}/article/versions").json()["items"]
    assert [item["version"] for item in versions] == [2, 1]
    # the old version itself did not change: the same bytes, still answered
    version_one = f"{ARTISTS}/{artist_id}/article/versions/1?length=long"
    assert server.client.get(version_one).content == before[version_one]


def test_new_version_through_a_stream_then_visible_when_done_is_read(
    app_server: LiveServer, upstream: Any
) -> None:
    artist_id = add_artist(app_server)
    upstream.script(completion(["# One\n\n", "First."]), completion(["# Two\n\n", "Second."]))
    article = f"{ARTISTS}/{artist_id}/article"
    stream = f"{article}/stream?length=short"
    with app_server.client.stream("GET", stream) as first:
        assert '"type":"done"' in first.read().decode()
    assert app_server.client.get(f"{article}?length=short").json()["version"] == 1
    replay = app_server.client.get(stream).text
    assert '"cached":true' in replay and "First." in replay
    with app_server.client.stream("GET", f"{stream}&refresh=true", headers=AUTH) as second:
        for line in second.iter_lines():
            if line.startswith("data:") and json.loads(line[5:])["type"] == "done":
                # the moment `done` is read, every read shows the new version
                assert app_server.client.get(f"{article}?length=short").json()["version"] == 2
                assert "Second." in app_server.client.get(stream).text
                assert "Second." in app_server.client.get(f"/artists/{artist_id}?length=short").text
                break
        else:
            pytest.fail("the stream ended without done")


def test_replay_then_kept_whole_and_a_resume_is_not_served_the_whole(
    app_server: LiveServer, upstream: Any
) -> None:
    artist_id = add_artist(app_server)
    upstream.script(completion(["# One\n\n", "First.\n\n", "More."]))
    stream = f"{ARTISTS}/{artist_id}/article/stream?length=short"
    with app_server.client.stream("GET", stream) as live:
        live.read()
    whole = app_server.client.get(stream)
    before = hits(app_server)
    assert app_server.client.get(stream).content == whole.content
    assert hits(app_server) == before + 1
    ids = [line[4:] for line in whole.text.splitlines() if line.startswith("id: ")]
    resumed = app_server.client.get(stream, headers={"Last-Event-ID": ids[0]})
    assert resumed.status_code == 200 and resumed.content != whole.content
    assert [line[4:] for line in resumed.text.splitlines() if line.startswith("id: ")] == ids[1:]


def test_artist_update_then_every_read_shows_it_at_once(server: LiveServer) -> None:
    artist_id = add_artist(server, name="Nina Simone")
    store(server, artist_id)
    paths = [path for path, _ in representations(artist_id)]
    for path in paths:
        server.client.get(path)
    patched = server.client.patch(f"{ARTISTS}/{artist_id}", json={"name": "Eunice Waymon"}, headers=AUTH)
    assert patched.status_code == 200
    assert server.client.get(f"{ARTISTS}/{artist_id}").json()["name"] == "Eunice Waymon"
    assert server.client.get(f"{ARTISTS}/{artist_id}/article?length=long").json()["stale"] is True
    assert "Eunice Waymon" in server.client.get(f"/artists/{artist_id}").text
    assert "Eunice Waymon" in server.client.get("/").text
    names = [item["name"] for item in server.client.get(f"{ARTISTS}?per_page=20").json()["items"]]
    assert "Eunice Waymon" in names and "Nina Simone" not in names


def test_artist_delete_then_every_read_is_gone_at_once(server: LiveServer) -> None:
    artist_id = add_artist(server, name="Nina Simone")
    store(server, artist_id)
    paths = [path for path, _ in representations(artist_id)]
    for path in paths:
        assert server.client.get(path).status_code == 200
    assert server.client.delete(f"{ARTISTS}/{artist_id}", headers=AUTH).status_code == 204
    for path in paths[:5] + paths[7:]:
        assert server.client.get(path).status_code == 404, path
    assert "Nina Simone" not in server.client.get("/").text
    assert server.client.get(f"{ARTISTS}?per_page=20").json()["total"] == 0


def test_artist_created_then_listed_at_once(server: LiveServer) -> None:
    add_artist(server, name="Nina Simone")
    assert server.client.get(f"{ARTISTS}?per_page=20").json()["total"] == 1
    server.client.get("/")
    add_artist(server, name="Miriam Makeba")
    assert server.client.get(f"{ARTISTS}?per_page=20").json()["total"] == 2
    assert "Miriam Makeba" in server.client.get("/").text


def test_job_started_then_the_cached_page_shows_it(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(Reply(steps=[event(chunk("", role="assistant")), event(chunk("# Slow\n\n")), hang()]))
    artist_id = add_artist(app_server)
    page = f"/artists/{artist_id}?length=short"
    app_server.client.get(page)
    assert "data-running-job" not in app_server.client.get(page).text  # hot, no job
    started = app_server.client.post(f"{ARTISTS}/{artist_id}/article/jobs?length=short", headers=AUTH)
    assert started.status_code == 202
    job_id = started.json()["job_id"]
    assert job_id in app_server.client.get(page).text
    app_server.client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH)


def test_authorization_then_never_answered_from_the_cache(server: LiveServer) -> None:
    artist_id = add_artist(server, name="Nina Simone", country="USA")
    path = f"{ARTISTS}/{artist_id}"
    assert server.client.get(path).json()["country"] == "USA"
    # changed behind the app's back (as another process without a broadcast would): the anonymous read is
    # served from the cache for at most its TTL; one with a token always reads the database
    server.sqlite_execute("UPDATE artists SET country = 'France' WHERE id = ?", artist_id)
    assert server.client.get(path).json()["country"] == "USA"
    assert server.client.get(path, headers=AUTH).json()["country"] == "France"


def test_entry_past_its_ttl_then_read_again(make_server: Any) -> None:
    with make_server(read_cache_ttl=0.2) as server:
        artist_id = add_artist(server, name="Nina Simone", country="USA")
        path = f"{ARTISTS}/{artist_id}"
        server.client.get(path)
        server.sqlite_execute("UPDATE artists SET country = 'France' WHERE id = ?", artist_id)
        deadline = time.monotonic() + 5
        while server.client.get(path).json()["country"] != "France":
            assert time.monotonic() < deadline, "the entry outlived its TTL"
            time.sleep(0.05)


def test_cache_bound_zero_then_nothing_kept_and_etags_still_work(make_server: Any) -> None:
    with make_server(read_cache_mb=0) as server:
        artist_id = add_artist(server)
        store(server, artist_id)
        path = f"{ARTISTS}/{artist_id}/article?length=long"
        first = server.client.get(path)
        server.client.get(path)
        assert hits(server) == 0
        assert server.client.get(path, headers={"If-None-Match": first.headers["etag"]}).status_code == 304


def test_errors_then_not_kept(server: LiveServer) -> None:
    path = f"{ARTISTS}/999/article?length=long"
    assert server.client.get(path).status_code == 404
    artist_id = add_artist(server)
    assert artist_id and server.client.get(f"{ARTISTS}/{artist_id}/article?length=long").status_code == 404
    store(server, artist_id)
    assert server.client.get(f"{ARTISTS}/{artist_id}/article?length=long").status_code == 200
    assert "x-accel-expires" not in server.client.get(path).headers
