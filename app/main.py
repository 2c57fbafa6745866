"""The application factory and its lifespan, which owns the engine and every shared client."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TypedDict

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import health
from app.articles.router import router as articles_router
from app.articles.service import ArticleService
from app.catalog.router import router as catalog_router
from app.db import create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.generation.jobs import JobManager
from app.generation.router import router as generation_router
from app.kit.body_limit import BodySizeLimitMiddleware
from app.llm.breaker import Breaker
from app.llm.client import LLMClient, UpstreamConfig
from app.llm.demo import create_demo_app
from app.llm.sidecar import serve_beside
from app.llm.transport import upstream_http_client
from app.settings import Settings, get_settings
from app.streaming.broker import InProcessBroker
from app.web.router import router as web_router

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("atelier")


class AppState(TypedDict):
    """What the lifespan builds; FastAPI hands it to every request as `request.state`."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    broker: InProcessBroker
    breaker: Breaker
    articles: ArticleService
    jobs: JobManager


# Enough connections for every generation we would ever run at once; a pool wait beyond that is bounded.
UPSTREAM_CONNECTIONS = 1024
UPSTREAM_KEEPALIVE = 64


def upstream_config(settings: Settings, base_url: str) -> UpstreamConfig:
    return UpstreamConfig(
        base_url=base_url,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        model=settings.llm_model,
        max_tokens=settings.llm_max_tokens,
        temperature=settings.llm_temperature,
        connect_timeout=settings.llm_connect_timeout,
        idle_timeout=settings.llm_idle_timeout,
        total_timeout=settings.llm_total_timeout,
        max_output_chars=settings.llm_max_output_chars,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        async with AsyncExitStack() as stack:
            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            http = upstream_http_client(UPSTREAM_CONNECTIONS, UPSTREAM_KEEPALIVE, pool_timeout=10)
            stack.push_async_callback(http.aclose)
            if settings.llm_base_url:
                base_url, writer = settings.llm_base_url, "upstream"
            else:
                demo = create_demo_app(settings.demo_tokens_per_second)
                base_url, writer = await stack.enter_async_context(serve_beside(demo)) + "/v1", "demo"
                log.info("no ATELIER_LLM_BASE_URL: portraits come from the embedded demo writer")
            broker = InProcessBroker()
            stack.push_async_callback(broker.aclose)
            breaker = Breaker(settings.breaker_fail_max, settings.breaker_reset_timeout)
            sessionmaker = create_sessionmaker(engine)
            articles = ArticleService(upstream_configured=settings.llm_base_url is not None)
            jobs = JobManager(
                settings=settings,
                broker=broker,
                breaker=breaker,
                llm=LLMClient(http, upstream_config(settings, base_url)),
                writer=writer,
                sessionmaker=sessionmaker,
                articles=articles,
            )
            stack.push_async_callback(jobs.aclose)  # first out: running jobs end before their resources
            # Everything built so far lives as long as the process: move it out of the garbage collector's
            # reach, so full collections (which pause every stream) only walk what streams allocate.
            gc.freeze()
            yield AppState(
                settings=settings,
                engine=engine,
                sessionmaker=sessionmaker,
                http=http,
                broker=broker,
                breaker=breaker,
                articles=articles,
                jobs=jobs,
            )

    app = FastAPI(
        title="Atelier",
        summary="An artist catalog that writes long portraits and streams them as they are written.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(catalog_router)
    app.include_router(articles_router)
    app.include_router(generation_router)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app


# The ASGI app uvicorn serves (`app.main:app`); building it connects to nothing until the lifespan runs.
app = create_app()
