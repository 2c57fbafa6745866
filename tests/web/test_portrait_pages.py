"""The portrait area of the pages, without JavaScript: server-rendered portraits, the Generate form, the
self-refreshing job page, and the Content-Security-Policy."""

from __future__ import annotations

import time
from typing import Any

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from tests.fakes.upstream import Reply, chunk, completion, event, hang
from tests.support import LiveServer, MakeServer, add_artist, read_sse

HOSTILE = (
    "# Portrait\n\n<script>alert(1)</script>\n\n[click](javascript:alert(1)) "
    "![tracker](https://evil.example/pixel.png) <img src=x onerror=alert(1)>\n\n"
    'data: {"type":"done"}\n\nThe end.\n'
)


def html(response: Any) -> HTMLParser:
    assert response.headers["content-type"].startswith("text/html")
    return HTMLParser(response.text)


def test_pages_carry_a_content_security_policy(app_server: LiveServer) -> None:
    artist_id = add_artist(app_server)
    for path in ("/", f"/artists/{artist_id}"):
        policy = app_server.client.get(path).headers["content-security-policy"]
        assert "script-src 'self'" in policy and "img-src 'self' data:" in policy
        assert "unsafe-inline" not in policy


def test_artist_page_without_portrait_offers_the_generate_form(app_server: LiveServer) -> None:
    artist_id = add_artist(app_server)
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    form = tree.css_first("#portrait form.portrait-form")
    assert form is not None and form.attributes["method"] == "post"
    assert form.attributes["action"] == f"/artists/{artist_id}/portrait"
    assert tree.css_first("#portrait .generate-button").text(strip=True) == "Generate portrait"  # type: ignore[union-attr]
    status = tree.css_first("#portrait [aria-live=polite]")
    assert status is not None and status.attributes["role"] == "status"
    assert tree.css_first("#portrait .demo-notice") is None  # a real upstream is configured here


def test_demo_writer_is_announced_on_the_page(server: LiveServer) -> None:
    artist_id = add_artist(server)
    tree = html(server.client.get(f"/artists/{artist_id}"))
    notice = tree.css_first("#portrait .demo-notice")
    assert notice is not None and "demo writer" in notice.text()


def test_no_javascript_generate_ends_on_the_stored_portrait(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(completion(["# Nina\n\n", "Soul ", "music."], delay=0.05))
    artist_id = add_artist(app_server)
    posted = app_server.client.post(
        f"/artists/{artist_id}/portrait", data={"language": "en", "length": "short"}
    )
    assert posted.status_code == 303
    job_url = posted.headers["location"]
    assert job_url.startswith(f"/artists/{artist_id}/portrait/jobs/")
    page = app_server.client.get(job_url)
    assert page.status_code == 200
    tree = html(page)
    refresh = tree.css_first("noscript meta[http-equiv=refresh]")
    assert refresh is not None and refresh.attributes["content"] == "2"
    deadline = time.monotonic() + 5
    while (page := app_server.client.get(job_url)).status_code == 200:
        assert time.monotonic() < deadline, "the job page never redirected"
        time.sleep(0.05)
    assert page.status_code == 303
    landed = app_server.client.get(page.headers["location"])
    tree = html(landed)
    body = tree.css_first("#portrait .portrait-body")
    assert body is not None and body.css_first("h1").text() == "Nina"  # type: ignore[union-attr]
    assert "Soul music." in body.text()
    assert "version 1" in tree.css_first("#portrait .stored-meta").text()  # type: ignore[union-attr]


def test_no_javascript_job_page_shows_progress_so_far(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("# So far\n\nHalf ")), hang()]))
    artist_id = add_artist(app_server)
    job_url = app_server.client.post(f"/artists/{artist_id}/portrait").headers["location"]
    deadline = time.monotonic() + 5
    while "Half" not in (page := app_server.client.get(job_url)).text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    tree = html(page)
    assert "Writing…" in tree.css_first(".job-progress").text()  # type: ignore[union-attr]
    assert tree.css_first("#portrait .portrait-body h1").text() == "So far"  # type: ignore[union-attr]


def test_generate_form_when_rate_limited_then_page_says_when(make_app: Any) -> None:
    with make_app(generation_rate="1/minute") as server:
        first, second = add_artist(server, "A"), add_artist(server, "B")
        assert server.client.post(f"/artists/{first}/portrait").status_code == 303
        refused = server.client.post(f"/artists/{second}/portrait")
        assert refused.status_code == 429
        notice = html(refused).css_first("#portrait .portrait-notice")
        assert notice is not None and "try again in" in notice.text()


def test_stored_hostile_portrait_is_rendered_inert(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(completion([HOSTILE]))
    artist_id = add_artist(app_server)
    assert app_server.client.post(f"/api/v1/collection/artists/{artist_id}/article").status_code == 200
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    body = tree.css_first("#portrait .portrait-body")
    assert body is not None
    assert body.css("script") == [] and body.css("img") == []
    assert all(not (a.attributes.get("href") or "").startswith("javascript") for a in body.css("a"))
    text = body.text()
    assert "<script>alert(1)</script>" in text and "The end." in text and "tracker" in text
    for node in body.traverse():
        assert not any(name.startswith("on") for name in node.attributes)


def test_stored_planned_portrait_page_lists_its_sections(make_server: MakeServer) -> None:
    with make_server(writer_plan="always", demo_tokens_per_second=5000) as server:
        artist_id = add_artist(server)
        before = html(server.client.get(f"/artists/{artist_id}"))
        nav = before.css_first("#portrait nav.portrait-toc")
        assert nav is not None and "hidden" in nav.attributes and not nav.css("li")  # filled in by the script
        base = f"/api/v1/collection/artists/{artist_id}/article"
        with server.client.stream("GET", f"{base}/stream", params={"length": "medium"}) as response:
            events = read_sse(response)
        (outline,) = [e.data["sections"] for e in events if e.event == "outline"]
        tree = html(server.client.get(f"/artists/{artist_id}", params={"length": "medium"}))
        nav = tree.css_first("#portrait nav.portrait-toc")
        assert nav is not None and "hidden" not in nav.attributes
        assert nav.attributes["aria-label"]
        items = nav.css("ol > li")
        assert [item.css_first(".toc-title").text() for item in items] == [s["title"] for s in outline]  # type: ignore[union-attr]
        assert [item.css_first(".toc-words").text() for item in items] == [  # type: ignore[union-attr]
            f"about {s['target_words']:,} words" for s in outline
        ]
        assert all(item.attributes["data-state"] == "done" for item in items)


def test_stored_unplanned_portrait_page_has_no_contents(app_server: LiveServer, upstream: Any) -> None:
    upstream.script(completion(["# Nina\n\n", "Soul."]))
    artist_id = add_artist(app_server)
    with app_server.client.stream(
        "GET", f"/api/v1/collection/artists/{artist_id}/article/stream"
    ) as response:
        assert [e.event for e in read_sse(response)][-1] == "done"
    tree = html(app_server.client.get(f"/artists/{artist_id}"))
    assert tree.css_first("#portrait .stored-meta") is not None
    nav = tree.css_first("#portrait nav.portrait-toc")
    assert nav is not None and "hidden" in nav.attributes and not nav.css("li")
