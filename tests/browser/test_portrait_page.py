"""The portrait page in real headless Chromium, against a real Atelier and the scripted upstream."""

from __future__ import annotations

import re
import time
from itertools import pairwise
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.support import screenshot
from tests.fakes.tcp_proxy import tcp_proxy
from tests.fakes.upstream import Reply, chunk, completion, drop, error_reply, event, hang
from tests.support import TOKEN, LiveServer, MakeServer, add_artist, wait_until

pytestmark = pytest.mark.browser
WORDS = [f"w{i} " for i in range(60)]


def body_text(page: Page) -> str:
    return page.locator("#portrait .portrait-body").inner_text()


def wait_done(page: Page) -> None:
    expect(page.locator("#portrait .portrait-status")).to_contain_text("Done:", timeout=15_000)


def test_generate_shows_the_portrait_progressively_then_done(
    make_app: MakeServer, upstream: Any, page: Page, browser: Browser
) -> None:
    pieces = [
        "# Nina Simone\n\n",
        "The High Priestess of Soul. ",
        *WORDS,
        "\n\n## Legacy\n\n",
        "Still **sung**.",
    ]
    upstream.script(completion(pieces, delay=0.04))
    with make_app() as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        states: list[str] = []
        deadline = time.monotonic() + 15
        while "Done:" not in page.locator("#portrait .portrait-status").inner_text():
            assert time.monotonic() < deadline
            text = body_text(page)
            if text and (not states or text != states[-1]):
                states.append(text)
                if len(states) == 3:
                    screenshot(page, "portrait-mid-stream")
            time.sleep(0.05)
        screenshot(page, "portrait-done")
        assert len(states) >= 3, states  # the text grew in several visible steps
        # it only grows; the one thing that may shrink is an emphasis marker of the unfinished tail ("**")
        # turning into bold once its closing marker has arrived
        shown = [state.replace("*", "") for state in states]
        assert all(len(a) <= len(b) for a, b in pairwise(shown)), states
        expect(page.locator("#portrait .portrait-body h1")).to_have_text("Nina Simone")
        expect(page.locator("#portrait .portrait-body strong")).to_have_text("sung")
        assert "w59" in body_text(page)
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Done:")
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()

        # reload with JavaScript off: the stored portrait is rendered by the server
        context = browser.new_context(java_script_enabled=False)
        try:
            static = context.new_page()
            static.goto(f"{server.url}/artists/{artist_id}")
            expect(static.locator("#portrait .portrait-body h1")).to_have_text("Nina Simone")
            expect(static.locator("#portrait .portrait-body strong")).to_have_text("sung")
            expect(static.locator("#portrait .stored-meta")).to_contain_text("version 1")
        finally:
            context.close()
    assert len(upstream.requests) == 1


def test_without_javascript_generate_ends_on_the_stored_portrait(
    app_server: LiveServer, upstream: Any, browser: Browser
) -> None:
    upstream.script(completion(["# Written\n\n", "Without ", "scripts."], delay=0.3))
    artist_id = add_artist(app_server)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{app_server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page).to_have_url(re.compile(r"/portrait/jobs/"))
        expect(page.locator(".job-progress")).to_contain_text("Writing")
        expect(page.locator("#portrait .stored-meta")).to_be_visible(timeout=15_000)  # after a refresh or two
        expect(page).to_have_url(re.compile(rf"/artists/{artist_id}\?"))
        expect(page.locator("#portrait .portrait-body")).to_contain_text("Without scripts.")
    finally:
        context.close()


def test_stop_closes_the_stream_and_the_job_ends_after_the_grace(
    make_app: MakeServer, upstream: Any, page: Page
) -> None:
    upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("Once upon a time ")), hang()]))
    grace = 0.4
    with make_app(job_grace=grace) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page.locator("#portrait .portrait-body")).to_contain_text("Once upon a time")
        page.get_by_role("button", name="Stop").click()
        stopped_at = time.monotonic()
        closed = upstream.wait_closed(0, timeout=grace + 3)
        assert closed.disconnected_by_client and closed.closed_at is not None
        assert grace * 0.7 <= closed.closed_at - stopped_at <= grace + 1.5
        expect(page.locator("#portrait .portrait-body")).to_contain_text("Once upon a time")  # kept
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Stopped")
        expect(page.get_by_role("button", name="Generate portrait")).to_be_enabled()


