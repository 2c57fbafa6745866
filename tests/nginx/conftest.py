"""One Atelier (`atelier serve`, the demo writer, one new generation per minute per client) behind Debian's
nginx running the shipped nginx.conf, for the whole module: only ports and paths are substituted, and the
header timeout shortened to 1 s so a slow client is seen being cut."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.nginx.servers import Atelier, Nginx, atelier, nginx, nginx_or_skip

HEADER_TIMEOUT = 1.0


@dataclass
class BehindNginx:
    app: Atelier
    nginx: Nginx


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BehindNginx]:
    nginx_or_skip()  # before starting anything
    directory = tmp_path_factory.mktemp("behind-nginx")
    with atelier(
        directory / "app",
        "serve",
        generation_rate="1/minute",
        trusted_proxies="127.0.0.1",
        demo_tokens_per_second="30",
    ) as app:
        overrides = {"client_header_timeout": f"{HEADER_TIMEOUT:g}s", "worker_processes": "1"}
        with nginx(directory / "nginx", upstream_port=app.port, overrides=overrides) as proxy:
            yield BehindNginx(app=app, nginx=proxy)
