"""Cross-site requests may not start a generation (CSRF): the no-JavaScript form, the anonymous
`POST .../article/jobs` and the synchronous `POST .../article`, over real HTTP against the scripted upstream.

A browser says where a request comes from (`Sec-Fetch-Site`, or `Origin` alone in older browsers); a
request that says neither is not a browser's (curl, a service) and goes through, as does a token holder's
(another site's page cannot send an Authorization header without CORS, which Atelier does not grant).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from app.kit.cross_site import cross_site_refusal, origin_of
from tests.fakes.upstream import Reply, chunk, completion, event, hang
from tests.support import ARTISTS, AUTH, LiveServer, MakeServer, add_artist, assert_error

SERVER = "<the server's own origin>"  # replaced by the live server's URL in each test


@dataclass(frozen=True)
class StartRoute:
    """A route that starts a generation, and what it answers when it does."""

    name: str
    path: Callable[[int], str]
    started_status: int
    is_page: bool

    def post(self, server: LiveServer, artist_id: int, headers: dict[str, str]) -> httpx.Response:
        sent = {name: server.url if value == SERVER else value for name, value in headers.items()}
        return server.client.post(self.path(artist_id), headers=sent)


ROUTES = [
    StartRoute("form", lambda artist_id: f"/artists/{artist_id}/portrait", 303, is_page=True),
    StartRoute("job", lambda artist_id: f"{ARTISTS}/{artist_id}/article/jobs", 202, is_page=False),
    StartRoute("sync", lambda artist_id: f"{ARTISTS}/{artist_id}/article", 200, is_page=False),
]

CROSS_SITE = {
    "Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site"},
    "Sec-Fetch-Site same-site": {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain
    "Origin another site": {"Origin": "https://evil.example"},
    "Origin null": {"Origin": "null"},  # a sandboxed frame, a file: page
    "Origin same host other scheme": {"Origin": "https://127.0.0.1"},
    "cross-site despite a same Origin": {"Sec-Fetch-Site": "cross-site", "Origin": SERVER},
}
SAME_ORIGIN = {
    "Sec-Fetch-Site same-origin": {"Sec-Fetch-Site": "same-origin", "Origin": SERVER},
    "Sec-Fetch-Site none": {"Sec-Fetch-Site": "none"},  # typed or bookmarked by the person
    "Origin alone, the server's": {"Origin": SERVER},
    "no header (curl)": {},
}


@pytest.fixture
def short_sync_server(make_app: MakeServer) -> Iterator[LiveServer]:
    # A synchronous request that was wrongly let through gives up in half a second instead of two minutes.
    with make_app(sync_wait=0.5) as live:
        yield live


def running_job_on_page(server: LiveServer, artist_id: int) -> str | None:
    """The job the artist page says is being written (default language and length), if any."""
    section = HTMLParser(server.client.get(f"/artists/{artist_id}").text).css_first("#portrait")
    assert section is not None
    return section.attributes.get("data-running-job")


def refusal_message(route: StartRoute, response: httpx.Response) -> str:
    if route.is_page:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("text/html")
        main = HTMLParser(response.text).css_first("main")
        assert main is not None
        return main.text()
    error = assert_error(response, 403, "forbidden")
    message: str = error["message"]
    return message


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_start_when_cross_site_then_403_and_no_job_started(
    short_sync_server: LiveServer, upstream: Any, route: StartRoute, headers: dict[str, str]
) -> None:
    upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("Started ")), hang()]))
    artist_id = add_artist(short_sync_server)
    response = route.post(short_sync_server, artist_id, headers)
    assert "another site" in refusal_message(route, response)
    assert running_job_on_page(short_sync_server, artist_id) is None
    assert upstream.requests == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
@pytest.mark.parametrize("headers", SAME_ORIGIN.values(), ids=SAME_ORIGIN.keys())
def test_start_when_same_origin_or_not_a_browser_then_generation_starts(
    app_server: LiveServer, upstream: Any, route: StartRoute, headers: dict[str, str]
) -> None:
    upstream.script(completion(["Fine."]))
    artist_id = add_artist(app_server)
    response = route.post(app_server, artist_id, headers)
    assert response.status_code == route.started_status, response.text
    upstream.wait_for_requests(1)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_start_when_cross_site_with_a_valid_token_then_generation_starts(
    app_server: LiveServer, upstream: Any, route: StartRoute
) -> None:
    upstream.script(completion(["Fine."]))
    artist_id = add_artist(app_server)
    headers = {**AUTH, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    response = route.post(app_server, artist_id, headers)
    assert response.status_code == route.started_status, response.text
    upstream.wait_for_requests(1)


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
def test_start_when_cross_site_with_a_wrong_token_then_403(
    short_sync_server: LiveServer, upstream: Any, route: StartRoute
) -> None:
    artist_id = add_artist(short_sync_server)
    headers = {"Authorization": "Bearer wrong", "Sec-Fetch-Site": "cross-site"}
    assert "another site" in refusal_message(route, route.post(short_sync_server, artist_id, headers))
    assert upstream.requests == []


class TestCrossSiteRefusal:
    """The core, a plain function of what the request says (reusable by the WebSocket's handshake)."""

    OWN = "http://atelier.example:8000"

    @pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE", "something-new"])
    def test_refusal_when_fetch_site_not_same_origin_then_reason_names_it(self, site: str) -> None:
        reason = cross_site_refusal(site, self.OWN, self.OWN)
        assert reason is not None and "another site" in reason and site.lower() in reason

    @pytest.mark.parametrize("site", ["same-origin", "none", " Same-Origin "])
    def test_refusal_when_fetch_site_same_origin_or_none_then_none_whatever_the_origin(
        self, site: str
    ) -> None:
        # Sec-Fetch-Site is the browser's own verdict: trusted over an Origin a proxy may have changed.
        assert cross_site_refusal(site, "https://atelier.example", self.OWN) is None

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example",
            "null",
            "https://atelier.example:8000",  # same host, other scheme
            "http://atelier.example:8001",  # same host, other port
            "http://sub.atelier.example:8000",
            "http://atelier.example:8000.evil.example",
            "http://atelier.example:notaport",
            "",
        ],
    )
    def test_refusal_when_only_origin_and_it_differs_then_reason(self, origin: str) -> None:
        reason = cross_site_refusal(None, origin, self.OWN)
        assert reason is not None and "another site" in reason

    @pytest.mark.parametrize("origin", ["http://atelier.example:8000", "HTTP://Atelier.Example:8000"])
    def test_refusal_when_only_origin_and_it_is_ours_then_none(self, origin: str) -> None:
        assert cross_site_refusal(None, origin, self.OWN) is None

    def test_refusal_when_neither_header_then_none(self) -> None:
        assert cross_site_refusal(None, None, self.OWN) is None

    def test_origin_of_when_default_port_then_left_out_as_browsers_do(self) -> None:
        assert origin_of("https", "atelier.example:443") == "https://atelier.example"
        assert origin_of("http", "atelier.example:80") == "http://atelier.example"
        assert origin_of("http", "Atelier.Example:8000") == "http://atelier.example:8000"
        assert origin_of("http", "[::1]:8000") == "http://[::1]:8000"
        assert (
            cross_site_refusal(None, "https://atelier.example", origin_of("https", "atelier.example:443"))
            is None
        )

    def test_origin_of_when_websocket_then_its_page_origin(self) -> None:
        assert origin_of("wss", "atelier.example") == "https://atelier.example"
        assert origin_of("ws", "atelier.example:8000") == "http://atelier.example:8000"

    def test_refusal_when_origin_is_long_then_reason_stays_short(self) -> None:
        reason = cross_site_refusal(None, "https://" + "e" * 5000 + ".example", self.OWN)
        assert reason is not None and len(reason) < 400
