"""The shipped nginx.conf in front of several Atelier processes, with a real nginx: requests spread over the
processes of its `upstream` (streams by the fewest connections held), a process that is down costs no request
anything (`make run` serves :8000 alone behind the shipped two-process upstream), and `/metrics`, served by
each process on its own port, is never reachable through nginx.

Which process nginx asked is counted by a relay in front of each (`Relay`, tests/nginx/test_micro_cache.py),
not read from nginx's own words. The two processes here each have their own SQLite file and the same
artists: what is under test is nginx's choice of process, not the processes' sharing (tests/cluster).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from httpx_sse import EventSource

from tests.nginx.conftest import BehindNginx
from tests.nginx.servers import (
    ARTISTS,
    TOKEN,
    Atelier,
    Nginx,
    atelier,
    free_port,
    nginx,
    nginx_or_skip,
    send_raw,
)
from tests.nginx.test_micro_cache import Relay
from tests.nginx.test_nginx import NAME

AUTH = {"Authorization": f"Bearer {TOKEN}"}
# However a client writes the path, nginx matches the decoded, merged one: all of these are /metrics to it.
METRICS_SPELLINGS = [
    "/metrics",
    "/metrics/",
    "//metrics",
    "/%6Detrics",
    "/metrics?name[]=x",
    "/metrics/../metrics",
]


@dataclass
class TwoProcesses:
    apps: tuple[Atelier, Atelier]
    relays: tuple[Relay, Relay]
    nginx: Nginx

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.nginx.url, headers={"Host": NAME}, timeout=10)

    def counts(self, method: str, target: str) -> tuple[int, int]:
        first, second = (relay.count(method, target) for relay in self.relays)
        return first, second


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoProcesses]:
    nginx_or_skip()
    directory = tmp_path_factory.mktemp("two-processes")
    with ExitStack() as stack:
        apps = tuple(
            stack.enter_context(
                atelier(
                    directory / f"app-{number}",
                    "serve",
                    generation_rate="100000/minute",
                    demo_tokens_per_second="20",  # a short portrait takes half a minute: a stream is held
                )
            )
            for number in (1, 2)
        )
        for app in apps:
            app.add_artists(2)  # the same ids on both
        relays = tuple(Relay(app.port) for app in apps)
        for relay in relays:
            stack.callback(relay.close)
        proxy = stack.enter_context(
            nginx(
                directory / "nginx",
                upstream_port=relays[0].port,
                second_upstream_port=relays[1].port,
                overrides={"worker_processes": "1"},
            )
        )
        yield TwoProcesses(apps=(apps[0], apps[1]), relays=(relays[0], relays[1]), nginx=proxy)


def test_requests_spread_over_both_processes(two_processes: TwoProcesses) -> None:
    with two_processes.client() as client:
        for _ in range(20):
            assert client.get("/health").status_code == 200
    first, second = two_processes.counts("GET", "/health")
    assert first + second == 20
    assert first >= 5 and second >= 5, (first, second)


def test_a_new_stream_goes_to_the_process_holding_fewer(two_processes: TwoProcesses) -> None:
    """least_conn: while one stream is held open on a process, the next goes to the other."""
    with two_processes.client() as client, ExitStack() as streams:
        for artist_id in (1, 2):
            response = streams.enter_context(
                client.stream("GET", f"{ARTISTS}/{artist_id}/article/stream", params={"length": "short"})
            )
            assert response.status_code == 200
            first = next(sse for sse in EventSource(response).iter_sse() if sse.data)
            assert first.event == "metadata"
    for artist_id in (1, 2):
        target = f"{ARTISTS}/{artist_id}/article/stream?length=short"
        assert sum(two_processes.counts("GET", target)) == 1
    one = two_processes.counts("GET", f"{ARTISTS}/1/article/stream?length=short")
    two = two_processes.counts("GET", f"{ARTISTS}/2/article/stream?length=short")
    assert one != two, "both streams went to the same process"


@pytest.fixture
def second_process_down(behind_nginx: BehindNginx, tmp_path: Path) -> Iterator[Nginx]:
    """The shipped config as `make run` meets it: one process on the first address, nothing on the second."""
    with nginx(
        tmp_path / "nginx",
        upstream_port=behind_nginx.app.port,
        second_upstream_port=free_port(),  # nothing listens there
        overrides={"worker_processes": "1"},
    ) as proxy:
        yield proxy


def test_with_the_second_process_down_every_request_is_served(
    second_process_down: Nginx, behind_nginx: BehindNginx
) -> None:
    with httpx.Client(base_url=second_process_down.url, headers={"Host": NAME}, timeout=10) as client:
        # writes first: a POST whose connection was refused was never sent, so nginx passes it on
        created = [client.post(ARTISTS, json={"name": f"Down {number}"}, headers=AUTH) for number in range(3)]
        assert [response.status_code for response in created] == [201, 201, 201], [r.text for r in created]
        artist_id = created[0].json()["id"]
        patched = client.patch(f"{ARTISTS}/{artist_id}", json={"country": "Chile"}, headers=AUTH)
        assert patched.status_code == 200
        for _ in range(5):
            assert client.get("/health").status_code == 200
            assert client.get(f"{ARTISTS}/{artist_id}").json()["country"] == "Chile"
            assert client.head("/").status_code == 200
        assert client.delete(f"{ARTISTS}/{artist_id}", headers=AUTH).status_code == 204
    errors = (second_process_down.process.log_path.parent / "error.log").read_text()
    assert re.search(r"connect\(\) failed \(111: Connection refused\)", errors), (
        "the dead process was never tried"
    )


def test_metrics_is_served_by_each_process_but_never_through_nginx(behind_nginx: BehindNginx) -> None:
    for target in METRICS_SPELLINGS:
        for method in ("GET", "HEAD"):
            # the request line exactly as written (an HTTP client would normalise some of these)
            request = f"{method} {target} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n"
            answer = send_raw(behind_nginx.nginx.port, request.encode())
            status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else answer[:50]
            assert status == b"404", (method, target, answer[:300])
            assert b"# TYPE" not in answer and b"# HELP" not in answer
    with httpx.Client(base_url=behind_nginx.app.url, timeout=10) as direct:
        own = direct.get("/metrics")
    assert own.status_code == 200, own.text
    assert own.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in own.text
