"""The naive relay bench/relay.py compares Atelier with: one upstream request per reader, each upstream
line forwarded as it is.

    python bench/naive_relay.py --port 8101 --upstream http://127.0.0.1:8100

`GET /relay/{n}` opens its own streaming POST to `<upstream>/v1/chat/completions` and forwards every line
it reads (`httpx` `aiter_lines()`, newline put back) through a `StreamingResponse`. There is no job, no log,
no sharing: a thousand readers of one portrait make a thousand upstream calls. It is given the same
chances as Atelier (one shared `httpx.AsyncClient` with no connection cap, uvicorn with uvloop and
httptools, warning-level logs), so it is the simplest relay, not a handicapped one.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse


def create_app(upstream: str) -> FastAPI:
    state: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30, read=60)) as client:
            state["client"] = client
            yield

    app = FastAPI(lifespan=lifespan)
    url = f"{upstream.rstrip('/')}/v1/chat/completions"

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/relay/{n}")
    async def relay(n: int) -> StreamingResponse:
        body = {
            "model": "bench",
            "stream": True,
            "messages": [{"role": "user", "content": f"Write portrait {n}."}],
        }

        async def lines() -> AsyncIterator[str]:
            async with state["client"].stream("POST", url, json=body) as response:
                async for line in response.aiter_lines():
                    yield line + "\n"

        return StreamingResponse(lines(), media_type="text/event-stream")

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the fake upstream, without /v1")
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.upstream), host=args.host, port=args.port, log_level="warning", proxy_headers=False
    )


if __name__ == "__main__":
    main()
