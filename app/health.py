"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import error_response
from app.llm.breaker import Breaker

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
REDIS_CHECK_TIMEOUT = 2.0


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
    redis: Redis | None = request.state.redis
    checks: dict[str, Any] = {}
    down: list[str] = []
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness check failed: database unreachable (%s)", type(exc).__name__)
        checks["database"] = "unreachable"
        down.append("The database is not reachable.")
    if redis is None:
        checks["broker"] = "in-process"
    else:
        checks["broker"] = "redis"
        try:
            async with asyncio.timeout(REDIS_CHECK_TIMEOUT):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            log.warning("readiness check failed: Redis unreachable (%s)", type(exc).__name__)
            checks["redis"] = "unreachable"
            down.append("Redis is not reachable.")
    try:
        checks["breaker"] = await breaker.describe()
    except Exception:
        checks["breaker"] = {"state": "unknown"}  # its shared store is down: said by the redis check
    if down:
        return error_response(503, "not_ready", " ".join(down), checks=checks)
    return Readiness(checks=checks)
