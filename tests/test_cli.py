"""The `atelier` command, run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def atelier(*args: str, database: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
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
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
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
