"""Serve an ASGI app beside Atelier on a loopback port, inside Atelier's own event loop.

The demo writer runs this way so Atelier reaches it over real HTTP, through the same client, breaker and
parser as a real upstream, however Atelier itself is served (uvicorn, tests, several workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.types import ASGIApp


class _SidecarServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The host server owns SIGINT/SIGTERM; the sidecar stops when the host's lifespan ends.
        yield


@contextlib.asynccontextmanager
async def serve_beside(app: ASGIApp, startup_timeout: float = 10.0) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port) for the duration of the block; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = _SidecarServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="demo-writer")
    try:
        async with asyncio.timeout(startup_timeout):
            while not server.started:
                if task.done():
                    task.result()  # raises what stopped it
                    raise RuntimeError("the demo writer stopped at start")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        try:
            async with asyncio.timeout(5):
                await task
        except TimeoutError:
            task.cancel()
        sock.close()
