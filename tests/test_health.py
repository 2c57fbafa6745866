"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import LiveServer


def test_health_is_ok(server: LiveServer) -> None:
    response = server.client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_database_answers(server: LiveServer) -> None:
    response = server.client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_ready_when_database_unreachable_then_503_not_ready(make_server: Any, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "atelier.db"  # SQLite cannot create a file in a missing folder
    with make_server(database_url=f"sqlite+aiosqlite:///{missing}") as server:
        assert server.client.get("/health").status_code == 200
        response = server.client.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["checks"]["database"] == "unreachable"
        assert str(missing) not in response.text
