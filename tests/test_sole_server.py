"""One server per database (app/sole_server.py): a second server on the same database refuses to start, saying
why, on SQLite and PostgreSQL; the lock goes with the server (its end, or its death); `--workers N` is refused."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from app.db import create_engine
from app.sole_server import DatabaseTaken, sole_server
from tests.nginx.servers import ATELIER, clean_environment, free_port

pytestmark = pytest.mark.timeout(60)


def test_second_holder_of_one_database_then_refused_until_the_first_ends(any_database: str) -> None:
    async def scenario() -> None:
        first, second = create_engine(any_database), create_engine(any_database)
        try:
            async with sole_server(first):
                with pytest.raises(DatabaseTaken, match="another Atelier server is serving this database"):
                    async with sole_server(second):
                        pass
            async with sole_server(second):  # released when the first ended
                pass
        finally:
            await first.dispose()
            await second.dispose()

    asyncio.run(scenario())


def test_two_databases_then_two_servers(tmp_path: Path) -> None:
    async def scenario() -> None:
        one = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
        two = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'two.db'}")
        try:
            async with sole_server(one), sole_server(two):
                pass
        finally:
            await one.dispose()
            await two.dispose()

    asyncio.run(scenario())


def _serve(port: int, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    command = [ATELIER, "serve", "--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_until_serving(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("atelier serve did not start")


def test_atelier_serve_twice_on_one_database_then_the_second_exits_saying_why(tmp_path: Path) -> None:
    env = clean_environment(ATELIER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    assert subprocess.run([ATELIER, "migrate"], env=env, cwd=tmp_path, capture_output=True).returncode == 0
    first_port = free_port()
    first = _serve(first_port, env, tmp_path)
    try:
        _wait_until_serving(first, first_port)
        second = _serve(free_port(), env, tmp_path)
        _, stderr = second.communicate(timeout=30)
        assert second.returncode != 0
        assert "another Atelier server is serving this database" in stderr
        # the first one's death releases the database: a new server starts
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        third_port = free_port()
        third = _serve(third_port, env, tmp_path)
        try:
            _wait_until_serving(third, third_port)
        finally:
            third.terminate()
            third.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)


def test_atelier_serve_with_several_workers_then_refused_saying_why(tmp_path: Path) -> None:
    env = clean_environment(ATELIER_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    result = subprocess.run(
        [ATELIER, "serve", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--workers 2 refused" in result.stderr and "Redis" in result.stderr
