"""Real processes on loopback for the trust-boundary tests: Atelier as each documented way runs it
(`atelier serve`, plain `uvicorn app.main:app`), and Debian's nginx with the shipped `nginx.conf`.

Every process runs in the foreground of its own temporary directory (no `.env` of the checkout is read, no
system path is written), on a free loopback port, and is stopped when its block ends. Clients choose their
source address among 127.0.0.0/8 (`client_from`), so one machine plays the trusted proxy (127.0.0.1) and the
untrusted peers (127.0.0.2, ...).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ATELIER = str(BIN / "atelier")  # the console script pip installed, as a user runs it
UVICORN = str(BIN / "uvicorn")
NGINX = "/usr/sbin/nginx"
NGINX_CONF = ROOT / "nginx.conf"
NGINX_ONLY = "served-by-nginx.txt"  # added to nginx's copy of static/: the app cannot serve it
TOKEN = "proxy-test-token"
ARTISTS = "/api/v1/collection/artists"
STARTUP_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def client_from(source: str, base_url: str, **kwargs: Any) -> httpx.Client:
    """An HTTP client whose connections leave from `source` (any 127.x.y.z address works on loopback)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=base_url, transport=transport, timeout=10, **kwargs)


def clean_environment(**settings: str) -> dict[str, str]:
    """The test run's environment without any ATELIER_* or FORWARDED_ALLOW_IPS of the developer's, plus
    `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ATELIER_") and key != "FORWARDED_ALLOW_IPS"
    }
    return {**env, **settings}


def run_atelier(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [ATELIER, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"atelier {' '.join(args)} failed:\n{result.stderr}"
    return result


def migrated_sqlite(directory: Path) -> str:
    """A SQLite file in `directory`, migrated by `atelier migrate` as an operator does; its URL."""
    url = f"sqlite+aiosqlite:///{directory / 'atelier.db'}"
    run_atelier("migrate", env=clean_environment(ATELIER_DATABASE_URL=url), cwd=directory)
    return url


def serve_command(port: int, *extra: str) -> list[str]:
    """`atelier serve`, as README's "Running it" shows it (plus `extra` options)."""
    return [ATELIER, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *extra]


def uvicorn_command(port: int, forwarded_allow_ips: str) -> list[str]:
    """Plain uvicorn, as docs/deployment.md shows it: the same parser and proxy list as `atelier serve`."""
    return [
        UVICORN,
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--http",
        "httptools",
        "--forwarded-allow-ips",
        forwarded_allow_ips,
        "--log-level",
        "warning",
    ]


@dataclass
class Process:
    """A foreground process whose output goes to a file (a pipe nobody reads could block it)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log()}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)  # nginx: fast shutdown; uvicorn: graceful
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@contextmanager
def process(name: str, command: list[str], *, env: dict[str, str], cwd: Path) -> Iterator[Process]:
    log_path = cwd / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    running = Process(name, popen, log_path)
    try:
        yield running
    finally:
        running.stop()


def wait_for_port(running: Process, port: int) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE
    while True:
        running.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{running.name} did not listen within {STARTUP_DEADLINE} s") from None
            time.sleep(0.05)


@dataclass
class Atelier:
    url: str
    port: int
    process: Process
    artists: list[int] = field(default_factory=list)

    def add_artists(self, count: int) -> list[int]:
        """New artists (with the write token, which is never rate limited); their ids."""
        ids: list[int] = []
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for _ in range(count):
                name = f"Artist {len(self.artists) + len(ids) + 1}"
                response = client.post(
                    ARTISTS, json={"name": name}, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
        self.artists += ids
        return ids


@contextmanager
def atelier(
    directory: Path,
    how: str,
    *serve_options: str,
    forwarded_allow_ips: str = "127.0.0.1",
    **settings: str,
) -> Iterator[Atelier]:
    """Atelier run as a real process on a SQLite file migrated by `atelier migrate`, with the demo writer.

    `how` is "serve" (`atelier serve`) or "uvicorn" (plain uvicorn with `--forwarded-allow-ips`);
    `settings` are ATELIER_* variables without the prefix (`GENERATION_RATE="1/minute"`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    database = migrated_sqlite(directory)
    port = free_port()
    env = clean_environment(
        ATELIER_DATABASE_URL=database,
        ATELIER_API_TOKENS=TOKEN,
        **{f"ATELIER_{key.upper()}": value for key, value in settings.items()},
    )
    command = (
        serve_command(port, *serve_options) if how == "serve" else uvicorn_command(port, forwarded_allow_ips)
    )
    with process(f"atelier-{how}", command, env=env, cwd=directory) as running:
        wait_for_port(running, port)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.get("/health").status_code == 200
        yield Atelier(url=url, port=port, process=running)


# --- streams --------------------------------------------------------------------------------------------


@dataclass
class Start:
    """What a reader of a portrait stream got first: a new job, or a refusal."""

    job_id: str | None
    error: str | None


def start_stream(
    client: httpx.Client, artist_id: int, headers: dict[str, str] | list[tuple[str, str]] | None = None
) -> Start:
    """Open a portrait stream and read only its first events: `metadata` with a job id (a new generation
    started), or `metadata` without one followed by `error` (refused). The stream is closed at once."""
    path = f"{ARTISTS}/{artist_id}/article/stream"
    with client.stream("GET", path, params={"length": "short"}, headers=headers) as response:
        assert response.status_code == 200, response.read()
        events = EventSource(response).iter_sse()
        metadata = next(sse for sse in events if sse.event == "metadata").json()
        if metadata["job_id"] is not None:
            return Start(job_id=metadata["job_id"], error=None)
        error = next(sse for sse in events if sse.event == "error").json()
        return Start(job_id=None, error=error["code"])


# --- nginx ----------------------------------------------------------------------------------------------


def nginx_or_skip() -> str:
    """The nginx binary; without it the test skips with the reason, or fails with CI=true."""
    if os.access(NGINX, os.X_OK):
        return NGINX
    reason = f"{NGINX} is missing (`make nginx` installs Debian's nginx)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true: the nginx tests must run")
    pytest.skip(reason)


