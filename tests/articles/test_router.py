"""Stored portraits over real HTTP: JSON or markdown, ETags per representation, versions, staleness."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from selectolax.lexbor import LexborHTMLParser

from app.articles.models import Article
from app.articles.service import ArticleDraft, ArtistGone
from app.kit.text import count_words
from app.main import AppState
from tests.support import ARTISTS, AUTH, LiveServer, assert_error, create_artist

MARKDOWN_TYPE = {"Accept": "text/markdown"}
# The artist these tests create unless they name another (always with this genre).
PIAF: dict[str, Any] = {"name": "Édith Piaf", "genres": ["chanson"]}

MARKDOWN = (
    "# Édith Piaf\n\n"
    "A *voice* from Belleville, « La Vie en rose ».\n\n"
    "<script>alert('x')</script>\n\n"
    "[a trap](javascript:alert(1)) and [a source](https://example.org/piaf)\n\n"
    "Windows line\r\nend, trailing spaces   \n"
)


def store(server: LiveServer, artist_id: int, **overrides: Any) -> Article:
    """Store a finished portrait straight through the service, as a job would."""
    values: dict[str, Any] = {
        "artist_id": artist_id,
        "language": "en",
        "length": "long",
        "markdown": MARKDOWN,
        "model": "mistral-small-latest",
        "writer": "upstream",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 120, "completion_tokens": 3900},
        "duration_ms": 41_250,
        "ttft_ms": 480,
        "job_id": uuid.uuid4().hex,  # one article per job (a unique index)
        **overrides,
    }

    async def go(state: AppState) -> Article:
        return await state["articles"].store(ArticleDraft(**values))

    return server.call(go)


def article_path(artist_id: int, suffix: str = "") -> str:
    return f"{ARTISTS}/{artist_id}/article{suffix}"


class TestJson:
    def test_get_when_stored_then_every_field(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        stored = store(server, artist["id"])
        response = server.client.get(article_path(artist["id"]))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert body["article_id"] == stored.id
        assert body["artist_id"] == artist["id"]
        assert body["markdown"] == MARKDOWN
        assert body["model"] == "mistral-small-latest"
        assert body["writer"] == "upstream"
        assert body["language"] == "en" and body["length"] == "long"
        assert body["words"] == count_words(MARKDOWN) > 0
        assert body["version"] == 1
        assert body["stale"] is False
        assert body["truncated"] is False
        assert body["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 120, "completion_tokens": 3900}
        assert body["duration_ms"] == 41_250
        assert body["ttft_ms"] == 480
        assert body["url"] == f"{article_path(artist['id'])}/versions/1?language=en&length=long"
        created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
        assert created.tzinfo is not None
        assert created == stored.created_at
        assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)

    def test_get_then_html_rendered_safely(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        html = server.client.get(article_path(artist["id"])).json()["html"]
        tree = LexborHTMLParser(html)
        assert tree.css("script") == []
        assert "&lt;script&gt;alert" in html  # shown as text, never emitted
        heading = tree.css_first("h1")
        assert heading is not None and heading.text() == "Édith Piaf"
        assert [em.text() for em in tree.css("em")] == ["voice"]
        links = tree.css("a")
        assert [link.attributes.get("href") for link in links] == ["https://example.org/piaf"]
        assert links[0].attributes.get("rel") == "nofollow noopener noreferrer"
        assert "javascript:" not in "".join(str(link.attributes) for link in links)
        assert tree.css("[style]") == [] and tree.css("[onclick]") == []

    def test_get_when_null_usage_and_ttft_then_null(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], usage=None, ttft_ms=None, job_id=None)
        body = server.client.get(article_path(artist["id"])).json()
        assert body["usage"] is None and body["ttft_ms"] is None

    def test_get_when_finish_reason_length_then_truncated(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], finish_reason="length")
        body = server.client.get(article_path(artist["id"])).json()
        assert body["truncated"] is True
        assert body["finish_reason"] == "length"
        summary = server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"]
        assert summary["truncated"] is True

    def test_get_when_params_then_that_language_and_length(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], language="fr", length="short", markdown="# En français\n")
        store(server, artist["id"])
        body = server.client.get(article_path(artist["id"]), params={"language": "fr", "length": "short"})
        assert body.status_code == 200
        assert body.json()["markdown"] == "# En français\n"
        assert body.json()["language"] == "fr" and body.json()["length"] == "short"
        # the defaults are the default language and long
        assert server.client.get(article_path(artist["id"])).json()["markdown"] == MARKDOWN


class TestMarkdown:
    def test_get_when_accept_markdown_then_exact_bytes(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        response = server.client.get(article_path(artist["id"]), headers=MARKDOWN_TYPE)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/markdown")
        assert "charset=utf-8" in response.headers["content-type"]
        assert response.content == MARKDOWN.encode()

    @pytest.mark.parametrize(
        ("accept", "markdown"),
        [
            ("text/markdown", True),
            ("text/markdown, application/json;q=0.5", True),
            ("text/markdown; charset=utf-8", True),
            ("application/json", False),
            ("application/json, text/markdown", False),
            ("*/*", False),
            ("text/html", False),
        ],
    )
    def test_get_when_accept_varies_then_representation_follows(
        self, server: LiveServer, accept: str, markdown: bool
    ) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        response = server.client.get(article_path(artist["id"]), headers={"Accept": accept})
        assert response.status_code == 200
        content_type = response.headers["content-type"]
        assert content_type.startswith("text/markdown" if markdown else "application/json")


class TestEtag:
    def test_etag_when_representations_differ_then_etags_differ_and_vary_accept(
        self, server: LiveServer
    ) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        as_json = server.client.get(article_path(artist["id"]))
        as_markdown = server.client.get(article_path(artist["id"]), headers=MARKDOWN_TYPE)
        for response in (as_json, as_markdown):
            assert response.headers["etag"].startswith('"') and response.headers["etag"].endswith('"')
            assert "accept" in response.headers["vary"].lower()
        assert as_json.headers["etag"] != as_markdown.headers["etag"]
        # stable while nothing changes
        assert server.client.get(article_path(artist["id"])).headers["etag"] == as_json.headers["etag"]

    @pytest.mark.parametrize("headers", [{}, MARKDOWN_TYPE])
    def test_if_none_match_when_same_etag_then_304_empty(
        self, server: LiveServer, headers: dict[str, str]
    ) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        path = article_path(artist["id"])
        etag = server.client.get(path, headers=headers).headers["etag"]
        for candidate in (etag, f'"other", {etag}', f"W/{etag}", "*"):
            response = server.client.get(path, headers={**headers, "If-None-Match": candidate})
            assert response.status_code == 304, candidate
            assert response.content == b""
            assert response.headers["etag"] == etag
            assert "accept" in response.headers["vary"].lower()

    def test_if_none_match_when_other_representation_etag_then_200(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        path = article_path(artist["id"])
        json_etag = server.client.get(path).headers["etag"]
        markdown_etag = server.client.get(path, headers=MARKDOWN_TYPE).headers["etag"]

        response = server.client.get(path, headers={**MARKDOWN_TYPE, "If-None-Match": json_etag})
        assert response.status_code == 200 and response.content == MARKDOWN.encode()
        response = server.client.get(path, headers={"If-None-Match": markdown_etag})
        assert response.status_code == 200 and response.json()["markdown"] == MARKDOWN

    def test_if_none_match_when_unrelated_etag_then_200(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        response = server.client.get(article_path(artist["id"]), headers={"If-None-Match": '"nope"'})
        assert response.status_code == 200

    def test_etag_when_new_version_then_changes_and_old_one_misses(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        path = article_path(artist["id"])
        first = server.client.get(path).headers["etag"]
        store(server, artist["id"], markdown="# Second\n")
        response = server.client.get(path, headers={"If-None-Match": first})
        assert response.status_code == 200
        assert response.json()["markdown"] == "# Second\n"
        assert response.headers["etag"] != first


class TestVersions:
    def test_latest_when_stored_twice_then_version_two_wins(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        first = store(server, artist["id"], markdown="# First\n")
        second = store(server, artist["id"], markdown="# Second\n")
        assert (first.version, second.version) == (1, 2)
        body = server.client.get(article_path(artist["id"])).json()
        assert body["version"] == 2 and body["markdown"] == "# Second\n"
        assert body["article_id"] == second.id

    def test_versions_then_every_version_newest_first_within_each(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        first = store(server, artist["id"], markdown="# First\n")
        second = store(server, artist["id"], markdown="# Second\n")
        french = store(server, artist["id"], language="fr", length="short", markdown="# Court\n")
        response = server.client.get(article_path(artist["id"], "/versions"))
        assert response.status_code == 200
        items = response.json()["items"]
        assert [(i["article_id"], i["language"], i["length"], i["version"]) for i in items] == [
            (second.id, "en", "long", 2),
            (first.id, "en", "long", 1),
            (french.id, "fr", "short", 1),
        ]
        assert all("markdown" not in item and "html" not in item for item in items)
        assert items[1]["url"] == f"{article_path(artist['id'])}/versions/1?language=en&length=long"
        assert items[2]["url"] == f"{article_path(artist['id'])}/versions/1?language=fr&length=short"
        assert all(item["stale"] is False for item in items)

    def test_versions_when_none_stored_then_empty_list(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        response = server.client.get(article_path(artist["id"], "/versions"))
        assert response.status_code == 200 and response.json() == {"items": []}

    def test_version_when_one_then_first_text(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], markdown="# First\n")
        store(server, artist["id"], markdown="# Second\n")
        response = server.client.get(article_path(artist["id"], "/versions/1"))
        assert response.status_code == 200
        body = response.json()
        assert body["version"] == 1 and body["markdown"] == "# First\n"
        as_markdown = server.client.get(article_path(artist["id"], "/versions/1"), headers=MARKDOWN_TYPE)
        assert as_markdown.content == b"# First\n"
        etag = response.headers["etag"]
        assert etag != server.client.get(article_path(artist["id"])).headers["etag"]
        not_modified = server.client.get(
            article_path(artist["id"], "/versions/1"), headers={"If-None-Match": etag}
        )
        assert not_modified.status_code == 304 and not_modified.content == b""

    def test_version_when_url_followed_then_same_article(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], language="fr", length="medium", markdown="# Moyen\n")
        (item,) = server.client.get(article_path(artist["id"], "/versions")).json()["items"]
        body = server.client.get(item["url"]).json()
        assert body["article_id"] == item["article_id"] and body["markdown"] == "# Moyen\n"

    def test_version_when_missing_then_404_article_not_found(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        assert_error(server.client.get(article_path(artist["id"], "/versions/2")), 404, "article_not_found")
        other_length = server.client.get(
            article_path(artist["id"], "/versions/1"), params={"length": "short"}
        )
        assert_error(other_length, 404, "article_not_found")

    @pytest.mark.parametrize("version", ["0", "-1", "abc", str(2**31)])
    def test_version_when_invalid_then_422(self, server: LiveServer, version: str) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        response = server.client.get(article_path(artist["id"], f"/versions/{version}"))
        assert_error(response, 422, "validation_error")


class TestErrors:
    def test_get_when_no_article_then_404_article_not_found(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        assert_error(server.client.get(article_path(artist["id"])), 404, "article_not_found")
        as_markdown = server.client.get(article_path(artist["id"]), headers=MARKDOWN_TYPE)
        assert_error(as_markdown, 404, "article_not_found")

    def test_get_when_other_language_only_then_404(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], language="fr")
        assert_error(server.client.get(article_path(artist["id"])), 404, "article_not_found")

    @pytest.mark.parametrize("suffix", ["", "/versions", "/versions/1"])
    def test_get_when_artist_unknown_then_404_artist_not_found(self, server: LiveServer, suffix: str) -> None:
        assert_error(server.client.get(article_path(999_999, suffix)), 404, "artist_not_found")

    @pytest.mark.parametrize(
        "params",
        [
            {"language": "xx"},
            {"length": "huge"},
            {"language": "x" * 11},
            {"language": "EN"},
            {"length": ""},
        ],
    )
    @pytest.mark.parametrize("suffix", ["", "/versions/1"])
    def test_get_when_bad_params_then_422_validation_error(
        self, server: LiveServer, params: dict[str, str], suffix: str
    ) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        response = server.client.get(article_path(artist["id"], suffix), params=params)
        error = assert_error(response, 422, "validation_error")
        assert error["fields"]

    @pytest.mark.parametrize("artist_id", ["0", "abc", str(2**31)])
    def test_get_when_artist_id_invalid_then_422(self, server: LiveServer, artist_id: str) -> None:
        assert_error(server.client.get(f"{ARTISTS}/{artist_id}/article"), 422, "validation_error")


class TestStaleness:
    def test_patch_artist_then_stale_and_json_etag_changes(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        path = article_path(artist["id"])
        before = server.client.get(path)
        before_markdown = server.client.get(path, headers=MARKDOWN_TYPE).headers["etag"]
        assert before.json()["stale"] is False

        patched = server.client.patch(f"{ARTISTS}/{artist['id']}", json={"country": "France"}, headers=AUTH)
        assert patched.status_code == 200, patched.text
        # the answer is the artist as every read shows it: with its portrait's summary, stale now
        assert patched.json()["article"]["stale"] is True

        after = server.client.get(path, headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200
        assert after.json()["stale"] is True
        assert after.headers["etag"] != before.headers["etag"]
        after_markdown = server.client.get(path, headers={**MARKDOWN_TYPE, "If-None-Match": before_markdown})
        # the markdown shows the same bytes as before: the same ETag (a strong ETag is a hash of the bytes)
        assert after_markdown.status_code == 304
        assert after_markdown.headers["etag"] == before_markdown != after.headers["etag"]
        # and the new ETag is served from cache again
        again = server.client.get(path, headers={"If-None-Match": after.headers["etag"]})
        assert again.status_code == 304

        versions = server.client.get(article_path(artist["id"], "/versions")).json()["items"]
        assert [item["stale"] for item in versions] == [True]
        assert server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"]["stale"] is True

    def test_patch_then_new_version_is_fresh(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"])
        server.client.patch(f"{ARTISTS}/{artist['id']}", json={"notes": "Born in Paris."}, headers=AUTH)
        store(server, artist["id"], markdown="# Rewritten\n")
        body = server.client.get(article_path(artist["id"])).json()
        assert body["version"] == 2 and body["stale"] is False
        items = server.client.get(article_path(artist["id"], "/versions")).json()["items"]
        assert [(item["version"], item["stale"]) for item in items] == [(2, False), (1, True)]

    def test_demo_article_when_upstream_configured_then_stale(
        self, make_server: Callable[..., AbstractContextManager[LiveServer]]
    ) -> None:
        with make_server(llm_base_url="http://127.0.0.1:9/v1", llm_api_key="k") as server:
            artist = create_artist(server, **PIAF)
            store(server, artist["id"], writer="demo")
            store(server, artist["id"], language="fr", writer="upstream")
            assert server.client.get(article_path(artist["id"])).json()["stale"] is True
            french = server.client.get(article_path(artist["id"]), params={"language": "fr"}).json()
            assert french["stale"] is False


class TestArtistSummary:
    def test_artist_when_article_stored_then_summary(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        assert server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"] is None
        stored = store(server, artist["id"])
        summary = server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"]
        assert summary is not None
        assert summary["article_id"] == stored.id
        assert summary["version"] == 1
        assert summary["language"] == "en" and summary["length"] == "long"
        assert summary["words"] == count_words(MARKDOWN)
        assert summary["stale"] is False and summary["truncated"] is False
        assert summary["url"] == f"{article_path(artist['id'])}/versions/1?language=en&length=long"
        assert server.client.get(summary["url"]).json()["article_id"] == stored.id

    def test_artist_summary_then_only_default_language_long_and_latest(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        store(server, artist["id"], language="fr")
        store(server, artist["id"], length="short")
        assert server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"] is None
        store(server, artist["id"])
        latest = store(server, artist["id"], markdown="# Two\n")
        summary = server.client.get(f"{ARTISTS}/{artist['id']}").json()["article"]
        assert summary["article_id"] == latest.id and summary["version"] == 2

    def test_list_then_each_artist_with_its_own_summary(self, server: LiveServer) -> None:
        with_article = create_artist(server, "Nina Simone", genres=["chanson"])
        without = create_artist(server, "Nick Drake", genres=["chanson"])
        stored = store(server, with_article["id"])
        items = server.client.get(ARTISTS, params={"q": "ni"}).json()["items"]
        by_id = {item["id"]: item for item in items}
        assert by_id[with_article["id"]]["article"]["article_id"] == stored.id
        assert by_id[without["id"]]["article"] is None


class TestDelete:
    def test_delete_artist_then_its_articles_deleted(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        other = create_artist(server, "Nina Simone", genres=["chanson"])
        store(server, artist["id"])
        store(server, artist["id"])
        store(server, artist["id"], language="fr")
        kept = store(server, other["id"])
        assert server.sqlite_rows("SELECT count(*) FROM articles") == [(4,)]

        response = server.client.delete(f"{ARTISTS}/{artist['id']}", headers=AUTH)
        assert response.status_code == 204

        assert server.sqlite_rows("SELECT id FROM articles") == [(kept.id,)]
        assert_error(server.client.get(article_path(artist["id"])), 404, "artist_not_found")
        assert server.client.get(article_path(other["id"])).json()["article_id"] == kept.id

    def test_store_when_artist_deleted_then_refused(self, server: LiveServer) -> None:
        artist = create_artist(server, **PIAF)
        server.client.delete(f"{ARTISTS}/{artist['id']}", headers=AUTH)
        with pytest.raises(ArtistGone):
            store(server, artist["id"])
        assert server.sqlite_rows("SELECT count(*) FROM articles") == [(0,)]
