"""The per-client limit on new generations (`ATELIER_GENERATION_RATE`), with `limits`' moving window.

Only starting a new upstream generation counts; joining a running job or replaying a stored article does
not, and token holders are not limited (the portrait service decides who is counted: `portrait.py`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import Redis


class LimitUnavailable(RuntimeError):
    """The shared limit's storage (Redis) cannot be reached: no new generation can be counted."""


def limit_storage(redis: Redis | None, prefix: str) -> Storage:
    """In memory for one process; on Redis (limits' async storage) when several share the limit, on the
    process's own Redis pool (its timeouts and its retry after a lost connection, app/kit/redis_client.py)."""
    if redis is None:
        return MemoryStorage()
    options: dict[str, Any] = {"connection_pool": redis.connection_pool}
    return RedisStorage(
        "async+redis://",  # the pool decides where
        implementation="redispy",
        key_prefix=f"{prefix}limits",
        wrap_exceptions=True,
        **options,
    )


class GenerationLimiter:
    def __init__(self, rate: str, storage: Storage | None = None) -> None:
        self.item = parse(rate)
        self.storage = storage or MemoryStorage()
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, client: str) -> float | None:
        """Count one new generation for `client`: None if allowed, else seconds until one is allowed;
        `LimitUnavailable` when the shared storage cannot be reached."""
        try:
            if await self.limiter.hit(self.item, "generation", client):
                return None
            stats = await self.limiter.get_window_stats(self.item, "generation", client)
        except (StorageError, ConnectionError, TimeoutError, OSError) as exc:
            raise LimitUnavailable(str(exc)) from exc
        return max(1, math.ceil(stats.reset_time - time.time()))
