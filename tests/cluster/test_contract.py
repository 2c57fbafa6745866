"""The contract's routes and behaviours against two processes sharing PostgreSQL and Redis, every request
sent to the next process in turn (the round robin of tests/cluster/support.py): whatever a test does, its
requests land on A and B alternately, as behind a load balancer. Portraits come from each process's own
embedded demo writer (no ATELIER_LLM_BASE_URL), a short one in about 1.5 s.

Each test creates the artists it writes about, so the tests share one cluster and stay independent.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser

from tests.cluster.support import (
    AUTH,
    Cluster,
    Reader,
    assert_seamless,
    new_artist,
    seq,
    served_by,
    stream_of,
    stream_path,
    terminal,
    unique,
)
from tests.support import ARTISTS, assert_error, joined_text, wait_until

# A write is seen on every process within 1 s (the contract's "Reads"); measured from the write's answer, plus
# what one poll of a loaded 2-core machine may take.
VISIBLE_WITHIN = 1.0 + 0.1
SHORT = {"length": "short"}
# A cancel asked on one process reaches the job on the other at once (a message) or at its next scan at worst.
CANCELLED_WITHIN = 1.5


def article_path(artist_id: int) -> str:
    return f"{ARTISTS}/{artist_id}/article"


def stored_article(client: httpx.Client, artist_id: int, length: str = "short") -> dict[str, Any]:
    response = client.get(article_path(artist_id), params={"length": length})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read_stream(client: httpx.Client, artist_id: int, **params: str) -> Reader:
    reader = Reader(client, stream_path(artist_id), params={**SHORT, **params})
    reader.rest()
    reader.close()
    return reader


def job_status(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_status(
    client: httpx.Client, job_id: str, statuses: set[str], timeout: float = 15
) -> dict[str, Any]:
    """Poll the job (each poll on the next process) until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while (status := job_status(client, job_id))["status"] not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} not {statuses} within {timeout} s: {status}"
        time.sleep(0.02)
    return status


@pytest.fixture
def client(demo_cluster: Cluster) -> httpx.Client:
    return demo_cluster.client


@pytest.fixture(scope="module")
def portrait(demo_cluster_module: Cluster) -> dict[str, Any]:
    """One artist with one stored short portrait (written by the synchronous route), for the read tests;
    none of them changes it."""
    client = demo_cluster_module.client
    artist = new_artist(client, "Read Only")
    response = client.post(article_path(artist["id"]), params=SHORT)
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()
    return {"artist": artist, "article": article}


# --- running it -----------------------------------------------------------------------------------------------


def test_migrations_run_by_two_processes_at_once_both_succeed(demo_cluster: Cluster) -> None:
    assert demo_cluster.migration_failures == [], "\n".join(demo_cluster.migration_failures)
    assert len(demo_cluster.sql("SELECT version_num FROM alembic_version")) == 1


