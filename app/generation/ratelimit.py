"""The per-client limit on new generations (`ATELIER_GENERATION_RATE`), with `limits`' moving window.

Only starting a new upstream generation counts; joining a running job or replaying a stored article does
not, and token holders are not limited (the portrait service decides who is counted: `portrait.py`).
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter


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
