"""The pages over real HTTP, read with an HTML parser: they work without JavaScript and link their JSON twin."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from app.catalog.seed import seed_catalog
from app.db import create_engine, create_sessionmaker
from tests.support import LiveServer, post_artist


@pytest.fixture
def seeded(server: LiveServer) -> LiveServer:
    async def seed() -> None:
        engine = create_engine(server.settings.database_url)
        try:
            await seed_catalog(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    asyncio.run(seed())
    return server


def page(server: LiveServer, path: str, status: int = 200) -> HTMLParser:
    response = server.client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return HTMLParser(response.text)


def texts(tree: HTMLParser, selector: str) -> list[str]:
    return [node.text(strip=True) for node in tree.css(selector)]


def test_catalog_lists_artists_with_links_and_json_twin(seeded: LiveServer) -> None:
    tree = page(seeded, "/")
    names = texts(tree, ".artist-card .artist-name")
    assert "Édith Piaf" in names and len(names) == 24  # one page
    json_link = tree.css_first('link[rel="alternate"][type="application/json"]')
    assert json_link is not None and json_link.attributes["href"] == "/api/v1/collection/artists"
    next_link = tree.css_first('a[rel="next"]')
    assert next_link is not None and next_link.attributes["href"] == "/?page=2"


def test_catalog_search_without_javascript(seeded: LiveServer) -> None:
    tree = page(seeded, "/?q=edith")
    assert texts(tree, ".artist-card .artist-name") == ["Édith Piaf"]
    search_box = tree.css_first("form[role=search] input[name=q]")
    assert search_box is not None and search_box.attributes["value"] == "edith"
    link = tree.css_first('a[rel="alternate"]')
    assert link is not None and link.attributes["href"] == "/api/v1/collection/artists?q=edith"


def test_catalog_genre_filter_keeps_choice(seeded: LiveServer) -> None:
    tree = page(seeded, "/?genre=jazz")
    names = texts(tree, ".artist-card .artist-name")
    assert "Nina Simone" in names and "Daft Punk" not in names
    selected = tree.css_first("select[name=genre] option[selected]")
    assert selected is not None and selected.text(strip=True) == "jazz"


def test_catalog_when_nothing_matches_says_so(seeded: LiveServer) -> None:
    tree = page(seeded, "/?q=zzzzzz")
    assert texts(tree, ".artist-card") == []
    assert tree.css_first(".empty") is not None


def test_artist_page_shows_facts_and_links_json(seeded: LiveServer) -> None:
    artist = seeded.client.get("/api/v1/collection/artists", params={"q": "nina simone"}).json()["items"][0]
    tree = page(seeded, f"/artists/{artist['id']}")
    assert texts(tree, "h1") == ["Nina Simone"]
    assert set(artist["notable_works"]) == set(texts(tree, ".works li"))
    assert set(artist["genres"]) == set(texts(tree, "header .tags li"))
    link = tree.css_first('link[rel="alternate"]')
    assert link is not None and link.attributes["href"] == f"/api/v1/collection/artists/{artist['id']}"
    assert tree.css_first("#portrait") is not None


def test_artist_page_escapes_user_text(server: LiveServer) -> None:
    body = {"name": "<script>alert(1)</script>", "notes": "<img src=x onerror=alert(1)>"}
    created = post_artist(server, body).json()
    tree = page(server, f"/artists/{created['id']}")
    assert tree.css("article script") == [] and tree.css("article img") == []
    assert texts(tree, "h1") == ["<script>alert(1)</script>"]


def test_artist_page_when_unknown_then_html_404(server: LiveServer) -> None:
    tree = page(server, "/artists/4242", status=404)
    assert "4242" in (tree.css_first("main") or tree.body).text()  # type: ignore[union-attr]


def test_stylesheet_is_served(server: LiveServer) -> None:
    response = server.client.get("/static/atelier.css")
    assert response.status_code == 200 and "text/css" in response.headers["content-type"]


# Ids a page cannot have: past every database's integer, zero, negative, not digits at all (a superscript
# two is a digit to `str.isdigit()`, not to `int()`), or too long to be worth reading.
NOT_AN_ARTIST_ID = [
    "999999999999999999999999999999",
    "2147483648",
    "0",
    "-1",
    "abc",
    "1.5",
    "1e3",
    "+1",
    "%C2%B2",
    "9" * 5000,
]


def not_found_message(response: Any) -> str:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("text/html")
    main = HTMLParser(response.text).css_first("main")
    assert main is not None
    text: str = main.text()
    return text


@pytest.mark.parametrize("artist_id", NOT_AN_ARTIST_ID)
def test_artist_page_when_id_out_of_range_or_not_a_number_then_html_404(
    server: LiveServer, artist_id: str
) -> None:
    assert "No artist has the id" in not_found_message(server.client.get(f"/artists/{artist_id}"))


@pytest.mark.parametrize("artist_id", NOT_AN_ARTIST_ID)
def test_generate_form_when_id_out_of_range_or_not_a_number_then_html_404(
    server: LiveServer, artist_id: str
) -> None:
    response = server.client.post(f"/artists/{artist_id}/portrait", data={"language": "en"})
    assert "No artist has the id" in not_found_message(response)


@pytest.mark.parametrize("artist_id", NOT_AN_ARTIST_ID)
def test_job_page_when_artist_id_out_of_range_or_not_a_number_then_html_404(
    server: LiveServer, artist_id: str
) -> None:
    not_found_message(server.client.get(f"/artists/{artist_id}/portrait/jobs/abc123"))


@pytest.mark.parametrize(
    "job_id", ["f" * 65, "9" * 5000, "99999999999999999999999999999999", "XYZ", "%C2%B2", "abc-123"]
)
def test_job_page_when_job_id_huge_or_malformed_then_html_404(server: LiveServer, job_id: str) -> None:
    artist_id = post_artist(server, {"name": "Nina Simone"}).json()["id"]
    message = not_found_message(server.client.get(f"/artists/{artist_id}/portrait/jobs/{job_id}"))
    assert "unknown or has expired" in message
