"""Revisions on the pages, without JavaScript: the versions of a portrait with their instructions, the form
that asks for a revision (its token in the POST's body), the job page of a revision, and what a revision
changed (a diff of two versions, every piece escaped, changes in <ins>/<del>)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from app.articles.diff import diff_markdown
from tests.fakes.upstream import FakeUpstream, Reply, chunk, completion, event, wait
from tests.support import ARTISTS, AUTH, TOKEN, LiveServer, add_artist

pytestmark = pytest.mark.timeout(20)

FIRST = "# Nina Simone\n\nShe sang <script>alert(1)</script> jazz in 1960.\n\nShe played piano.\n"
SECOND = "# Nina Simone\n\nShe sang soul <img src=x onerror=alert(2)> in the 1970s.\n\nShe played piano.\n"
INSTRUCTION = 'more on the 1970s <b onmouseover="alert(3)">please</b>'


def html(response: Any) -> HTMLParser:
    assert response.headers["content-type"].startswith("text/html"), response.headers
    return HTMLParser(response.text)


def store_first(server: LiveServer, upstream: FakeUpstream, artist_id: int) -> None:
    upstream.script(completion([FIRST]))
    stored = server.client.post(f"{ARTISTS}/{artist_id}/article", headers=AUTH)
    assert stored.status_code == 200, stored.text


def post_form(server: LiveServer, artist_id: int, **fields: str) -> Any:
    data = {"language": "en", "length": "long", "instruction": INSTRUCTION, "token": TOKEN, **fields}
    return server.client.post(f"/artists/{artist_id}/revisions", data=data)


def wait_stored(server: LiveServer, artist_id: int, version: int) -> None:
    deadline = time.monotonic() + 5
    while server.client.get(f"{ARTISTS}/{artist_id}/article").json().get("version") != version:
        assert time.monotonic() < deadline, f"version {version} was never stored"
        time.sleep(0.02)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    opened = threading.Event()
    yield opened
    opened.set()


def test_without_a_stored_portrait_there_is_no_versions_section(app_server: LiveServer) -> None:
    artist_id = add_artist(app_server)
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    assert tree.css_first("#versions") is None and tree.css_first("form.revision-form") is None


def test_the_artist_page_lists_the_versions_and_offers_the_revision_form(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    artist_id = add_artist(app_server)
    store_first(app_server, upstream, artist_id)
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    items = tree.css("#versions .version")
    assert [item.attributes["data-version"] for item in items] == ["1"]
    assert "Written from the catalog's facts" in items[0].text()
    assert items[0].css_first(".diff-link") is None  # a first version changed nothing
    form = tree.css_first("#versions form.revision-form")
    assert form is not None
    assert (form.attributes["method"], form.attributes["action"]) == (
        "post",
        f"/artists/{artist_id}/revisions",
    )
    fields = {field.attributes.get("name"): field for field in form.css("input, textarea")}
    assert fields["language"].attributes["value"] == "en" and fields["length"].attributes["value"] == "long"
    assert fields["token"].attributes["type"] == "password"  # in the body, never in an address
    assert fields["instruction"].tag == "textarea" and fields["instruction"].attributes["maxlength"] == "2000"
    assert "required" in fields["instruction"].attributes


def test_the_form_starts_a_revision_whose_page_follows_it_then_the_versions_and_the_diff(
    app_server: LiveServer, upstream: FakeUpstream, gate: threading.Event
) -> None:
    artist_id = add_artist(app_server)
    store_first(app_server, upstream, artist_id)
    upstream.script(
        Reply(
            steps=[
                event(chunk("", role="assistant")),
                event(chunk("# Nina Simone\n\nShe sang soul ")),
                wait(gate),
                event(chunk(SECOND.removeprefix("# Nina Simone\n\nShe sang soul "), finish_reason="stop")),
                event("[DONE]"),
            ]
        )
    )
    posted = post_form(app_server, artist_id)
    assert posted.status_code == 303, posted.text
    job_url = posted.headers["location"]
    assert job_url.startswith(f"/artists/{artist_id}/portrait/jobs/")
    upstream.wait_for_requests(2)

    # the job page of a revision: what it is revising, and the text so far (not the stored version)
    tree = html(app_server.client.get(job_url))
    note = tree.css_first(".revision-note")
    assert note is not None and "Revising version 1" in note.text() and INSTRUCTION in note.text()
    assert note.css_first("b") is None  # the instruction is text
    body = tree.css_first("#portrait .portrait-body")
    assert body is not None and "She sang soul" in body.text() and "piano" not in body.text()
    assert tree.css_first("#portrait .stored-meta") is None
    assert tree.css_first("noscript meta[http-equiv=refresh]") is not None

    gate.set()
    wait_stored(app_server, artist_id, 2)
    landed = app_server.client.get(job_url)
    assert (
        landed.status_code == 303
        and landed.headers["location"] == f"/artists/{artist_id}?language=en&length=long"
    )

    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    assert "version 2" in tree.css_first("#portrait .stored-meta").text()  # type: ignore[union-attr]
    items = tree.css("#versions .version")
    assert [item.attributes["data-version"] for item in items] == ["2", "1"]
    asked = items[0].css_first("q.instruction")
    assert asked is not None and asked.text() == INSTRUCTION and asked.css_first("b") is None
    assert "Revision of version 1" in items[0].text()
    link = items[0].css_first("a.diff-link")
    assert (
        link is not None
        and link.attributes["href"] == f"/artists/{artist_id}/versions/2/diff?language=en&length=long"
    )

    diff = app_server.client.get(link.attributes["href"] or "")
    assert diff.status_code == 200
    page = html(diff)
    pre = page.css_first("pre.diff")
    assert pre is not None
    assert page.css("pre.diff script") == [] and page.css("pre.diff img") == [] and page.css("main b") == []
    assert [node.text() for node in pre.css("del")] == [
        piece.text for piece in diff_markdown(FIRST, SECOND).pieces if piece.kind == "del"
    ]
    assert "<script>alert(1)</script>" in "".join(node.text() for node in pre.css("del"))
    assert "<img src=x onerror=alert(2)>" in "".join(node.text() for node in pre.css("ins"))
    assert pre.text().count("She played piano.") == 1  # unchanged text shown once, unmarked
    assert "&lt;script&gt;" in diff.text and "<script>alert" not in diff.text
    asked = page.css_first(".diff-versions q.instruction")
    assert asked is not None and asked.text() == INSTRUCTION
    assert diff.headers["content-security-policy"].startswith("default-src 'self'")
    assert app_server.client.head(link.attributes["href"] or "").status_code == 200


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"token": ""}, 401, "API tokens"),
        ({"token": "wrong"}, 401, "API tokens"),
        ({"instruction": "   "}, 422, "Say what should change"),
        ({"instruction": "x" * 2001}, 422, "Say what should change"),
    ],
    ids=["no token", "a wrong token", "a blank instruction", "a long instruction"],
)
def test_a_refused_form_shows_the_page_again_with_why_and_the_instruction(
    app_server: LiveServer, upstream: FakeUpstream, fields: dict[str, str], status: int, says: str
) -> None:
    artist_id = add_artist(app_server)
    store_first(app_server, upstream, artist_id)
    response = post_form(app_server, artist_id, **fields)
    assert response.status_code == status
    tree = html(response)
    notice = tree.css_first("#portrait .portrait-notice")
    assert notice is not None and says in notice.text()
    kept = tree.css_first("#versions textarea[name=instruction]")
    assert kept is not None and kept.text() == fields.get("instruction", INSTRUCTION)
    assert len(upstream.requests) == 1  # the first portrait only


def test_the_form_while_a_job_writes_the_portrait_says_so(
    app_server: LiveServer, upstream: FakeUpstream, gate: threading.Event
) -> None:
    artist_id = add_artist(app_server)
    store_first(app_server, upstream, artist_id)
    upstream.script(Reply(steps=[event(chunk("", role="assistant")), event(chunk("Held ")), wait(gate)]))
    assert post_form(app_server, artist_id).status_code == 303
    upstream.wait_for_requests(2)
    response = post_form(app_server, artist_id, instruction="another")
    assert response.status_code == 409
    tree = html(response)
    assert "writing this portrait" in tree.css_first("#portrait .portrait-notice").text()  # type: ignore[union-attr]
    follow = tree.css_first("#versions .versions-running a")
    assert follow is not None and follow.attributes["href"].startswith(f"/artists/{artist_id}/portrait/jobs/")  # type: ignore[union-attr]


def test_the_form_without_a_stored_portrait_or_from_another_site_is_refused(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    artist_id = add_artist(app_server)
    response = post_form(app_server, artist_id)
    assert response.status_code == 404
    assert "generate one first" in html(response).css_first("#portrait .portrait-notice").text()  # type: ignore[union-attr]
    store_first(app_server, upstream, artist_id)
    cross = app_server.client.post(
        f"/artists/{artist_id}/revisions",
        data={"instruction": "x", "token": TOKEN},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403 and "another site" in html(cross).css_first("main").text()  # type: ignore[union-attr]
    assert post_form(app_server, 99_999).status_code == 404
    assert len(upstream.requests) == 1


def test_the_diff_page_refuses_what_it_cannot_compare(app_server: LiveServer, upstream: FakeUpstream) -> None:
    artist_id = add_artist(app_server)
    store_first(app_server, upstream, artist_id)
    base = f"/artists/{artist_id}/versions"
    first = app_server.client.get(f"{base}/1/diff")
    assert first.status_code == 404 and "nothing to compare" in html(first).css_first("main").text()  # type: ignore[union-attr]
    assert app_server.client.get(f"{base}/7/diff").status_code == 404
    assert app_server.client.get(f"{base}/1/diff", params={"against": 3}).status_code == 404
    assert app_server.client.get("/artists/99999/versions/1/diff").status_code == 404
    assert app_server.client.get("/artists/x/versions/1/diff").status_code == 404
    # a second version written from the facts again is compared with the one before it
    upstream.script(completion([SECOND]))
    refreshed = app_server.client.post(
        f"{ARTISTS}/{artist_id}/article", params={"refresh": "true"}, headers=AUTH
    )
    assert refreshed.status_code == 200
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    item = tree.css("#versions .version")[0]
    assert "Written again from the catalog's facts" in item.text()
    assert item.css_first("a.diff-link") is not None
    page = html(app_server.client.get(f"{base}/2/diff"))
    assert page.css("pre.diff ins") and page.css("pre.diff del")
    same = html(app_server.client.get(f"{base}/2/diff", params={"against": 2}))
    assert same.css_first("pre.diff") is None
