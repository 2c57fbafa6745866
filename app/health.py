"""Liveness and readiness."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import error_response
from app.llm.breaker import Breaker

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, Any]


@router.get("/health")
async def health() -> Health:
    """The process is up and serving; nothing else is checked."""
    return Health()


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse | Readiness:
    """Ready when the database answers; also tells the circuit breaker's state (an open circuit is not
    unreadiness: stored portraits are still served)."""
    engine: AsyncEngine = request.state.engine
    breaker: Breaker = request.state.breaker
    checks: dict[str, Any] = {"broker": "in-process", "breaker": await breaker.describe()}
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness check failed: database unreachable (%s)", type(exc).__name__)
        return error_response(
            503, "not_ready", "The database is not reachable.", checks={"database": "unreachable", **checks}
        )
    return Readiness(checks={"database": "ok", **checks})
