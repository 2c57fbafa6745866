"""The `atelier` command, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream, error_reply

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed (`atelier = "app.main:cli"`), run as a user runs it.
ATELIER = str(Path(sys.executable).parent / "atelier")


def atelier(
    *args: str, database: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite+aiosqlite:///{database}", **(env or {})}
    return subprocess.run(
        [ATELIER, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_then_seed_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    assert atelier("migrate", database=database).returncode == 0
    first = atelier("seed", database=database)
    assert first.returncode == 0 and "artist(s) added" in first.stdout
    second = atelier("seed", database=database)
    assert second.returncode == 0 and "already there" in second.stdout


def test_serve_answers_on_its_port(tmp_path: Path) -> None:
    import socket

    database = tmp_path / "serve.db"
    assert atelier("migrate", database=database).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    process = subprocess.Popen(
        [ATELIER, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
    )
    try:
        with httpx.Client(timeout=2) as client:
            for _ in range(100):
                try:
                    response = client.get(f"http://127.0.0.1:{port}/health")
                    break
                except httpx.TransportError:
                    process.poll()
                    assert process.returncode is None, "atelier serve exited"
                    __import__("time").sleep(0.1)
            else:
                raise AssertionError("atelier serve did not answer within 10 s")
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_generate_streams_to_a_file_and_stores_it(tmp_path: Path) -> None:
    database = tmp_path / "gen.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0
    out = tmp_path / "piaf.md"
    env_rate = {"ATELIER_DEMO_TOKENS_PER_SECOND": "5000"}
    result = atelier(
        "generate", "Édith Piaf", "--length", "short", "--out", str(out), database=database, env=env_rate
    )
    assert result.returncode == 0, result.stderr
    markdown = out.read_text()
    assert markdown.startswith("# Édith Piaf")
    assert "words" in result.stderr and "stored as version 1" in result.stderr
    again = atelier("generate", "edith piaf", "--length", "short", database=database, env=env_rate)
    assert again.returncode == 0 and again.stdout == markdown  # from the store, by folded name
    assert "stored portrait" in again.stderr


def test_generate_when_it_fails_then_nonzero_and_no_file(tmp_path: Path, upstream: FakeUpstream) -> None:
    database = tmp_path / "fail.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0
    upstream.script(error_reply(401))
    out = tmp_path / "never.md"
    env = {"ATELIER_LLM_BASE_URL": upstream.base_url, "ATELIER_LLM_API_KEY": "k"}
    result = atelier("generate", "1", "--out", str(out), database=database, env=env)
    assert result.returncode == 1
    assert "upstream_auth" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    unknown = atelier("generate", "Nobody At All", database=database)
    assert unknown.returncode == 1 and "no artist" in unknown.stderr
