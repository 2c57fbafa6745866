"""The one Redis client of a process running with others (ATELIER_REDIS_URL): the event logs, the job board,
the circuit and the read cache's bus share it.

A pool that waits (briefly) rather than failing under a burst, sized above what the broker keeps in flight
(16) plus its follower, the two subscriptions and the registry's tick; short timeouts and one immediate retry,
so an outage is seen in about a second, not after redis-py's default backoff (docs/deploy.md: what fails how).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Redis", "redis_client"]

REDIS_CONNECTIONS = 64


def redis_client(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS,
        timeout=2,
        socket_connect_timeout=1,
        socket_timeout=5,  # above the broker's XREAD block (50 ms) and any script
        health_check_interval=10,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)
