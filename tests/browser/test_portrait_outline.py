"""A planned portrait on the artist page, in real headless Chromium against a real Atelier and its demo
writer (ATELIER_WRITER_PLAN=always): the table of contents fills in as the sections are written, the
progress shows one word count, and a stored planned portrait shows the same contents."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from app.kit.text import count_words
from tests.browser.support import screenshot
from tests.fakes.upstream import Reply, chunk, completion, drop, event, hang
from tests.support import LiveServer, MakeServer, add_artist, read_sse

pytestmark = pytest.mark.browser

# Fast enough for a quick test, slow enough (about 2 s for a long portrait) to watch it being written.
PLANNED = {"writer_plan": "always", "demo_tokens_per_second": 1500}

# One reading of the portrait area, taken in one turn of the page's event loop so its parts agree.
SNAPSHOT = """() => {
  const root = document.getElementById("portrait");
  const progress = root.querySelector(".portrait-progress");
  return {
    states: [...root.querySelectorAll(".portrait-toc li")].map((li) =>
      li.getAttribute("aria-current") === "step" ? "current" : li.dataset.state),
    currents: root.querySelectorAll(".portrait-toc [aria-current]").length,
    meta: root.querySelector(".portrait-live .portrait-meta").textContent,
    status: root.querySelector(".portrait-status").textContent,
    value: progress.value,
    max: progress.max,
  };
}"""


def toc(page: Page) -> list[dict[str, Any]]:
    return page.locator("#portrait .portrait-toc li").evaluate_all(
        """items => items.map((li) => ({
          title: li.querySelector('.toc-title').textContent,
          words: li.querySelector('.toc-words').textContent,
          state: li.dataset.state,
          current: li.getAttribute('aria-current'),
          href: li.querySelector('.toc-title').getAttribute('href'),
          target: (() => {
            const href = li.querySelector('.toc-title').getAttribute('href');
            const heading = href && document.getElementById(href.slice(1));
            return heading ? [heading.tagName, heading.textContent] : null;
          })(),
        }))"""
    )


def word_counts(text: str) -> list[int]:
    """Every word count a line of the page shows: "1,234 words", "1,234 of about 3,000 words"."""
    return [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:of about [\d,]+ )?words", text)]


def stored_outline(server: LiveServer, artist_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The outline a replay of the stored portrait announces, and the stored article."""
    base = f"/api/v1/collection/artists/{artist_id}/article"
    with server.client.stream("GET", f"{base}/stream", params={"length": "long"}) as response:
        events = read_sse(response)
    outlines = [e.data["sections"] for e in events if e.event == "outline"]
    assert len(outlines) == 1
    article = server.client.get(base, params={"length": "long"}).json()
    return outlines[0], article


def test_planned_portrait_fills_in_its_contents_with_one_word_count(
    make_server: MakeServer, page: Page
) -> None:
    with make_server(**PLANNED) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        snapshots: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while True:
            snapshot = page.evaluate(SNAPSHOT)
            if not snapshots or snapshot != snapshots[-1]:
                snapshots.append(snapshot)
            if "Done:" in snapshot["status"]:
                break
            assert time.monotonic() < deadline, snapshots[-1]
            if len(snapshots) == 12:
                screenshot(page, "portrait-outline-mid-stream")
            time.sleep(0.03)
        screenshot(page, "portrait-outline-done")

        outline, article = stored_outline(server, artist_id)
        sections = len(outline)
        assert sections >= 2

        writing = [s for s in snapshots if "Done:" not in s["status"] and s["states"]]
        assert len(writing) >= 3, snapshots  # caught while it was being written
        for snapshot in writing:
            states = snapshot["states"]
            assert len(states) == sections
            # done ones first, then the one being written, then the ones to come
            assert re.fullmatch(r"(done,)*(current,)?(pending,)*", ",".join(states) + ","), states
            assert snapshot["currents"] <= 1
            # one count: the progress line says what the bar shows
            (shown,) = word_counts(snapshot["meta"])
            assert shown == snapshot["value"] or (shown > snapshot["max"] == snapshot["value"])
            assert word_counts(snapshot["status"]) in ([], [shown])
        progress = [states.count("done") for states in (s["states"] for s in writing)]
        assert progress == sorted(progress)  # done in order, never undone
        assert len(set(progress)) >= 2  # seen filling in

        # the end: every entry done and linked to its heading; the bar and both lines on the stored count
        entries = toc(page)
        assert [e["title"] for e in entries] == [s["title"] for s in outline]
        assert [e["words"] for e in entries] == [f"about {s['target_words']:,} words" for s in outline]
        assert all(e["state"] == "done" and e["current"] is None for e in entries)
        assert [e["href"] for e in entries] == [f"#portrait-section-{k}" for k in range(1, sections + 1)]
        assert [e["target"] for e in entries] == [["H2", s["title"]] for s in outline]
        end = snapshots[-1]
        words = article["words"]
        assert words == count_words(article["markdown"])
        assert word_counts(end["meta"]) == [words] and word_counts(end["status"]) == [words]
        assert end["value"] == min(words, end["max"]) and end["max"] == 3000
        assert "continuing" not in page.locator("#portrait .portrait-body").inner_text()

        page.locator("#portrait .portrait-toc a").nth(sections - 1).click()  # the links work
        expect(page).to_have_url(re.compile(rf"#portrait-section-{sections}$"))


