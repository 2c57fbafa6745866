"""The contract's "Several processes", one behaviour per test, on two real processes A and B sharing
PostgreSQL and a private Redis, both writing with the fake upstream of this test process (real HTTP), which
counts every upstream request of both and holds a portrait mid-way (`wait(gate)`) while a test acts: kills,
stalls or stops a process, stops Redis.

Timings (support.py): ATELIER_JOB_LEASE 1.5 s, ATELIER_JOB_SCAN 0.3 s, ATELIER_JOB_GRACE 1 s. A bound the
contract gives (a takeover within lease + scan, a cancel within grace + lease + scan) is asserted with
TOLERANCE added: what a loaded 2-core machine may take to run the steps on time.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tests.cluster.support import (
    AUTH,
    GRACE,
    GRACEFUL_SHUTDOWN,
    LEASE,
    SCAN,
    Cluster,
    Node,
    Reader,
    assert_seamless,
    new_artist,
    seq,
    stream_path,
    terminal,
)
from tests.fakes.upstream import (
    CHAT_PATH,
    FakeUpstream,
    Reply,
    Step,
    chunk,
    completion,
    error_reply,
    event,
    pause,
    wait,
)
from tests.support import ARTISTS, assert_error, joined_text, wait_until

TOLERANCE = 0.7
SHORT = {"length": "short"}
# What A writes before the test acts (each piece one upstream chunk), what it would write after, and what the
# process that takes the job over writes when it continues it.
BEFORE = ["# Nina Simone\n\n", "The High Priestess ", "of Soul was born ", "in Tryon, North Carolina"]
AFTER = [", in 1933.\n\n", "## The music\n\n", "Jazz, blues ", "and classical piano.\n"]
REST = [" in 1933, as Eunice Waymon.\n\n", "## Legacy\n\n", "Her voice ", "is still heard.\n"]


def writing(
    before: Sequence[str], gate: threading.Event, after: Sequence[str] = (), delay: float = 0.02
) -> Reply:
    """A streamed completion that writes `before`, waits for `gate` (or for the client to go), then writes
    `after` (paced, so a reader keeps up) and finishes with `stop`."""
    steps: list[Step] = [event(chunk("", role="assistant"))]
    steps += [event(chunk(piece)) for piece in before]
    steps.append(wait(gate))
    for piece in after:
        steps += [pause(delay), event(chunk(piece))]
    usage = {"prompt_tokens": 10, "completion_tokens": len(before) + len(after)}
    steps += [event(chunk("", finish_reason="stop", usage=usage)), event("[DONE]")]
    return Reply(steps=steps)


def chat_requests(upstream: FakeUpstream) -> list[Any]:
    return [request for request in upstream.requests if request.path == CHAT_PATH]


def job_status(node: Node, job_id: str) -> dict[str, Any]:
    response = node.client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for_end(node: Node, job_id: str, timeout: float) -> dict[str, Any]:
    """Poll the job on `node` until it has ended; its status."""
    wait_until(
        lambda: job_status(node, job_id)["status"] in ("done", "error", "cancelled"), timeout, "the end"
    )
    return job_status(node, job_id)


def wait_for_ready_status(node: Node, status: int, timeout: float) -> None:
    wait_until(
        lambda: node.client.get("/ready").status_code == status, timeout, f"/ready {status} on {node.name}"
    )


def markdown_of(cluster: Cluster, artist_id: int) -> str:
    rows = cluster.articles(artist_id)
    assert len(rows) == 1, f"{len(rows)} articles stored: {rows}"
    markdown: str = rows[0][2]
    return markdown


@pytest.fixture
def both(upstream_cluster: Cluster) -> Cluster:
    return upstream_cluster


# --- one job, whoever reads it -------------------------------------------------------------------------------


def test_a_reader_on_b_joins_the_job_started_on_a_with_one_upstream_request(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    gate = threading.Event()
    cluster_upstream.script(writing(BEFORE, gate, AFTER))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            with Reader(both.b.client, stream_path(artist_id), params=SHORT) as on_b:
                on_b.text("".join(BEFORE))
                assert on_b.job_id == on_a.job_id
                gate.set()
                on_a.rest()
                on_b.rest()
    finally:
        gate.set()
    assert len(chat_requests(cluster_upstream)) == 1
    markdown = markdown_of(both, artist_id)
    assert markdown == "".join(BEFORE + AFTER)
    assert_seamless(on_a.events, on_a.job_id, markdown)
    assert_seamless(on_b.events, on_a.job_id, markdown)


def test_a_stream_read_on_a_resumes_on_b_with_exactly_the_events_after_its_id(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    gate = threading.Event()
    cluster_upstream.script(writing(BEFORE, gate, AFTER))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
        # the reader left A (the job waits for it for the grace) and comes back on B
        with Reader(both.b.client, stream_path(artist_id), params=SHORT, last_event_id=on_a.last_id) as on_b:
            gate.set()
            on_b.rest()
    finally:
        gate.set()
    assert seq(on_b.events[0]) > seq(on_a.events[-1])
    assert joined_text(on_b.events) == "".join(AFTER)
    markdown = markdown_of(both, artist_id)
    assert_seamless(on_a.events + on_b.events, on_a.job_id, markdown)
    assert len(chat_requests(cluster_upstream)) == 1


# --- readers and the grace, across processes -------------------------------------------------------------------


def test_the_grace_counts_readers_on_both_processes(both: Cluster, cluster_upstream: FakeUpstream) -> None:
    gate = threading.Event()  # never set: the upstream writes until the job is cancelled
    cluster_upstream.script(writing(BEFORE, gate))
    artist_id = new_artist(both.a.client)["id"]
    on_b = None
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            on_b = Reader(both.b.client, stream_path(artist_id), params=SHORT)
            on_b.text("".join(BEFORE))
        job_id = on_a.job_id
        # A has no reader left, B has one: the job outlives A's grace, several times over.
        time.sleep(2 * GRACE + 2 * SCAN)
        for node in both.nodes:
            assert job_status(node, job_id)["status"] == "running"
        on_b.close()
        left = time.monotonic()
        status = wait_for_end(both.a, job_id, GRACE + SCAN + LEASE + TOLERANCE)
        took = time.monotonic() - left
    finally:
        gate.set()
        if on_b is not None:
            on_b.close()
    assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    assert took >= GRACE * 0.9, f"cancelled {took:.2f} s after the last reader left: before the grace"
    assert took <= GRACE + SCAN + TOLERANCE, f"cancelled {took:.2f} s after the last reader left"
    assert cluster_upstream.wait_closed(0).disconnected_by_client
    assert both.articles(artist_id) == []


def test_the_readers_of_a_killed_process_stop_counting_with_its_lease(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    gate = threading.Event()
    cluster_upstream.script(writing(BEFORE, gate))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            on_b = Reader(both.b.client, stream_path(artist_id), params=SHORT)
            on_b.text("".join(BEFORE))
        job_id = on_a.job_id
        time.sleep(GRACE + 2 * SCAN)  # A's grace is over; B's reader keeps the job
        assert job_status(both.a, job_id)["status"] == "running"
        both.b.kill()  # with the only reader
        killed = time.monotonic()
        on_b.close()
        status = wait_for_end(both.a, job_id, GRACE + LEASE + SCAN + 3)
        took = time.monotonic() - killed
    finally:
        gate.set()
    assert status["status"] == "cancelled", status
    bound = GRACE + LEASE + SCAN
    assert took <= bound + TOLERANCE, (
        f"cancelled {took:.2f} s after B died (grace + lease + scan = {bound} s)"
    )
    assert both.articles(artist_id) == []


# --- cancel -----------------------------------------------------------------------------------------------------


def test_delete_on_b_cancels_the_job_running_on_a(both: Cluster, cluster_upstream: FakeUpstream) -> None:
    gate = threading.Event()
    cluster_upstream.script(writing(BEFORE, gate, AFTER))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            job_id = on_a.job_id
            assert_error(both.b.client.delete(f"/api/v1/jobs/{job_id}"), 401, "unauthorized")
            deleted = both.b.client.delete(f"/api/v1/jobs/{job_id}", headers=AUTH)
            answered = time.monotonic()
            assert deleted.status_code == 204, deleted.text
            on_a.rest()
            took = time.monotonic() - answered
    finally:
        gate.set()
    ends = terminal(on_a.events)
    assert [(end.event, end.data["code"]) for end in ends] == [("error", "cancelled")]
    assert ends[0].data["retryable"] is False
    assert took <= SCAN + TOLERANCE, f"A's reader got the cancel {took:.2f} s after B answered"
    for node in both.nodes:
        status = job_status(node, job_id)
        assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    assert cluster_upstream.wait_closed(0).disconnected_by_client
    assert both.articles(artist_id) == []


# --- writes seen everywhere ------------------------------------------------------------------------------------


def test_a_patch_on_a_is_fresh_on_b_within_one_second(both: Cluster) -> None:
    artist = new_artist(both.a.client, country="Old Country")
    path = f"{ARTISTS}/{artist['id']}"
    reads = [(path, {}), (ARTISTS, {"q": artist["name"]}), (f"/artists/{artist['id']}", {})]
    for target, params in reads:  # hot in B's read cache
        for _ in range(2):
            assert both.b.client.get(target, params=params).status_code == 200
    patched = both.a.client.patch(path, json={"country": "New Country"}, headers=AUTH)
    assert patched.status_code == 200
    answered = time.monotonic()

    def fresh_on_b() -> bool:
        record = both.b.client.get(path).json()
        listed = both.b.client.get(ARTISTS, params={"q": artist["name"]}).json()["items"]
        page = both.b.client.get(f"/artists/{artist['id']}").text
        return record["country"] == listed[0]["country"] == "New Country" and "New Country" in page

    wait_until(fresh_on_b, 3, "the update on B")
    took = time.monotonic() - answered
    assert took <= 1.0 + 0.1, f"B served the old artist {took:.2f} s after A answered the PATCH"


# --- a process lost: takeover -----------------------------------------------------------------------------------


def test_sigkill_of_a_mid_portrait_then_b_takes_over_and_a_reader_resumes_seamlessly(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    gate = threading.Event()  # A never writes past BEFORE: it dies first
    cluster_upstream.script(writing(BEFORE, gate, AFTER), completion(REST, delay=0.02))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            both.a.kill()
            killed = time.monotonic()
            assert on_a.next() is None  # the connection died with A
        with Reader(both.b.client, stream_path(artist_id), params=SHORT, last_event_id=on_a.last_id) as on_b:
            continued = on_b.until(lambda event: event.event == "continued", "the takeover's seam")
            took = time.monotonic() - killed
            on_b.rest()
    finally:
        gate.set()
    job_id = on_a.job_id
    assert continued.data["reason"] == "takeover" and continued.data["attempt"] == 1, continued.data
    assert took <= LEASE + SCAN + TOLERANCE, f"taken over {took:.2f} s after A died"
    assert seq(on_b.events[0]) > seq(on_a.events[-1])
    assert on_b.events[-1].event == "done", on_b.events[-2:]
    markdown = markdown_of(both, artist_id)
    assert markdown == "".join(BEFORE + REST)
    assert_seamless(on_a.events + on_b.events, job_id, markdown)
    # B continued from the text already written: the prefix the continuation asked the upstream to go on from
    requests = chat_requests(cluster_upstream)
    assert len(requests) == 2
    last_message = requests[1].json["messages"][-1]
    assert last_message["role"] == "assistant" and last_message["content"] == "".join(BEFORE)
    assert [row[1] for row in both.articles(artist_id)] == [job_id]
    done = on_b.events[-1].data
    assert done["continuations"] == 1 and done["finish_reason"] == "stop"


def test_a_stalled_past_its_lease_comes_back_and_one_article_is_stored(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    gate = threading.Event()  # set while A is stalled: A's upstream call goes on, and A comes back to it
    cluster_upstream.script(writing(BEFORE, gate, AFTER), completion(REST, delay=0.02))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with (
            Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a,
            Reader(both.b.client, stream_path(artist_id), params=SHORT) as on_b,
        ):
            on_a.text("".join(BEFORE))
            on_b.text("".join(BEFORE))
            both.a.pause()
            stalled = time.monotonic()
            continued = on_b.until(lambda event: event.event == "continued", "the takeover's seam")
            took = time.monotonic() - stalled
            on_b.rest()
            gate.set()  # A's upstream writes the rest of its own text, for A to find when it wakes
            time.sleep(0.2)
            both.a.resume()
            on_a.rest()
            time.sleep(LEASE + SCAN)  # A has looked at its jobs again, and what it would still write, it did
    finally:
        gate.set()
        if both.a.stopped:
            both.a.resume()
    job_id = on_a.job_id
    assert continued.data["reason"] == "takeover", continued.data
    assert took <= LEASE + SCAN + TOLERANCE, f"taken over {took:.2f} s after A stalled"
    assert on_b.events[-1].event == "done", on_b.events[-2:]
    markdown = markdown_of(both, artist_id)  # exactly one
    assert markdown == "".join(BEFORE + REST)
    for reader in (on_a, on_b):
        assert [end.event for end in terminal(reader.events)] == ["done"]
        assert_seamless(reader.events, job_id, markdown)
    for node in both.nodes:
        assert job_status(node, job_id)["status"] == "done"


def test_sigterm_of_a_hands_its_running_job_over_to_b(both: Cluster, cluster_upstream: FakeUpstream) -> None:
    gate = threading.Event()  # A's call never goes past BEFORE: A stops first
    cluster_upstream.script(writing(BEFORE, gate, AFTER), completion(REST, delay=0.02))
    artist_id = new_artist(both.a.client)["id"]
    try:
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            code = both.a.terminate(GRACEFUL_SHUTDOWN + 10)
            exited = time.monotonic()
            on_a.rest()  # whatever A sent before it closed the stream
        assert code in (0, -signal.SIGTERM), both.a.log()  # uvicorn ends by raising the signal again
        with Reader(both.b.client, stream_path(artist_id), params=SHORT, last_event_id=on_a.last_id) as on_b:
            continued = on_b.until(lambda event: event.event == "continued", "the handover's seam")
            took = time.monotonic() - exited
            on_b.rest()
    finally:
        gate.set()
    job_id = on_a.job_id
    assert [end.event for end in terminal(on_a.events)] == [], "A ended the job instead of handing it over"
    assert continued.data["reason"] == "takeover", continued.data
    # handed over: B need not wait for A's lease to expire
    assert took < LEASE, f"taken over {took:.2f} s after A exited (the lease is {LEASE} s)"
    assert on_b.events[-1].event == "done", on_b.events[-2:]
    markdown = markdown_of(both, artist_id)
    assert markdown == "".join(BEFORE + REST)
    assert_seamless(on_a.events + on_b.events, job_id, markdown)


# --- the circuit, shared ------------------------------------------------------------------------------------------


def test_the_circuit_opened_by_failures_on_a_fails_fast_on_b(
    both: Cluster, cluster_upstream: FakeUpstream
) -> None:
    cluster_upstream.default = error_reply(500)
    for _ in range(2):
        artist_id = new_artist(both.a.client)["id"]
        with Reader(both.a.client, stream_path(artist_id), params=SHORT) as on_a:
            on_a.rest()
        assert [event.event for event in on_a.events] == ["metadata", "error"]
        assert on_a.events[-1].data["code"] == "upstream_error"
    assert len(chat_requests(cluster_upstream)) == 2

    artist_id = new_artist(both.b.client)["id"]
    started = time.monotonic()
    with Reader(both.b.client, stream_path(artist_id), params=SHORT) as on_b:
        on_b.rest()
    assert time.monotonic() - started < 1.0, "not fast"
    assert [event.event for event in on_b.events] == ["metadata", "error"]
    metadata, error = on_b.events[0].data, on_b.events[1].data
    assert metadata["job_id"] is None
    assert error["code"] == "upstream_unavailable" and error["retryable"] is True
    assert isinstance(error["retry_after"], int | float) and 0 < error["retry_after"] <= 30
    refused = both.b.client.post(f"{ARTISTS}/{artist_id}/article/jobs", params=SHORT)
    assert_error(refused, 503, "upstream_unavailable")
    assert len(chat_requests(cluster_upstream)) == 2, "B asked the upstream despite the open circuit"
    assert both.b.client.get("/ready").json()["checks"]["breaker"]["state"] == "open"

    # After the reset timeout, one trial goes through (here on B) and its success closes the circuit for both.
    cluster_upstream.default = completion(["# Back\n\n", "again.\n"])
    time.sleep(error["retry_after"] + 0.1)  # the circuit says "open" until someone asks for a trial
    artist_id = new_artist(both.b.client)["id"]
    with Reader(both.b.client, stream_path(artist_id), params=SHORT) as trial:
        trial.rest()
    assert [end.event for end in terminal(trial.events)] == ["done"], trial.events
    for node in both.nodes:
        assert node.client.get("/ready").json()["checks"]["breaker"]["state"] == "closed"


# --- Redis lost and back -----------------------------------------------------------------------------------------


def test_redis_restarted_mid_stream(both: Cluster, cluster_upstream: FakeUpstream) -> None:
    """Last of the module: if the processes did not recover, the tests after it would fail too."""
    # One portrait stored before Redis goes.
    stored_id = new_artist(both.a.client)["id"]
    cluster_upstream.script(completion(["# Stored\n\n", "Before ", "the outage.\n"]))
    with Reader(both.a.client, stream_path(stored_id), params=SHORT) as first:
        first.rest()
    assert first.events[-1].event == "done"
    stored = both.b.client.get(f"{ARTISTS}/{stored_id}/article", params=SHORT).json()

    gate = threading.Event()
    cluster_upstream.script(writing(BEFORE, gate, AFTER))
    running_id = new_artist(both.a.client)["id"]
    fresh_id = new_artist(both.b.client)["id"]
    try:
        with Reader(both.a.client, stream_path(running_id), params=SHORT) as on_a:
            on_a.text("".join(BEFORE))
            both.redis.stop()
            stopped = time.monotonic()
            on_a.rest()
            ended_after = time.monotonic() - stopped
        gate.set()
        ends = terminal(on_a.events)
        assert [(end.event, end.data["code"]) for end in ends] == [("error", "broker_unavailable")]
        assert ends[0].data["retryable"] is True
        assert ended_after < 5, f"the running stream ended {ended_after:.1f} s after Redis went"
        requests_before = len(chat_requests(cluster_upstream))

        for node in both.nodes:
            wait_for_ready_status(node, 503, 5)
            ready = node.client.get("/ready")
            assert ready.json()["error"]["code"] == "not_ready"
            assert ready.json()["error"]["checks"]["redis"] == "unreachable"
            # stored articles and their replays are still served
            read = node.client.get(f"{ARTISTS}/{stored_id}/article", params=SHORT)
            assert read.status_code == 200 and read.json()["markdown"] == stored["markdown"]
            with Reader(node.client, stream_path(stored_id), params=SHORT) as replay:
                replay.rest()
            assert replay.events[0].data["cached"] is True and replay.events[-1].event == "done"
            assert joined_text(replay.events) == stored["markdown"]
            assert node.client.get(f"{ARTISTS}/{stored_id}").status_code == 200
            # the catalog is PostgreSQL's: writes go on
            patched = node.client.patch(
                f"{ARTISTS}/{fresh_id}", json={"notes": f"by {node.name}"}, headers=AUTH
            )
            assert patched.status_code == 200, patched.text
            # a new generation: metadata, then the error
            with Reader(node.client, stream_path(fresh_id), params=SHORT) as fresh:
                fresh.rest()
            assert [event.event for event in fresh.events] == ["metadata", "error"]
            assert fresh.events[-1].data["code"] == "broker_unavailable"
            refused = node.client.post(f"{ARTISTS}/{fresh_id}/article/jobs", params=SHORT)
            assert_error(refused, 503, "broker_unavailable")
        assert len(chat_requests(cluster_upstream)) == requests_before, "an upstream call without Redis"
    finally:
        gate.set()
        if both.redis.process is None:
            both.redis.start()  # empty: this Redis keeps nothing on disk
    back = time.monotonic()
    for node in both.nodes:
        wait_for_ready_status(node, 200, 10)
    recovered = time.monotonic() - back
    assert both.articles(running_id) == [], "the job cut by the outage stored something"
    assert len(both.articles(stored_id)) == 1

    for node in both.nodes:  # a new portrait completes, on either process
        artist_id = new_artist(node.client)["id"]
        cluster_upstream.script(completion(["# After\n\n", "the outage.\n"]))
        with Reader(node.client, stream_path(artist_id), params=SHORT) as after:
            after.rest()
        assert [end.event for end in terminal(after.events)] == ["done"], after.events
        assert markdown_of(both, artist_id) == "# After\n\nthe outage.\n"
    assert recovered < 10
