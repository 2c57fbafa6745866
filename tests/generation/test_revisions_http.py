"""Revisions over real HTTP: a live Atelier (uvicorn on loopback) and the scriptable fake upstream, which
records the messages it receives. `POST .../article/revisions`, the job's stream, what the API then says is
stored, and every refusal (401, 403, 404, 409, 422, 400)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from app.generation import prompt
from app.generation.schemas import MAX_INSTRUCTION
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, event, wait
from tests.support import (
    ARTISTS,
    AUTH,
    LiveServer,
    StreamedEvent,
    add_artist,
    assert_error,
    joined_text,
    stream_events,
)

pytestmark = pytest.mark.timeout(20)

FIRST = ["# Nina Simone\n\n", "The High Priestess ", "of Soul.\n"]
SECOND = ["# Nina Simone\n\n", "Shorter, ", "and on the 1970s.\n"]
THIRD = ["# Nina Simone\n\n", "Now on ", "Barbados.\n"]
INSTRUCTION = "shorter, and more on the 1970s"


def revisions(artist_id: int) -> str:
    return f"{ARTISTS}/{artist_id}/article/revisions"


def first_portrait(server: LiveServer, artist_id: int, length: str = "long") -> dict[str, Any]:
    stored = server.client.post(f"{ARTISTS}/{artist_id}/article", params={"length": length}, headers=AUTH)
    assert stored.status_code == 200, stored.text
    body: dict[str, Any] = stored.json()
    return body


def revise(
    server: LiveServer, artist_id: int, instruction: str = INSTRUCTION, length: str = "long"
) -> dict[str, Any]:
    accepted = server.client.post(
        revisions(artist_id), params={"length": length}, headers=AUTH, json={"instruction": instruction}
    )
    assert accepted.status_code == 202, accepted.text
    body: dict[str, Any] = accepted.json()
    return body


def follow(server: LiveServer, accepted: dict[str, Any]) -> list[StreamedEvent]:
    response, events = stream_events(server.client, accepted["stream_url"])
    assert response.status_code == 200, response.text
    return events


def latest(server: LiveServer, artist_id: int, length: str = "long") -> dict[str, Any]:
    response = server.client.get(f"{ARTISTS}/{artist_id}/article", params={"length": length})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def messages(upstream: FakeUpstream, index: int) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = upstream.requests[index].json["messages"]
    return sent


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    opened = threading.Event()
    yield opened
    opened.set()


# --- the whole flow ------------------------------------------------------------------------------------------


def test_a_revision_streams_like_a_first_portrait_and_is_stored_as_version_two(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script(completion(FIRST), completion(SECOND))
    artist_id = add_artist(app_server)
    first = first_portrait(app_server, artist_id)
    assert (first["version"], first["instruction"], first["revises_version"]) == (1, None, None)

    accepted = revise(app_server, artist_id)
    job_id = accepted["job_id"]
    assert accepted == {
        "job_id": job_id,
        "status": accepted["status"],
        "status_url": f"/api/v1/jobs/{job_id}",
        "stream_url": f"/api/v1/jobs/{job_id}/stream",
    }
    assert accepted["status"] in ("queued", "running")
    events = follow(app_server, accepted)

    kinds = [e.event for e in events]
    assert kinds[0] == "metadata" and kinds[-1] == "done" and set(kinds) == {"metadata", "text", "done"}
    metadata, done = events[0].data, events[-1].data
    assert metadata["job_id"] == job_id and metadata["cached"] is False and metadata["length"] == "long"
    assert all(e.id.startswith(f"{job_id}:") for e in events)
    assert joined_text(events) == "".join(SECOND)
    assert (done["version"], done["finish_reason"], done["truncated"]) == (2, "stop", False)

    article = latest(app_server, artist_id)
    assert article["markdown"] == "".join(SECOND) and article["version"] == 2
    assert (article["instruction"], article["revises_version"]) == (INSTRUCTION, 1)
    assert article["length_score"] == done["length_score"]
    versions = app_server.client.get(f"{ARTISTS}/{artist_id}/article/versions").json()["items"]
    assert [(v["version"], v["instruction"], v["revises_version"]) for v in versions] == [
        (2, INSTRUCTION, 1),
        (1, None, None),
    ]
    status = app_server.client.get(accepted["status_url"]).json()
    assert (status["status"], status["version"], status["article_id"]) == ("done", 2, article["article_id"])

    # what the upstream received: the conversation, the system prompt first and unchanged
    sent = messages(upstream, 1)
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[:2] == messages(upstream, 0)
    assert sent[0] == {"role": "system", "content": app_server.settings.system_prompt}
    assert sent[2] == {"role": "assistant", "content": "".join(FIRST)}
    assert sent[3]["content"].startswith(prompt.REVISION_REQUEST)
    assert prompt.quoted(INSTRUCTION) in sent[3]["content"]


def test_a_revision_of_a_revision_is_written_from_version_two(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script(completion(FIRST), completion(SECOND), completion(THIRD))
    artist_id = add_artist(app_server)
    first_portrait(app_server, artist_id)
    follow(app_server, revise(app_server, artist_id))
    events = follow(app_server, revise(app_server, artist_id, "now more on Barbados"))
    assert events[-1].data["version"] == 3

    sent = messages(upstream, 2)
    assert sent[2] == {"role": "assistant", "content": "".join(SECOND)}
    assert prompt.quoted("now more on Barbados") in sent[3]["content"]
    assert "".join(FIRST) not in str(sent)
    article = latest(app_server, artist_id)
    assert (article["version"], article["instruction"], article["revises_version"]) == (
        3,
        "now more on Barbados",
        2,
    )
    assert article["markdown"] == "".join(THIRD)


def test_a_revision_cut_by_the_token_limit_is_continued(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    cut = "# Nina Simone\n\nShorter, "
    upstream.script(
        completion(FIRST),
        completion(["# Nina Simone\n\n", "Shorter, "], finish_reason="length"),
        completion([cut + "and on ", "the 1970s.\n"]),  # the echo merged into the first delta
    )
    artist_id = add_artist(app_server)
    first_portrait(app_server, artist_id)
    events = follow(app_server, revise(app_server, artist_id))

    assert [e.data["reason"] for e in events if e.event == "continued"] == ["length"]
    assert joined_text(events) == "".join(SECOND)
    assert events[-1].data["continuations"] == 1
    continued = messages(upstream, 2)
    assert continued[:-1] == messages(upstream, 1)  # the revision's conversation, not a first prompt
    assert continued[-1] == {"role": "assistant", "content": cut, "prefix": True}
    article = latest(app_server, artist_id)
    assert (article["markdown"], article["continuations"], article["revises_version"]) == (
        "".join(SECOND),
        1,
        1,
    )


# --- refusals ---------------------------------------------------------------------------------------------


def test_a_revision_while_a_job_runs_for_that_portrait_is_409(
    app_server: LiveServer, upstream: FakeUpstream, gate: threading.Event
) -> None:
    held = Reply(
        steps=[
            event(chunk("", role="assistant")),
            event(chunk("Held ")),
            wait(gate),
            event(chunk("on.\n", finish_reason="stop")),
            event("[DONE]"),
        ]
    )
    upstream.script(completion(FIRST), held)
    artist_id = add_artist(app_server)
    first_portrait(app_server, artist_id)
    accepted = revise(app_server, artist_id)
    upstream.wait_for_requests(2)

    again = app_server.client.post(revisions(artist_id), headers=AUTH, json={"instruction": "other"})
    error = assert_error(again, 409, "conflict")
    assert "writing this portrait" in error["message"]
    # another length of the same artist is another portrait: nothing stored there
    assert_error(
        app_server.client.post(
            revisions(artist_id), params={"length": "short"}, headers=AUTH, json={"instruction": "x"}
        ),
        404,
        "article_not_found",
    )
    gate.set()
    events = follow(app_server, accepted)
    assert joined_text(events) == "Held on.\n" and events[-1].data["version"] == 2
    assert len(upstream.requests) == 2


def test_a_revision_without_a_stored_portrait_or_artist_is_404(app_server: LiveServer, upstream: Any) -> None:
    artist_id = add_artist(app_server)
    body = {"instruction": INSTRUCTION}
    error = assert_error(
        app_server.client.post(revisions(artist_id), headers=AUTH, json=body), 404, "article_not_found"
    )
    assert "nothing to revise" in error["message"]
    assert_error(app_server.client.post(revisions(99_999), headers=AUTH, json=body), 404, "artist_not_found")
    assert upstream.requests == []


def test_a_revision_without_a_token_is_401_and_cross_site_is_403(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script(completion(FIRST))
    artist_id = add_artist(app_server)
    first_portrait(app_server, artist_id)
    body = {"instruction": INSTRUCTION}
    missing = app_server.client.post(revisions(artist_id), json=body)
    assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = {"Authorization": "Bearer wrong"}
    assert_error(app_server.client.post(revisions(artist_id), headers=wrong, json=body), 401, "unauthorized")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "https://evil.example"}):
        refused = app_server.client.post(revisions(artist_id), headers=headers, json=body)
        assert "another site" in assert_error(refused, 403, "forbidden")["message"]
    # a valid token is proof enough, from anywhere (a page elsewhere cannot send one)
    upstream.script(completion(SECOND))
    anywhere = {**AUTH, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    accepted = app_server.client.post(revisions(artist_id), headers=anywhere, json=body)
    assert accepted.status_code == 202, accepted.text
    follow(app_server, accepted.json())
    assert len(upstream.requests) == 2


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"instruction": ""}, "body.instruction"),
        ({"instruction": "   \n "}, "body.instruction"),
        ({"instruction": "x" * (MAX_INSTRUCTION + 1)}, "body.instruction"),
        ({"instruction": "a\x00b"}, "body.instruction"),
        ({"instruction": 42}, "body.instruction"),
        ({}, "body.instruction"),
        ({"instruction": "shorter", "model": "gpt"}, "body.model"),
        ([], "body"),
    ],
    ids=["empty", "blank", "too long", "NUL", "a number", "missing", "an unknown field", "not an object"],
)
def test_a_bad_instruction_is_422_with_its_field(
    app_server: LiveServer, upstream: Any, body: Any, loc: str
) -> None:
    artist_id = add_artist(app_server)
    response = app_server.client.post(revisions(artist_id), headers=AUTH, json=body)
    error = assert_error(response, 422, "validation_error")
    assert loc in [field["loc"] for field in error["fields"]], error
    assert upstream.requests == []


def test_an_instruction_at_the_limit_with_line_breaks_is_accepted(
    app_server: LiveServer, upstream: Any
) -> None:
    upstream.script(completion(FIRST), completion(SECOND))
    artist_id = add_artist(app_server)
    first_portrait(app_server, artist_id)
    instruction = ("Shorter.\n\tMore on the 1970s. " * 200)[: MAX_INSTRUCTION - 2] + "é!"
    follow(app_server, revise(app_server, artist_id, "  " + instruction + "  "))
    assert latest(app_server, artist_id)["instruction"] == instruction.strip()


def test_a_body_that_is_not_json_is_400_invalid_json(app_server: LiveServer) -> None:
    artist_id = add_artist(app_server)
    headers = {**AUTH, "Content-Type": "application/json"}
    response = app_server.client.post(revisions(artist_id), headers=headers, content=b'{"instruction": ')
    assert_error(response, 400, "invalid_json")


def test_a_bad_language_is_422(app_server: LiveServer) -> None:
    artist_id = add_artist(app_server)
    response = app_server.client.post(
        revisions(artist_id), params={"language": "xx"}, headers=AUTH, json={"instruction": "x"}
    )
    assert "query.language" in [f["loc"] for f in assert_error(response, 422, "validation_error")["fields"]]
