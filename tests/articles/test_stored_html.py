"""Reads at the speed of bytes (issue 10): a stored version keeps its HTML, rendered once when it was stored
with the renderer's version, and reads serve it as stored; every stored representation answers HEAD."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import pytest

from app.articles.render import RENDERER_VERSION, render_markdown
from app.articles.service import ArticleService
from app.db import create_engine, create_sessionmaker
from tests.articles.test_router import MARKDOWN, MARKDOWN_TYPE, PIAF, article_path, store
from tests.fakes.upstream import FakeUpstream
from tests.support import ARTISTS, LiveServer, create_artist

OLD_HTML = "<p>rendered by an older renderer</p>\n"


def stored_rendering(server: LiveServer, article_id: int) -> tuple[str, int]:
    ((html, version),) = server.sqlite_rows(
        f"SELECT html, renderer_version FROM articles WHERE id = {article_id}"
    )
    return html, version


def make_outdated(server: LiveServer, article_id: int) -> None:
    """As if the article had been stored before RENDERER_VERSION was bumped."""
    path = server.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE articles SET html = ?, renderer_version = ? WHERE id = ?",
            (OLD_HTML, RENDERER_VERSION - 1, article_id),
        )


def refresh(server: LiveServer, batch: int = 200) -> int:
    async def go() -> int:
        engine = create_engine(server.settings.database_url)
        try:
            service = ArticleService(create_sessionmaker(engine), upstream_configured=False)
            return await service.refresh_renderings(batch)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def replace_stored_html(server: LiveServer, article_id: int, html: str) -> None:
    """Write other HTML into the stored row, of the current renderer: a read that rendered the markdown
    again would show the rendering, one that serves what was stored shows this."""
    path = server.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE articles SET html = ?, renderer_version = ? WHERE id = ?",
            (html, RENDERER_VERSION, article_id),
        )


class TestRenderOnce:
    def test_store_then_row_keeps_html_and_renderer_version(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        stored = store(server, artist["id"])
        assert stored_rendering(server, stored.id) == (render_markdown(MARKDOWN), RENDERER_VERSION)
        assert stored.html == render_markdown(MARKDOWN)

    def test_read_then_stored_html_served_without_rendering(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        stored = store(server, artist["id"])
        html = "<p>the HTML stored with this version</p>\n"
        replace_stored_html(server, stored.id, html)
        latest = server.client.get(article_path(artist["id"]))
        assert latest.status_code == 200, latest.text
        assert latest.json()["html"] == html
        version = server.client.get(article_path(artist["id"], "/versions/1"))
        assert version.status_code == 200 and version.json()["html"] == html
        page = server.client.get(f"/artists/{artist['id']}")
        assert page.status_code == 200, page.text
        assert html.strip() in page.text  # the page embeds the stored HTML as it is

    def test_read_when_renderer_version_old_then_rendered_in_memory_never_the_old_html(
        self, server: LiveServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        artist = create_artist(server, **PIAF)
        stored = store(server, artist["id"])
        make_outdated(server, stored.id)
        for _ in range(2):
            body = server.client.get(article_path(artist["id"])).json()
            assert body["html"] == render_markdown(MARKDOWN) != OLD_HTML
        page = server.client.get(f"/artists/{artist['id']}").text
        assert "older renderer" not in page and "Belleville" in page
        warnings = [r for r in caplog.records if "renderer version" in r.getMessage()]
        assert len(warnings) == 1  # logged once, not on every read
        assert stored_rendering(server, stored.id) == (
            OLD_HTML,
            RENDERER_VERSION - 1,
        )  # a read writes nothing

    def test_refresh_renderings_when_old_then_rendered_again_in_batches(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        articles = [store(server, artist["id"], markdown=f"# Version {n}\n") for n in range(5)]
        current = store(server, artist["id"])
        for article in articles:
            make_outdated(server, article.id)
        assert refresh(server, batch=2) == 5
        for n, article in enumerate(articles):
            assert stored_rendering(server, article.id) == (
                render_markdown(f"# Version {n}\n"),
                RENDERER_VERSION,
            )
        assert stored_rendering(server, current.id) == (render_markdown(MARKDOWN), RENDERER_VERSION)
        assert refresh(server) == 0  # nothing left of another version


# --- HEAD -------------------------------------------------------------------------------------------------

SAME_HEADERS = ("etag", "content-type", "content-length", "vary", "cache-control")


def assert_head_like_get(
    server: LiveServer, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    got = server.client.get(path, headers=headers)
    head = server.client.head(path, headers=headers)
    assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
    assert head.content == b""
    for name in SAME_HEADERS:
        assert head.headers.get(name) == got.headers.get(name), (path, name)
    assert got.content and int(got.headers["content-length"]) == len(got.content)
    return head


class TestHead:
    @pytest.mark.parametrize("suffix", ["", "/versions/1"])
    @pytest.mark.parametrize("accept", [{}, MARKDOWN_TYPE])
    def test_head_article_then_get_status_and_headers_no_body_and_304(
        self, server: LiveServer, suffix: str, accept: dict[str, str]
    ) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        path = article_path(artist["id"], suffix)
        head = assert_head_like_get(server, path, accept)
        assert head.status_code == 200 and head.headers["etag"]
        expected_type = "text/markdown" if accept else "application/json"
        assert head.headers["content-type"].startswith(expected_type)
        unchanged = server.client.head(path, headers={**accept, "If-None-Match": head.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert unchanged.headers["etag"] == head.headers["etag"]

    def test_head_versions_then_like_get(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        head = assert_head_like_get(server, article_path(artist["id"], "/versions"))
        assert head.status_code == 200 and head.headers["content-type"].startswith("application/json")

    @pytest.mark.parametrize("suffix", ["", "/versions", "/versions/7"])
    def test_head_when_nothing_there_then_the_gets_404(self, server: LiveServer, suffix: str) -> None:
        artist = create_artist(server, **PIAF)
        path = (
            article_path(artist["id"], suffix) if suffix != "/versions" else f"{ARTISTS}/999/article/versions"
        )
        head = assert_head_like_get(server, path)
        assert head.status_code == 404

    def test_head_stream_then_405_and_nothing_started(
        self, app_server: LiveServer, upstream: FakeUpstream
    ) -> None:
        artist = create_artist(app_server, **PIAF)
        for path in (article_path(artist["id"], "/stream"), "/api/v1/jobs/abc123/stream"):
            response = app_server.client.head(path, params={"length": "short"})
            assert response.status_code == 405, (path, response.status_code)
            assert "HEAD" not in response.headers["allow"] and "GET" in response.headers["allow"]
        # The 405 is answered by the router before any endpoint runs: nothing could have started a job.
        assert upstream.requests == []
        assert app_server.sqlite_rows("SELECT id FROM articles") == []
        status = app_server.client.get(article_path(artist["id"]), params={"length": "short"})
        assert status.status_code == 404
