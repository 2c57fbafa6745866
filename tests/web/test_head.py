"""The pages answer HEAD as they answer GET (status and headers, no body); the form never does."""

from __future__ import annotations

import pytest

from tests.articles.test_stored_html import assert_head_like_get
from tests.support import LiveServer, create_artist

PAGE_HEADERS = ("content-security-policy", "x-content-type-options", "referrer-policy")


@pytest.mark.parametrize("query", ["", "?q=nina&page=1"])
def test_head_catalog_then_like_get(server: LiveServer, query: str) -> None:
    create_artist(server)
    head = assert_head_like_get(server, f"/{query}")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert all(head.headers.get(name) for name in PAGE_HEADERS)


def test_head_artist_page_then_like_get(server: LiveServer) -> None:
    artist = create_artist(server)
    head = assert_head_like_get(server, f"/artists/{artist['id']}?language=en&length=short")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("artist_id", ["999", "not-a-number"])
def test_head_unknown_artist_page_then_the_gets_404(server: LiveServer, artist_id: str) -> None:
    assert assert_head_like_get(server, f"/artists/{artist_id}").status_code == 404


def test_head_portrait_form_then_405_and_nothing_started(server: LiveServer) -> None:
    artist = create_artist(server)
    response = server.client.head(f"/artists/{artist['id']}/portrait")
    assert response.status_code == 405 and "HEAD" not in response.headers["allow"]
    assert server.sqlite_rows("SELECT id FROM articles") == []