def substitute(text: str, pattern: str, replacement: str, *, count: int | None = 1) -> str:
    """Replace `pattern` (a regex, multiline) in the shipped config, failing if it is not there as often as
    expected: a config that drifted from what the test adapts must break the test, not be tested wrongly."""
    new, found = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert found and (count is None or found == count), f"{pattern!r} found {found} times in nginx.conf"
    return new


def directive(name: str, value: str) -> tuple[str, str]:
    """A (pattern, replacement) that sets directive `name` to `value` where the shipped config sets it."""
    return rf"^(\s*{name}\s+)[^;]+;", rf"\g<1>{value};"


def render_nginx_conf(
    directory: Path,
    *,
    port: int,
    upstream_port: int,
    static_dir: Path,
    overrides: dict[str, str],
    second_upstream_port: int | None = None,
) -> Path:
    """The shipped nginx.conf with only its ports and paths (and the directives in `overrides`) changed, and
    what a test needs to run unprivileged in `directory`: its own logs, temp paths and micro-cache.

    The shipped `upstream` lists two processes (:8000 and :8001); without `second_upstream_port` both entries
    name `upstream_port` (one process behind nginx, as the tests of one app want it)."""
    second = upstream_port if second_upstream_port is None else second_upstream_port
    text = NGINX_CONF.read_text()
    text = substitute(text, r"^(\s*listen\s+)8080\b", rf"\g<1>127.0.0.1:{port}", count=None)
    text = substitute(text, r"^(\s*server\s+)127\.0\.0\.1:8000\b", rf"\g<1>127.0.0.1:{upstream_port}")
    text = substitute(text, r"^(\s*server\s+)127\.0\.0\.1:8001\b", rf"\g<1>127.0.0.1:{second}")
    text = substitute(text, r"^(\s*alias\s+)/srv/atelier/static/;", rf"\g<1>{static_dir}/;")
    text = substitute(
        text, r"^(\s*proxy_cache_path\s+)/var/lib/nginx/atelier-cache\s", rf"\g<1>{directory}/cache "
    )
    for name, value in overrides.items():
        text = substitute(text, *directive(name, value))
    local = "\n".join(
        [
            f"    access_log {directory}/access.log;",
            *(f"    {kind}_temp_path {directory}/{kind};" for kind in ("client_body", "proxy", "fastcgi")),
            *(f"    {kind}_temp_path {directory}/{kind};" for kind in ("uwsgi", "scgi")),
        ]
    )
    text = substitute(text, r"^http \{$", "http {\n" + local)
    if os.geteuid() == 0:
        text = "user root;\n" + text  # workers keep access to the test's private temporary directory
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


@dataclass
class Nginx:
    url: str
    port: int
    process: Process
    static_dir: Path


@contextmanager
def nginx(
    directory: Path,
    *,
    upstream_port: int,
    overrides: dict[str, str],
    second_upstream_port: int | None = None,
) -> Iterator[Nginx]:
    """Debian's nginx, in the foreground, serving the rendered shipped config; stopped when the block ends."""
    binary = nginx_or_skip()
    directory.mkdir(parents=True, exist_ok=True)
    static_dir = directory / "static"
    shutil.copytree(ROOT / "static", static_dir)
    (static_dir / NGINX_ONLY).write_text("only nginx's copy of static/ has this file\n")
    port = free_port()
    conf = render_nginx_conf(
        directory,
        port=port,
        upstream_port=upstream_port,
        second_upstream_port=second_upstream_port,
        static_dir=static_dir,
        overrides=overrides,
    )
    test = subprocess.run(
        [binary, "-t", "-q", "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log"),
         "-g", f"pid {directory}/nginx.pid;"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert test.returncode == 0, f"nginx -t refused the rendered config:\n{test.stderr}"
    command = [
        binary,
        "-p",
        str(directory),
        "-c",
        str(conf),
        "-e",
        str(directory / "error.log"),
        "-g",
        f"daemon off; pid {directory}/nginx.pid;",
    ]
    with process("nginx", command, env=dict(os.environ), cwd=directory) as running:
        wait_for_port(running, port)
        yield Nginx(url=f"http://127.0.0.1:{port}", port=port, process=running, static_dir=static_dir)


def send_raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` as it is and read until the server closes; b"" if it closed (or reset) the connection
    without answering (a server may stop reading what it refuses)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(request)
            while chunk := connection.recv(65536):
                answer += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
    return answer