def test_health_and_ready_on_both_processes(demo_cluster: Cluster) -> None:
    for node in demo_cluster.nodes:
        health = node.client.get("/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        ready = node.client.get("/ready")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["redis"] == "ok"
        assert "broker" in body["checks"] and "breaker" in body["checks"]


# --- the catalog ------------------------------------------------------------------------------------------------


def test_search_finds_the_seeded_catalog_on_either_process(client: httpx.Client) -> None:
    for _ in range(2):
        page = client.get(ARTISTS, params={"q": "edith"})
        assert page.status_code == 200
        body = page.json()
        assert [item["name"] for item in body["items"]] == ["Édith Piaf"]
        assert body["total"] == 1 and body["page"] == 1
    by_genre = client.get(ARTISTS, params={"genre": "chanson", "per_page": 100}).json()
    assert "Édith Piaf" in [item["name"] for item in by_genre["items"]]
    first = client.get(ARTISTS, params={"per_page": 2, "page": 1}).json()
    second = client.get(ARTISTS, params={"per_page": 2, "page": 2}).json()
    assert len(first["items"]) == 2 and first["total"] >= 4
    assert not {item["id"] for item in first["items"]} & {item["id"] for item in second["items"]}


def test_an_artist_created_updated_and_deleted_on_one_process_is_seen_so_on_the_other(
    client: httpx.Client,
) -> None:
    created = client.post(ARTISTS, json={"name": unique("Zoë Keating"), "genres": ["cello"]}, headers=AUTH)
    assert created.status_code == 201, created.text
    artist = created.json()
    path = f"{ARTISTS}/{artist['id']}"
    got = client.get(path)
    assert served_by(got) != served_by(created)
    assert got.status_code == 200 and got.json()["name"] == artist["name"]
    assert got.json()["article"] is None

    patched = client.patch(path, json={"country": "Canada"}, headers=AUTH)
    assert patched.status_code == 200 and patched.json()["country"] == "Canada"
    answered = time.monotonic()
    wait_until(lambda: all(client.get(path).json()["country"] == "Canada" for _ in range(2)), 2, "the update")
    assert time.monotonic() - answered < VISIBLE_WITHIN

    deleted = client.delete(path, headers=AUTH)
    assert deleted.status_code == 204
    answered = time.monotonic()
    wait_until(lambda: all(client.get(path).status_code == 404 for _ in range(2)), 2, "the delete")
    assert time.monotonic() - answered < VISIBLE_WITHIN
    assert_error(client.get(path), 404, "artist_not_found")


def test_a_name_taken_on_one_process_is_refused_on_the_other(client: httpx.Client) -> None:
    name = unique("Björk")
    first = client.post(ARTISTS, json={"name": name}, headers=AUTH)
    assert first.status_code == 201
    second = client.post(ARTISTS, json={"name": name.upper().replace("Ö", "O")}, headers=AUTH)
    assert served_by(second) != served_by(first)
    assert_error(second, 409, "conflict")


# --- errors ---------------------------------------------------------------------------------------------------


def test_writes_without_a_valid_token_are_401_on_both_processes(client: httpx.Client) -> None:
    artist = new_artist(client)
    path = f"{ARTISTS}/{artist['id']}"
    for _ in range(2):
        assert_error(client.post(ARTISTS, json={"name": unique("Anon")}), 401, "unauthorized")
        wrong = {"Authorization": "Bearer not-the-token"}
        assert_error(client.patch(path, json={"notes": "x"}, headers=wrong), 401, "unauthorized")
        assert_error(client.delete(path), 401, "unauthorized")
        assert_error(client.get(stream_path(artist["id"]), params={"refresh": "true"}), 401, "unauthorized")
    assert client.get(path).status_code == 200


def test_errors_are_json_with_their_codes(client: httpx.Client) -> None:
    artist = new_artist(client)
    assert_error(client.get(f"{ARTISTS}/999999999"), 404, "artist_not_found")
    assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert_error(client.get("/api/v1/jobs/0123456789abcdef"), 404, "job_not_found")
    assert_error(client.get(article_path(artist["id"])), 404, "article_not_found")
    assert_error(client.get(stream_path(999_999_999)), 404, "artist_not_found")

    refused = assert_error(client.put(f"{ARTISTS}/{artist['id']}", json={}), 405, "method_not_allowed")
    assert refused["message"]
    allow = client.put(f"{ARTISTS}/{artist['id']}", json={}).headers["allow"]
    assert {"GET", "PATCH", "DELETE"} <= {method.strip() for method in allow.split(",")}
    assert client.head(stream_path(artist["id"])).status_code == 405  # a HEAD never starts a generation

    invalid = assert_error(client.get(ARTISTS, params={"per_page": 101}), 422, "validation_error")
    assert [field["loc"] for field in invalid["fields"]] == ["query.per_page"]
    invalid = assert_error(
        client.get(stream_path(artist["id"]), params={"length": "epic"}), 422, "validation_error"
    )
    assert invalid["fields"][0]["loc"] == "query.length"
    invalid = assert_error(client.post(ARTISTS, json={"name": ""}, headers=AUTH), 422, "validation_error")
    assert invalid["fields"][0]["loc"] == "body.name"

    json_type = {"Content-Type": "application/json", **AUTH}
    assert_error(client.post(ARTISTS, content=b"{not json", headers=json_type), 400, "invalid_json")
    too_large = b'{"name": "' + b"x" * 70_000 + b'"}'
    assert_error(client.post(ARTISTS, content=too_large, headers=json_type), 413, "payload_too_large")


# --- reads -----------------------------------------------------------------------------------------------------


def test_the_stored_article_json_and_markdown_with_etags_that_hold_across_processes(
    client: httpx.Client, portrait: dict[str, Any]
) -> None:
    artist_id = portrait["artist"]["id"]
    path = article_path(artist_id)
    as_json = client.get(path, params=SHORT)
    assert as_json.status_code == 200
    article = as_json.json()
    assert article["version"] == 1 and article["length"] == "short" and article["language"] == "en"
    assert article["markdown"] == portrait["article"]["markdown"] and article["words"] > 300
    assert article["writer"] == "demo" and article["stale"] is False and article["html"].startswith("<h1>")
    assert "accept" in as_json.headers["vary"].lower()
    etag = as_json.headers["etag"]

    again = client.get(path, params=SHORT, headers={"If-None-Match": etag})
    assert served_by(again) != served_by(as_json)
    assert again.status_code == 304, "the same bytes, the same ETag, on either process"

    markdown = client.get(path, params=SHORT, headers={"Accept": "text/markdown"})
    assert markdown.status_code == 200 and markdown.headers["content-type"].startswith("text/markdown")
    assert markdown.text == article["markdown"]
    assert markdown.headers["etag"] != etag
    revalidated = client.get(
        path, params=SHORT, headers={"Accept": "text/markdown", "If-None-Match": markdown.headers["etag"]}
    )
    assert revalidated.status_code == 304
    head = client.head(path, params=SHORT)
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    assert_error(client.get(path, params={"length": "medium"}), 404, "article_not_found")


def test_versions_on_either_process(client: httpx.Client, portrait: dict[str, Any]) -> None:
    artist_id = portrait["artist"]["id"]
    for _ in range(2):
        listed = client.get(f"{article_path(artist_id)}/versions")
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert [(item["version"], item["length"]) for item in items] == [(1, "short")]
        one = client.get(f"{article_path(artist_id)}/versions/1", params=SHORT)
        assert one.status_code == 200 and one.json()["markdown"] == portrait["article"]["markdown"]
    assert_error(client.get(f"{article_path(artist_id)}/versions/2", params=SHORT), 404, "article_not_found")


def test_the_pages_on_either_process(client: httpx.Client, portrait: dict[str, Any]) -> None:
    artist = portrait["artist"]
    title = portrait["article"]["markdown"].splitlines()[0].removeprefix("# ")
    for _ in range(2):
        home = client.get("/", params={"q": artist["name"]})
        assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")
        assert artist["name"] in home.text
        page = client.get(f"/artists/{artist['id']}", params=SHORT)
        assert page.status_code == 200
        tree = LexborHTMLParser(page.text)
        assert artist["name"] in tree.text()
        body = tree.css_first("#portrait .portrait-body")
        if body is not None:  # the page shows the default length (long): this artist has a short one only
            assert title in body.text()
    assert client.get("/artists/999999999").status_code == 404


# --- the stream ---------------------------------------------------------------------------------------------------


def test_a_fresh_stream_then_the_article_stored_and_served_by_the_other_process(client: httpx.Client) -> None:
    artist = new_artist(client)
    with Reader(client, stream_path(artist["id"]), params=SHORT) as reader:
        assert reader.status == 200
        assert reader.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert reader.response.headers["cache-control"] == "no-cache"
        assert reader.response.headers["x-accel-buffering"] == "no"
        reader.rest()
    events = reader.events
    metadata = events[0].data
    assert metadata["type"] == "metadata" and metadata["cached"] is False and metadata["writer"] == "demo"
    assert metadata["artist"] == {"id": artist["id"], "name": artist["name"]}
    assert metadata["article_id"] is None and metadata["length"] == "short"
    job_id = metadata["job_id"]
    assert reader.broken is None
    done = events[-1].data
    assert done["type"] == "done" and done["version"] == 1 and done["finish_reason"] == "stop"
    assert done["continuations"] >= 1, (
        "the demo writer caps a call at 500 words: a short portrait is continued"
    )
    assert [event.data["reason"] for event in events if event.event == "continued"] == ["length"]

    stored = client.get(article_path(artist["id"]), params=SHORT)
    assert served_by(stored) != reader.node
    assert_seamless(events, job_id, stored.json()["markdown"])
    assert stored.json()["article_id"] == done["article_id"]


def test_a_replay_of_the_stored_article_resumes_on_the_other_process_then_204(
    client: httpx.Client, portrait: dict[str, Any]
) -> None:
    artist_id, article = portrait["artist"]["id"], portrait["article"]
    replay = read_stream(client, artist_id)
    events = replay.events
    assert events[0].data["cached"] is True and events[0].data["job_id"] is None
    assert events[0].data["article_id"] == article["article_id"]
    assert {stream_of(event) for event in events} == {f"replay-{article['article_id']}"}
    assert [seq(event) for event in events] == list(range(1, len(events) + 1))
    assert joined_text(events) == article["markdown"] and events[-1].event == "done"

    middle = events[len(events) // 2]
    with Reader(client, stream_path(artist_id), params=SHORT, last_event_id=middle.id) as resumed:
        assert resumed.node != replay.node
        rest = resumed.rest()
    assert [(event.id, event.data) for event in rest] == [
        (event.id, event.data) for event in events[len(events) // 2 + 1 :]
    ]
    for _ in range(2):
        at_end = client.get(stream_path(artist_id), params=SHORT, headers={"Last-Event-ID": events[-1].id})
        assert at_end.status_code == 204


def test_a_live_stream_resumed_on_the_other_process_with_last_event_id(
    demo_cluster: Cluster, client: httpx.Client
) -> None:
    artist = new_artist(client)
    with Reader(client, stream_path(artist["id"]), params=SHORT) as first:
        first.texts(3)
    job_id = first.job_id
    with Reader(client, stream_path(artist["id"]), params=SHORT, last_event_id=first.last_id) as second:
        assert second.node != first.node
        second.rest()
    assert seq(second.events[0]) > seq(first.events[-1])
    stored = stored_article(client, artist["id"])
    assert_seamless(first.events + second.events, job_id, stored["markdown"])
    for path in (stream_path(artist["id"]), f"/api/v1/jobs/{job_id}/stream"):
        for _ in range(2):  # past the end, on either process, on either stream route
            response = client.get(path, params=SHORT, headers={"Last-Event-ID": second.last_id})
            assert response.status_code == 204
    query = client.get(stream_path(artist["id"]), params={**SHORT, "last_event_id": second.last_id})
    assert query.status_code == 204
    assert len(demo_cluster.articles(artist["id"])) == 1


def test_readers_on_both_processes_join_one_job(demo_cluster: Cluster, client: httpx.Client) -> None:
    artist = new_artist(client)
    with (
        Reader(client, stream_path(artist["id"]), params=SHORT) as first,
        Reader(client, stream_path(artist["id"]), params=SHORT) as second,
    ):
        assert {first.node, second.node} == {"A", "B"}
        first.texts(1)
        second.texts(1)
        assert first.job_id == second.job_id
        first.rest()
        second.rest()
    stored = stored_article(client, artist["id"])
    assert_seamless(first.events, first.job_id, stored["markdown"])
    assert_seamless(second.events, first.job_id, stored["markdown"])
    assert [row[1] for row in demo_cluster.articles(artist["id"])] == [first.job_id]


def test_format_markdown_streams_the_bare_text(client: httpx.Client) -> None:
    artist = new_artist(client)
    with client.stream("GET", stream_path(artist["id"]), params={**SHORT, "format": "markdown"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        body = response.read().decode()
    assert body == stored_article(client, artist["id"])["markdown"]


def test_deleting_the_artist_on_one_process_cancels_its_job_streamed_from_the_other(
    demo_cluster: Cluster, client: httpx.Client
) -> None:
    artist = new_artist(client)
    with Reader(client, stream_path(artist["id"]), params={"length": "long"}) as reader:
        reader.texts(2)
        deleted = client.delete(f"{ARTISTS}/{artist['id']}", headers=AUTH)
        answered = time.monotonic()
        assert deleted.status_code == 204 and served_by(deleted) != reader.node
        reader.rest()
        ended_after = time.monotonic() - answered
    ends = terminal(reader.events)
    assert [(event.event, event.data["code"]) for event in ends] == [("error", "cancelled")]
    # cancelled, not left to write the rest of a long portrait (~7 s here) and refused at its store
    assert ended_after < CANCELLED_WITHIN, f"the job ended {ended_after:.1f} s after the delete"
    assert demo_cluster.articles(artist["id"]) == []


# --- jobs --------------------------------------------------------------------------------------------------------


def test_a_job_posted_polled_and_streamed_across_processes(
    demo_cluster: Cluster, client: httpx.Client
) -> None:
    artist = new_artist(client)
    posted = client.post(f"{article_path(artist['id'])}/jobs", params=SHORT)
    assert posted.status_code == 202, posted.text
    accepted = posted.json()
    job_id = accepted["job_id"]
    assert accepted["status_url"] == f"/api/v1/jobs/{job_id}"
    assert accepted["stream_url"] == f"/api/v1/jobs/{job_id}/stream"
    with Reader(client, accepted["stream_url"]) as reader:
        assert reader.node != served_by(posted)
        reader.rest()
    status = wait_for_status(client, job_id, {"done"})
    assert status["job_id"] == job_id and status["error"] is None and status["words"] > 300
    stored = stored_article(client, artist["id"])
    assert status["article_id"] == stored["article_id"]
    assert_seamless(reader.events, job_id, stored["markdown"])
    for node in demo_cluster.nodes:  # the retained log, whole, from either process
        with Reader(node.client, accepted["stream_url"]) as again:
            again.rest()
        assert_seamless(again.events, job_id, stored["markdown"])

    already = client.post(f"{article_path(artist['id'])}/jobs", params=SHORT)
    assert already.status_code == 200
    assert already.json()["job_id"] is None and already.json()["article_id"] == stored["article_id"]
    assert len(demo_cluster.articles(artist["id"])) == 1


def test_delete_of_a_job_cancels_it_wherever_it_runs(demo_cluster: Cluster, client: httpx.Client) -> None:
    artist = new_artist(client)
    posted = client.post(f"{article_path(artist['id'])}/jobs", params={"length": "long"})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["job_id"]
    wait_until(lambda: job_status(client, job_id)["words"] > 0, 10, "the job writing")
    assert_error(client.delete(f"/api/v1/jobs/{job_id}"), 401, "unauthorized")
    cancelled = client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH)
    assert cancelled.status_code == 204
    status = wait_for_status(client, job_id, {"cancelled", "done", "error"}, timeout=CANCELLED_WITHIN)
    assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    with Reader(client, f"/api/v1/jobs/{job_id}/stream") as reader:
        reader.rest()
    assert [(event.event, event.data["code"]) for event in terminal(reader.events)] == [
        ("error", "cancelled")
    ]
    assert demo_cluster.articles(artist["id"]) == []
    assert_error(client.delete("/api/v1/jobs/0123456789abcdef", headers=AUTH), 404, "job_not_found")


def test_the_synchronous_route_answers_the_article_stored_for_both(client: httpx.Client) -> None:
    artist = new_artist(client)
    written = client.post(article_path(artist["id"]), params=SHORT)
    assert written.status_code == 200, written.text
    article = written.json()
    assert article["version"] == 1 and article["markdown"].startswith("# ")
    read = client.get(article_path(artist["id"]), params=SHORT)
    assert served_by(read) != served_by(written)
    assert read.json()["markdown"] == article["markdown"]
    assert read.json()["article_id"] == article["article_id"]


def test_the_no_javascript_form_lands_on_a_job_page_either_process_knows(client: httpx.Client) -> None:
    artist = new_artist(client)
    posted = client.post(f"/artists/{artist['id']}/portrait", data={"language": "en", "length": "short"})
    assert posted.status_code == 303, posted.text
    job_page = posted.headers["location"]
    assert job_page.startswith(f"/artists/{artist['id']}/portrait/jobs/")
    deadline = time.monotonic() + 15
    while (page := client.get(job_page)).status_code == 200:  # each poll on the next process
        assert time.monotonic() < deadline, "the job page never redirected"
        time.sleep(0.1)
    assert page.status_code == 303, page.text
    landed = client.get(page.headers["location"])
    assert landed.status_code == 200
    assert stored_article(client, artist["id"])["version"] == 1


def test_an_update_makes_the_stored_article_stale_on_both_processes(client: httpx.Client) -> None:
    artist = new_artist(client)
    assert client.post(article_path(artist["id"]), params=SHORT).status_code == 200
    for _ in range(2):
        assert stored_article(client, artist["id"])["stale"] is False
    patched = client.patch(f"{ARTISTS}/{artist['id']}", json={"notes": "New facts."}, headers=AUTH)
    assert patched.status_code == 200
    answered = time.monotonic()
    wait_until(
        lambda: all(stored_article(client, artist["id"])["stale"] for _ in range(2)), 2, "the article stale"
    )
    assert time.monotonic() - answered < VISIBLE_WITHIN
