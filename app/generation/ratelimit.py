"""The per-client limit on new generations (`ATELIER_GENERATION_RATE`), with `limits`' moving window.

Only starting a new upstream generation counts; joining a running job or replaying a stored article does
not, and token holders are not limited. The client is the peer address, or the address its trusted
proxies forwarded for (`ATELIER_TRUSTED_PROXIES`): X-Forwarded-For is read right to left, and the first
address that is not a trusted proxy is the client, so a client cannot forge its way around the limit.
"""

from __future__ import annotations

import math
import time

from fastapi import Request
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = [
        part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()
    ]
    for address in reversed(forwarded):
        if address not in trusted_proxies:
            return address
    return peer


class GenerationLimiter:
    def __init__(self, rate: str) -> None:
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, client: str) -> float | None:
        """Count one new generation for `client`: None if allowed, else seconds until one is allowed."""
        if await self.limiter.hit(self.item, "generation", client):
            return None
        stats = await self.limiter.get_window_stats(self.item, "generation", client)
        return max(1, math.ceil(stats.reset_time - time.time()))