# A failure after some text is continued by default (test_portrait_outline.py shows the seam is invisible);
# with continuation off it ends the portrait with its error.
NO_CONTINUATION = {"llm_continuation": "off"}
ERRORS = [
    ("auth", {}, error_reply(401), "misconfigured"),
    ("upstream-rate", {}, error_reply(429, headers={"retry-after": "7"}), "7 seconds"),
    ("upstream-error", {}, error_reply(500), "went wrong"),
    ("connection", NO_CONTINUATION, Reply(steps=[event(chunk("Half ")), drop()]), "connection"),
    (
        "timeout",
        {"llm_idle_timeout": 0.3, **NO_CONTINUATION},
        Reply(steps=[event(chunk("Half ")), hang()]),
        "too long",
    ),
]


@pytest.mark.parametrize(("name", "settings", "reply", "message"), ERRORS, ids=[e[0] for e in ERRORS])
def test_each_error_shows_its_message_and_retry_works(
    make_app: MakeServer,
    upstream: Any,
    page: Page,
    name: str,
    settings: dict[str, Any],
    reply: Reply,
    message: str,
) -> None:
    upstream.script(reply, completion(["# Second try\n\n", "worked."]))
    with make_app(**settings) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        status = page.locator("#portrait .portrait-status")
        expect(status).to_contain_text(message, timeout=10_000)
        if name == "auth":
            screenshot(page, "portrait-error")
        retry = page.get_by_role("button", name="Retry")
        expect(retry).to_be_visible()
        retry.click()
        wait_done(page)
        expect(page.locator("#portrait .portrait-body h1")).to_have_text("Second try")


