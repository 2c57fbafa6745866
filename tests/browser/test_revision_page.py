"""Asking for a revision from the artist page in real headless Chromium, against a real Atelier and the
scripted upstream: the form (its token in the POST's body), the job page following the revision live, the
versions listed with their instructions, and what the revision changed."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.support import screenshot
from tests.fakes.upstream import completion
from tests.support import ARTISTS, AUTH, TOKEN, MakeServer, add_artist

pytestmark = pytest.mark.browser

FIRST = [
    "# Nina Simone\n\n",
    "She sang jazz in 1960. ",
    "She played piano.\n\n",
    "## Legacy\n\nStill sung.\n",
]
SECOND = [
    "# Nina Simone\n\n",
    "She sang soul in the 1970s, ",
    *(f"w{i} " for i in range(40)),
    "She played piano.\n\n",
    "## Legacy\n\nStill sung.\n",
]
INSTRUCTION = "shorter, and more on the 1970s <b>now</b>"


def test_a_revision_asked_on_the_page_is_followed_live_then_listed_with_what_it_changed(
    make_app: MakeServer, upstream: Any, page: Page
) -> None:
    upstream.script(completion(FIRST), completion(SECOND, delay=0.02))
    with make_app() as server:
        artist_id = add_artist(server)
        stored = server.client.post(f"{ARTISTS}/{artist_id}/article", headers=AUTH)
        assert stored.status_code == 200, stored.text

        page.goto(f"{server.url}/artists/{artist_id}")
        expect(page.locator("#versions .version")).to_have_count(1)
        page.get_by_label("What should change in version 1?").fill(INSTRUCTION)
        page.get_by_label("API token").fill(TOKEN)
        page.get_by_role("button", name="Ask for a revision").click()

        # the revision's job page follows it live, then the address becomes the artist page again
        expect(page.locator(".revision-note")).to_contain_text("Revising version 1")
        expect(page.locator("#portrait .portrait-status")).to_contain_text("Done:", timeout=15_000)
        expect(page.locator("#portrait .portrait-body")).to_contain_text("She sang soul in the 1970s")
        expect(page.locator("#portrait .portrait-body")).to_contain_text("w39")
        assert page.url == f"{server.url}/artists/{artist_id}?language=en&length=long"
        assert "token" not in page.url.lower() and TOKEN not in page.url
        screenshot(page, "revision-done")

        page.reload()
        expect(page.locator("#portrait .stored-meta")).to_contain_text("version 2")
        versions = page.locator("#versions .version")
        expect(versions).to_have_count(2)
        expect(versions.first.locator("q.instruction")).to_have_text(INSTRUCTION)
        expect(versions.first).to_contain_text("Revision of version 1")
        screenshot(page, "revision-versions")

        versions.first.get_by_role("link", name="What changed").click()
        expect(page.locator("h1")).to_contain_text("what version 2 changed")
        expect(page.locator("pre.diff del").first).to_have_text("jazz")
        expect(page.locator("pre.diff ins").first).to_contain_text("soul")
        assert page.locator("pre.diff b").count() == 0 and page.locator("main b").count() == 0
        screenshot(page, "revision-diff")
    sent = upstream.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "".join(FIRST)
