"""Trust boundaries: who the client is behind proxies, and what the Host header may decide.

The client address a new generation is counted against comes from uvicorn, which alone reads X-Forwarded-For
(from the peers in ATELIER_TRUSTED_PROXIES, passed to it as `--forwarded-allow-ips`). Each documented way of
running Atelier is run here as a real process, with clients leaving from different loopback addresses: the
trusted proxy is 127.0.0.1, untrusted peers are 127.0.0.2 and up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selectolax.lexbor import LexborHTMLParser as HTMLParser

from tests.fakes.upstream import Reply, chunk, completion, event, hang
from tests.nginx.servers import ARTISTS, Atelier, atelier, client_from, start_stream
from tests.support import LiveServer, add_artist

WAYS = ["serve", "uvicorn"]
WARNING = "X-Forwarded-For was read by the server trusting a hop"


@pytest.fixture(scope="module", params=WAYS)
def limited(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Atelier]:
    """One new generation per minute per client; the default trusted proxy list (127.0.0.1), set as the
    docs show it for each way."""
    directory = tmp_path_factory.mktemp(f"limited-{request.param}")
    with atelier(
        directory,
        request.param,
        forwarded_allow_ips="127.0.0.1",
        generation_rate="1/minute",
        trusted_proxies="127.0.0.1",
    ) as running:
        yield running


def test_forged_forwarded_for_from_an_untrusted_peer_does_not_reset_the_limit(limited: Atelier) -> None:
    first, second, third = limited.add_artists(3)
    with client_from("127.0.0.2", limited.url) as peer:
        started = start_stream(peer, first, {"X-Forwarded-For": "198.51.100.1"})
        assert started.job_id is not None and started.error is None
        for artist_id, forged in ((second, "198.51.100.2"), (third, "127.0.0.1, 198.51.100.3")):
            refused = start_stream(peer, artist_id, {"X-Forwarded-For": forged})
            assert (refused.job_id, refused.error) == (None, "rate_limited")


def test_a_trusted_proxys_forwarded_for_gives_each_client_its_own_allowance(limited: Atelier) -> None:
    first, second, third = limited.add_artists(3)
    with client_from("127.0.0.1", limited.url) as proxy:
        one = start_stream(proxy, first, {"X-Forwarded-For": "203.0.113.1"})
        two = start_stream(proxy, second, {"X-Forwarded-For": "203.0.113.2"})
        assert one.job_id is not None and two.job_id is not None
        again = start_stream(proxy, third, {"X-Forwarded-For": "203.0.113.1"})
        assert (again.job_id, again.error) == (None, "rate_limited")


def test_a_proxy_adding_its_own_header_line_is_read_after_the_clients(limited: Atelier) -> None:
    """Some proxies (HAProxy's `option forwardfor`) add a second X-Forwarded-For line rather than appending
    to the client's: the client's forged line comes first and must not count."""
    first, second = limited.add_artists(2)
    with client_from("127.0.0.1", limited.url) as proxy:
        lines = [("X-Forwarded-For", "198.51.100.10"), ("X-Forwarded-For", "203.0.113.70")]
        assert start_stream(proxy, first, lines).job_id is not None
        lines = [("X-Forwarded-For", "198.51.100.11"), ("X-Forwarded-For", "203.0.113.70")]
        refused = start_stream(proxy, second, lines)
        assert (refused.job_id, refused.error) == (None, "rate_limited")


def test_run_as_documented_the_server_never_warns(limited: Atelier) -> None:
    path = f"{ARTISTS}/999999/article/stream"  # an unknown artist: the client is still read, nothing runs
    with client_from("127.0.0.1", limited.url) as proxy:
        for forwarded in ("198.51.100.9, 10.1.1.1", "127.0.0.1", "[2001:db8::1]:4711"):
            assert proxy.get(path, headers={"X-Forwarded-For": forwarded}).status_code == 404
    with client_from("127.0.0.2", limited.url) as peer:
        assert peer.get(path, headers={"X-Forwarded-For": "198.51.100.9, 10.1.1.1"}).status_code == 404
    assert WARNING not in limited.process.log()


@pytest.mark.parametrize("how", WAYS)
def test_a_narrowed_trusted_list_is_what_the_server_believes(how: str, tmp_path: Path) -> None:
    """The finding: with uvicorn trusting 127.0.0.1 on its own, narrowing ATELIER_TRUSTED_PROXIES changed
    nothing. Run as documented, a peer that is no longer listed is an ordinary client."""
    with atelier(
        tmp_path,
        how,
        forwarded_allow_ips="127.0.0.3",
        generation_rate="1/minute",
        trusted_proxies="127.0.0.3",
    ) as running:
        ids = running.add_artists(3)
        with client_from("127.0.0.1", running.url) as formerly_trusted:
            assert start_stream(formerly_trusted, ids[0], {"X-Forwarded-For": "198.51.100.1"}).job_id
            refused = start_stream(formerly_trusted, ids[1], {"X-Forwarded-For": "198.51.100.2"})
            assert refused.error == "rate_limited"
        with client_from("127.0.0.3", running.url) as proxy:
            assert start_stream(proxy, ids[2], {"X-Forwarded-For": "203.0.113.3"}).job_id


def test_uvicorn_trusting_a_hop_the_app_does_not_is_warned_once(tmp_path: Path) -> None:
    """Plain uvicorn told to trust every peer (`--forwarded-allow-ips '*'`) while Atelier trusts only
    127.0.0.1: the address uvicorn took from X-Forwarded-For is one the app would not have believed."""
    with atelier(
        tmp_path,
        "uvicorn",
        forwarded_allow_ips="*",
        trusted_proxies="127.0.0.1",
        generation_rate="100/minute",
    ) as running:
        path = f"{ARTISTS}/999999/article/stream"  # an unknown artist: the client is still read, nothing runs
        with client_from("127.0.0.1", running.url) as proxy:
            assert proxy.get(path, headers={"X-Forwarded-For": "203.0.113.5"}).status_code == 404
        assert WARNING not in running.process.log()  # a trusted proxy forwarding one client: consistent
        with client_from("127.0.0.2", running.url) as peer:
            for forged in ("198.51.100.7, 203.0.113.9", "198.51.100.8, 203.0.113.9", "10.0.0.1, 10.0.0.2"):
                assert peer.get(path, headers={"X-Forwarded-For": forged}).status_code == 404
        log = running.process.log()
        assert log.count(WARNING) == 1, log
        assert "198.51.100.7" in log and "ATELIER_TRUSTED_PROXIES" in log and "--forwarded-allow-ips" in log


# --- the warning's heuristic, behind uvicorn's own proxy-headers middleware ---------------------------------


def warned_behind_uvicorn(
    uvicorn_trusts: list[str] | str, app_trusts: list[str], peer: str, forwarded: list[str]
) -> bool:
    """Send one request through uvicorn's ProxyHeadersMiddleware (trusting `uvicorn_trusts`) into the app's
    check (trusting `app_trusts`), from `peer` with these X-Forwarded-For lines; whether it warned."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from app.kit.forwarding import ForwardedForCheck

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    check = ForwardedForCheck(app, app_trusts, "ATELIER_TRUSTED_PROXIES")
    scope = {
        "type": "http",
        "client": (peer, 54321),
        "headers": [(b"x-forwarded-for", line.encode()) for line in forwarded],
    }
    asyncio.run(ProxyHeadersMiddleware(check, trusted_hosts=uvicorn_trusts)(scope, None, None))
    return check.warned


SAME_LISTS = [
    ["127.0.0.1"],
    ["127.0.0.1", "10.0.0.0/8"],
    ["::1", "2001:db8::/32"],
    ["*"],
    [],
]
FORWARDED = [
    ["198.51.100.7"],
    ["198.51.100.7, 10.1.2.3"],
    ["10.1.2.3, 127.0.0.1"],
    ["127.0.0.1"],
    ["198.51.100.7:4711"],
    ["[2001:db8::5]:4711, 2001:db8::6"],
    ["198.51.100.7", "10.1.2.3"],
    ["198.51.100.7,, 10.1.2.3"],
    ["unix:/run/proxy.sock"],
    [""],
]


@pytest.mark.parametrize("trusted", SAME_LISTS, ids=str)
def test_the_same_list_on_both_sides_never_warns(trusted: list[str]) -> None:
    for peer in ("127.0.0.1", "10.9.9.9", "::1", "2001:db8::1", "203.0.113.1"):
        for forwarded in FORWARDED:
            assert not warned_behind_uvicorn(trusted, trusted, peer, forwarded), (peer, forwarded)


@pytest.mark.parametrize(
    ("uvicorn_trusts", "app_trusts", "peer", "forwarded", "warned"),
    [
        ("*", ["127.0.0.1"], "203.0.113.1", ["198.51.100.7, 203.0.113.9"], True),
        ("127.0.0.1,10.0.0.7", ["127.0.0.1"], "127.0.0.1", ["198.51.100.7, 10.0.0.7"], True),
        ("127.0.0.1", [], "127.0.0.1", ["198.51.100.7"], True),  # we trust no proxy, uvicorn did
        ("127.0.0.1", ["127.0.0.1", "10.0.0.7"], "127.0.0.1", ["198.51.100.7, 10.0.0.7"], True),  # narrower
        # The limits: the peer uvicorn believed is gone, so one forged hop looks like honest forwarding;
        # and a hop written with a port is not recognised as rewritten.
        ("127.0.0.1,::1", ["10.0.0.5"], "127.0.0.1", ["198.51.100.7"], False),
        ("*", ["127.0.0.1"], "203.0.113.1", ["198.51.100.7:80, 203.0.113.9:80"], False),
        # A peer uvicorn does not trust is not rewritten, whatever it claims (even its own address).
        ("10.0.0.5", ["10.0.0.5"], "127.0.0.1", ["127.0.0.1:54321, 198.51.100.7"], False),
    ],
)
def test_a_server_given_another_list_is_noticed_where_the_request_shows_it(
    uvicorn_trusts: str, app_trusts: list[str], peer: str, forwarded: list[str], warned: bool
) -> None:
    assert warned_behind_uvicorn(uvicorn_trusts, app_trusts, peer, forwarded) is warned


# --- the Host header decides nothing in a page ------------------------------------------------------------


def assets_and_actions(tree: HTMLParser) -> list[str]:
    urls = [node.attributes.get("src") or "" for node in tree.css("script[src]")]
    urls += [node.attributes.get("href") or "" for node in tree.css("link[href]")]
    urls += [node.attributes.get("action") or "" for node in tree.css("form")]
    return urls


def root_relative(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def test_pages_link_scripts_styles_and_forms_by_root_relative_path_whatever_the_host(
    app_server: LiveServer, upstream: Any
) -> None:
    hostile = {"Host": "evil.example"}
    writing = add_artist(app_server, "Host Header Quartet")
    stored = add_artist(app_server, "Relative Path Trio")
    upstream.script(Reply(steps=[event(chunk("# Nina\n\nHalf ")), hang()]), completion(["# Trio\n\nDone."]))
    posted = app_server.client.post(f"/artists/{writing}/portrait", data={"length": "short"}, headers=hostile)
    assert posted.status_code == 303, posted.text
    job_page = posted.headers["location"]
    assert root_relative(job_page)
    done = app_server.client.get(f"{ARTISTS}/{stored}/article/stream", params={"length": "short"})
    assert '"type":"done"' in done.text.replace(" ", "")

    pages = {
        "catalog": "/",
        "artist, no portrait yet": f"/artists/{writing}?length=long",
        "artist, stored portrait": f"/artists/{stored}?length=short",
        "job": job_page,
        "unknown artist": "/artists/999999",
    }
    for name, path in pages.items():
        response = app_server.client.get(path, headers=hostile)
        assert response.headers["content-type"].startswith("text/html"), name
        tree = HTMLParser(response.text)
        urls = assets_and_actions(tree)
        assert tree.css("link[rel=stylesheet]"), name
        assert all(root_relative(url) for url in urls), (name, urls)
        assert "evil.example" not in response.text, name
        if name in ("artist, no portrait yet", "artist, stored portrait", "job"):
            assert {"/static/js/portrait.js", "/static/atelier.css"} <= set(urls), (name, urls)