def test_replayed_planned_portrait_shows_the_same_contents(
    make_server: MakeServer, page: Page, browser: Browser
) -> None:
    with make_server(**PLANNED) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")  # before the portrait exists: Generate
        outline, article = stored_outline(server, artist_id)  # written and stored meanwhile
        titles = [s["title"] for s in outline]

        page.get_by_role("button", name="Generate portrait").click()  # reads the stored one: a replay
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Done:")
        expect(page.locator("#portrait .portrait-live .portrait-meta")).to_contain_text("Stored portrait")
        entries = toc(page)
        assert [e["title"] for e in entries] == titles
        assert all(e["state"] == "done" and e["current"] is None for e in entries)
        assert [e["target"] for e in entries] == [["H2", title] for title in titles]
        assert word_counts(page.locator("#portrait .portrait-live .portrait-meta").inner_text()) == [
            article["words"]
        ]

        page.reload()  # the stored page: the server renders the contents, the script links them
        entries = toc(page)
        assert [e["title"] for e in entries] == titles
        assert [e["words"] for e in entries] == [f"about {s['target_words']:,} words" for s in outline]
        assert [e["target"] for e in entries] == [["H2", title] for title in titles]

        context = browser.new_context(java_script_enabled=False)
        try:
            static = context.new_page()
            static.goto(f"{server.url}/artists/{artist_id}")
            items = static.locator("#portrait .portrait-toc li .toc-title")
            expect(items).to_have_text(titles)
        finally:
            context.close()


def test_the_live_count_is_the_servers(make_app: MakeServer, upstream: Any, page: Page) -> None:
    """Mid-stream the page counts words as the server does: runs of letters or digits, in any script."""
    text = (
        "# Count me\n\nDon't re-record: naïve café, Ångström 2024, x_y, 日本語 テスト, "
        "Ελληνικά ½ ١٢٣ — **bold**words `code` [link](https://example.org) "
    )
    pieces = [text[i : i + 7] for i in range(0, len(text), 7)]
    upstream.script(Reply(steps=[event(chunk(role="assistant")), *(event(chunk(p)) for p in pieces), hang()]))
    with make_app(job_grace=0.2) as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        meta = page.locator("#portrait .portrait-live .portrait-meta")
        expect(meta).to_contain_text(f"{count_words(text)} of about")
        assert word_counts(meta.inner_text()) == [count_words(text)]
        page.get_by_role("button", name="Stop").click()


def test_job_page_shows_one_count_and_the_contents(make_server: MakeServer, page: Page) -> None:
    """The page a Generate without JavaScript lands on, opened with JavaScript: the script follows the job,
    and its count replaces the server's (as of the page's load) instead of contradicting it."""
    with make_server(writer_plan="always", demo_tokens_per_second=600) as server:
        artist_id = add_artist(server)
        posted = server.client.post(
            f"/artists/{artist_id}/portrait", data={"language": "en", "length": "medium"}
        )
        assert posted.status_code == 303
        page.goto(server.url + posted.headers["location"])
        expect(page.locator(".job-progress")).to_be_hidden()
        expect(page.locator("#portrait .portrait-toc li[aria-current=step]")).to_have_count(1)
        meta = page.locator("#portrait .portrait-live .portrait-meta")
        expect(meta).to_contain_text("of about 1,500 words")
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Done:", timeout=20_000)
        shown = page.locator("#portrait .portrait-live .portrait-meta, #portrait .portrait-status")
        counts = [word_counts(line) for line in shown.all_inner_texts()]
        expect(page.locator(".job-progress")).to_be_hidden()
        words = server.client.get(
            f"/api/v1/collection/artists/{artist_id}/article", params={"length": "medium"}
        ).json()["words"]
        assert counts == [[words], [words]]
        expect(page.locator("#portrait .portrait-toc li[data-state=done]")).to_have_count(
            page.locator("#portrait .portrait-toc li").count()
        )


def test_a_seam_is_invisible_in_the_text(make_app: MakeServer, upstream: Any, page: Page) -> None:
    """The connection drops mid-word and the portrait is continued: one text, no gap, no repeat, and at most
    a word in the status while it goes on."""
    upstream.script(
        Reply(steps=[event(chunk(role="assistant")), event(chunk("# Seam\n\nHalf wa")), drop()]),
        completion(["y there, ", "and on to the end."], delay=0.3),
    )
    with make_app() as server:
        artist_id = add_artist(server)
        page.goto(f"{server.url}/artists/{artist_id}")
        page.get_by_role("button", name="Generate portrait").click()
        status = page.locator("#portrait .portrait-status")
        expect(status).to_contain_text("continuing")
        expect(status).to_contain_text("Done:")
        body = page.locator("#portrait .portrait-body")
        expect(body.locator("p")).to_have_text(["Half way there, and on to the end."])
        expect(page.locator("#portrait .portrait-toc")).to_be_hidden()  # written without a plan
        markdown = server.client.get(f"/api/v1/collection/artists/{artist_id}/article").json()["markdown"]
        assert markdown == "# Seam\n\nHalf way there, and on to the end."
    assert len(upstream.requests) == 2
