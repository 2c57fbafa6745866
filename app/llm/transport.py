"""The HTTP client for the upstream: httpx's API over aiohttp's connection pool and HTTP parser.

Why not httpx's own transport: a portrait is thousands of small chunks, and per chunk httpcore + h11
(pure Python) cost about twice the CPU of aiohttp's C parser (llhttp) under the same httpx API
(`bench/upstream_read.py`). httpx-aiohttp is the transport the OpenAI and Anthropic SDKs offer for the
same reason; streaming, timeouts (connect, read) and the exceptions stay httpx's.

One correction, in `transport_error`: httpx-aiohttp 0.2.0 maps every `aiohttp.ClientConnectionError`
(refused, reset, server disconnected) to `httpx.ConnectTimeout` (a known bug, fixed in the copy the
OpenAI SDK vendors), and lets the aiohttp errors it does not map (an invalid HTTP response) through. What
decides here is the cause: only a timeout is a timeout.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from app.llm import errors
from app.llm.errors import UpstreamError

# The errors a request or a stream read can raise.
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError)


def upstream_http_client(max_connections: int, keepalive: int, pool_timeout: float) -> httpx.AsyncClient:
    """One shared client for every upstream call (the lifespan owns and closes it)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=keepalive)
    return httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits), limits=limits, timeout=httpx.Timeout(30, pool=pool_timeout)
    )


def transport_error(exc: BaseException) -> UpstreamError:
    """The contract's code for a failed request or read; the URL and the key stay out of the message."""
    timed_out = isinstance(exc, TimeoutError) or (
        isinstance(exc, httpx.TimeoutException)
        and (exc.__cause__ is None or isinstance(exc.__cause__, TimeoutError))
    )
    if timed_out:
        return errors.upstream_timeout("The writing service did not answer in time.")
    return errors.upstream_connection("The connection to the writing service failed.")