def test_rate_limit_and_open_circuit_say_when_to_retry(
    make_app: MakeServer, upstream: Any, page: Page
) -> None:
    upstream.script(error_reply(503))
    with make_app(generation_rate="1/minute") as server:
        first, second = add_artist(server, "A"), add_artist(server, "B")
        # one generation from this address (not a token holder) spends its allowance; the circuit stays
        # closed (an open circuit answers first: a request it refuses starts nothing and is not counted)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            client.get(f"/api/v1/collection/artists/{first}/article/stream")
        page.goto(f"{server.url}/artists/{second}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page.locator("#portrait .portrait-status")).to_contain_text("many new portraits")
        expect(page.locator("#portrait .portrait-status")).to_contain_text("try again in")
    with make_app(breaker_fail_max=1, breaker_reset_timeout=30) as server:
        first, second = add_artist(server, "C"), add_artist(server, "D")
        upstream.script(error_reply(503))
        server.client.get(f"/api/v1/collection/artists/{first}/article/stream")
        page.goto(f"{server.url}/artists/{second}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page.locator("#portrait .portrait-status")).to_contain_text("paused")
        expect(page.locator("#portrait .portrait-status")).to_contain_text(
            re.compile(r"try again in \d+ seconds")
        )


HOSTILE = [
    "# Hostile\n\n",
    "<script>window.__pwned = 1</script>\n\n",
    "[click me](javascript:window.__pwned=2) and [ok](https://example.org/a) ",
    '![tracker](https://evil.example/pixel.png) <img src=x onerror="window.__pwned=3">\n\n',
    'data: {"type":"done","article_id":1}\n\nevent: done\n\n',
    "id: fake:999\n\n",
    "The end.",
]


def test_hostile_portrait_renders_inert_and_complete(
    app_server: LiveServer, upstream: Any, page: Page
) -> None:
    upstream.script(completion(HOSTILE, delay=0.02))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    artist_id = add_artist(app_server)
    page.goto(f"{app_server.url}/artists/{artist_id}")
    page.get_by_role("button", name="Generate portrait").click()
    wait_done(page)
    body = page.locator("#portrait .portrait-body")
    expect(body).to_contain_text("The end.")
    expect(body).to_contain_text('data: {"type":"done","article_id":1}')
    expect(body).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None
    assert body.locator("script, img, iframe").count() == 0
    hrefs = body.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert hrefs == ["https://example.org/a"]
    assert not [url for url in requests if "evil.example" in url or url.startswith("https://example.org")]


def test_network_drop_mid_stream_resumes_without_repeat_or_gap(
    make_app: MakeServer, upstream: Any, page: Page
) -> None:
    upstream.script(completion(WORDS, delay=0.04))
    with (
        make_app(sse_retry_ms=200, job_grace=5) as server,
        tcp_proxy(int(server.url.rsplit(":", 1)[1])) as proxy,
    ):
        artist_id = add_artist(server)
        page.goto(f"{proxy.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page.locator("#portrait .portrait-body")).to_contain_text("w10")
        assert proxy.cut() >= 1  # the stream's connection (and any other) is reset
        wait_done(page)
        assert body_text(page).split() == [word.strip() for word in WORDS]
    assert len(upstream.requests) == 1  # the job went on; the page resumed it


def test_regenerate_asks_for_the_token_once_and_sends_it_as_a_header(
    app_server: LiveServer, upstream: Any, page: Page
) -> None:
    upstream.script(*(completion([f"# Version {n}\n\n", "Written."]) for n in (1, 2, 3)))
    artist_id = add_artist(app_server)
    answers = iter(["not-the-token", TOKEN])
    prompts: list[str] = []

    def answer(dialog: Any) -> None:
        prompts.append(dialog.message)
        dialog.accept(next(answers))

    page.on("dialog", answer)
    streams: list[tuple[str, str | None]] = []
    page.on(
        "request",
        lambda request: (
            streams.append((request.url, request.headers.get("authorization")))
            if "/stream" in request.url
            else None
        ),
    )
    page.goto(f"{app_server.url}/artists/{artist_id}")
    regenerate = page.get_by_role("button", name="Regenerate")
    expect(regenerate).to_be_hidden()  # nothing stored yet
    page.get_by_role("button", name="Generate portrait").click()
    wait_done(page)
    expect(regenerate).to_be_visible()  # without a reload
    expect(page.get_by_role("button", name="Generate portrait")).to_be_hidden()

    body = page.locator("#portrait .portrait-body h1")
    status = page.locator("#portrait .portrait-status")
    regenerate.click()  # asks; the wrong token is refused and forgotten
    expect(status).to_contain_text("token was refused")
    assert page.evaluate("sessionStorage.getItem('atelier.apiToken')") is None
    regenerate.click()  # asks again
    expect(body).to_have_text("Version 2")
    expect(status).to_contain_text("Done:")
    regenerate.click()  # kept for the tab: no question this time
    expect(body).to_have_text("Version 3")
    expect(status).to_contain_text("Done:")

    assert len(prompts) == 2 and "token" in prompts[0]
    assert page.evaluate("sessionStorage.getItem('atelier.apiToken')") == TOKEN
    refreshes = [(url, auth) for url, auth in streams if "refresh=true" in url]
    assert [auth for _, auth in refreshes] == ["Bearer not-the-token", f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    assert not any(TOKEN in url for url, _ in streams)
    versions = app_server.client.get(f"/api/v1/collection/artists/{artist_id}/article/versions").json()
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]


def test_the_page_follows_the_text_only_for_a_reader_at_the_end(
    app_server: LiveServer, upstream: Any, page: Page
) -> None:
    paragraphs = [f"Paragraph {n}: " + "words that fill the line " * 12 + "\n\n" for n in range(150)]
    upstream.script(completion(paragraphs, delay=0.03))
    artist_id = add_artist(app_server)
    page.goto(f"{app_server.url}/artists/{artist_id}")
    page.get_by_role("button", name="Generate portrait").click()
    height = "document.scrollingElement.scrollHeight"
    gap = "(() => { const e = document.scrollingElement; return e.scrollHeight - e.clientHeight - e.scrollTop })()"

    def holds(condition: str) -> None:
        # polled from here: wait_for_function would evaluate a string, which the page's CSP forbids
        wait_until(lambda: page.evaluate(condition), timeout=10, what=condition)

    def grows_by(pixels: int) -> None:
        holds(f"{height} > {page.evaluate(height) + pixels}")

    holds(f"{height} > document.scrollingElement.clientHeight + 300")
    page.evaluate(f"window.scrollTo(0, {height})")  # the reader goes to the end...
    grows_by(600)
    assert page.evaluate(gap) <= 48  # ...and the page keeps them there
    page.evaluate("window.scrollTo(0, 200)")  # the reader scrolls back up...
    grows_by(600)
    assert page.evaluate("document.scrollingElement.scrollTop") == 200  # ...and stays where they are
    assert "Done:" not in page.locator("#portrait .portrait-status").inner_text()  # all while streaming


def test_on_a_phone_the_page_never_scrolls_sideways(
    app_server: LiveServer, upstream: Any, browser: Browser
) -> None:
    wide = [
        "# On a small screen\n\n",
        "A paragraph with a very long word: " + "Schwarzwälderkirschtorte" * 4 + ".\n\n",
        "| Year | Title | Medium | Place | Collection | Notes |\n|---|---|---|---|---|---|\n",
        "| 1964 | Mississippi Goddam | voice and piano | Carnegie Hall, New York | Philips Records | live |\n\n",
        "```text\n" + "a code line that does not wrap " * 6 + "\n```\n\n",
        "The end.",
    ]
    upstream.script(completion(wide, delay=0.02))
    artist_id = add_artist(app_server)
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(f"{app_server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        wait_done(page)
        overflow = "document.scrollingElement.scrollWidth - document.scrollingElement.clientWidth"
        assert page.evaluate(overflow) <= 0
        page.reload()  # the stored portrait, rendered by the server
        expect(page.locator("#portrait .portrait-body table")).to_be_visible()
        assert page.evaluate(overflow) <= 0
        # the wide parts scroll inside their own boxes instead
        for selector in ("#portrait .portrait-body table", "#portrait .portrait-body pre"):
            box = page.locator(selector)
            assert box.evaluate("e => e.scrollWidth > e.clientWidth"), selector
        screenshot(page, "portrait-phone")
    finally:
        context.close()


def test_the_portrait_works_from_the_keyboard(make_app: MakeServer, upstream: Any, page: Page) -> None:
    upstream.script(
        Reply(steps=[event(chunk(role="assistant")), event(chunk("Typed ")), hang()]),
        completion(["# By keys\n\n", "Done from the keyboard."]),
    )
    with make_app(job_grace=0.3) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")

        def tab_to(name: str) -> None:
            for _ in range(40):
                page.keyboard.press("Tab")
                if page.evaluate("document.activeElement?.textContent?.trim()") == name:
                    return
            raise AssertionError(f"{name} cannot be reached with Tab")

        tab_to("Generate portrait")
        page.keyboard.press("Enter")
        expect(page.locator("#portrait .portrait-body")).to_contain_text("Typed")
        tab_to("Stop")
        page.keyboard.press("Enter")
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Stopped")
        upstream.wait_closed(0, timeout=3)  # the job ended after the grace (before that, Generate rejoins it)
        tab_to("Generate portrait")
        page.keyboard.press(" ")
        wait_done(page)
        expect(page.locator("#portrait .portrait-body h1")).to_have_text("By keys")


def test_generate_again_right_after_stop_rejoins_the_job_without_repeating_text(
    make_app: MakeServer, upstream: Any, page: Page
) -> None:
    # the job writes, pauses (Stop and Generate again happen in the pause), then finishes
    upstream.script(completion(["Only once. ", "Then more."], delay=1.5))
    with make_app(job_grace=5) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        expect(page.locator("#portrait .portrait-body")).to_contain_text("Only once.")
        page.get_by_role("button", name="Stop").click()
        page.get_by_role("button", name="Generate portrait").click()  # within the grace: the same job
        wait_done(page)
        expect(page.locator("#portrait .portrait-live .portrait-meta")).to_contain_text(
            "Written ·"
        )  # not a replay
        assert body_text(page).split() == ["Only", "once.", "Then", "more."]
    assert len(upstream.requests) == 1
