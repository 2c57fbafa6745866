"""Where Atelier is assembled: `services()` builds every part once (the engine, the upstream client, the
event log, the breaker, the services) and tears them down in reverse; the web app's lifespan and the
`atelier` command line both run on it.

This is the only module that knows every package; each package reads its own part of the built state
through its own dependency (`request.state.<name>`), typed by `AppState` below.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, nullcontext
from pathlib import Path
from typing import TypedDict

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import health
from app.articles.router import router as articles_router
from app.articles.service import ArticleService
from app.catalog.reads import CATALOG, artist_reads
from app.catalog.service import CatalogService
from app.cli import commands
from app.cli.generate import Parts
from app.collection.router import router as collection_router
from app.collection.service import CollectionService
from app.db import create_engine, create_sessionmaker
from app.demo_writer import DemoProfile, create_demo_app
from app.errors import install_error_handlers, install_error_schema
from app.generation.assembly import Shared, build_portraits
from app.generation.board import JobBoard
from app.generation.portrait import PortraitService
from app.generation.ratelimit import limit_storage
from app.generation.router import router as generation_router
from app.generation.run import Writer
from app.generation.ws import router as websocket_router
from app.kit.body_limit import BodySizeLimitMiddleware
from app.kit.clock import SystemClock
from app.kit.forwarding import ForwardedForCheck
from app.kit.read_cache import ReadCache, ReadCacheMiddleware
from app.kit.read_cache_bus import ReadCacheBus
from app.kit.redis_client import Redis, redis_client
from app.kit.sidecar import serve_beside
from app.llm.breaker import Breaker
from app.llm.client import LLMClient, UpstreamConfig
from app.llm.redis_circuit import RedisCircuitStorage
from app.llm.transport import upstream_http_client
from app.metrics import Metrics, install_metrics
from app.settings import Settings, get_settings
from app.sole_server import sole_server
from app.streaming.broker import InProcessBroker
from app.streaming.redis_broker import RedisBroker
from app.web.router import router as web_router

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("atelier")

# The embedded demo writer caps its calls like a real provider (Infomaniak's EurIA caps max_tokens at 5,000),
# lower, so that a demo portrait shows what Atelier does about it: seams continued, invisible in the text.
DEMO_PROFILE = DemoProfile(max_words_per_call=500)

# Enough connections for every generation we would ever run at once; a pool wait beyond that is bounded.
UPSTREAM_CONNECTIONS = 1024
UPSTREAM_KEEPALIVE = 64


class AppState(TypedDict):
    """What `services()` builds; FastAPI hands it to every request as `request.state`."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    redis: Redis | None  # several processes (ATELIER_REDIS_URL), else None
    broker: InProcessBroker | RedisBroker
    breaker: Breaker
    catalog: CatalogService
    articles: ArticleService
    collection: CollectionService
    portraits: PortraitService
    reads: ReadCache
    metrics: Metrics


def forget_reads(
    reads: ReadCache, catalog: CatalogService, articles: ArticleService, portraits: PortraitService
) -> None:
    """Every write tells the read cache what it changed, after its commit and before its answer (a new
    version before its `done`), so no reader is served what the writer has already changed."""

    async def artist_changed(artist_id: int) -> None:
        reads.invalidate(artist_reads(artist_id), CATALOG)

    async def artist_created(_artist_id: int) -> None:
        reads.invalidate(CATALOG)

    catalog.on_created.append(artist_created)
    catalog.on_updated.append(artist_changed)
    catalog.on_deleted.append(artist_changed)
    articles.on_stored.append(artist_changed)
    # a running job shows on its artist's page
    portraits.registry.on_launched.append(lambda job: reads.invalidate(artist_reads(job.artist_id)))


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


@asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[AppState]:
    async with AsyncExitStack() as stack:
        clock = SystemClock()
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        sessionmaker = create_sessionmaker(engine)
        http = upstream_http_client(UPSTREAM_CONNECTIONS, UPSTREAM_KEEPALIVE, pool_timeout=10)
        stack.push_async_callback(http.aclose)
        if settings.llm_base_url:
            base_url, writer_kind = settings.llm_base_url, "upstream"
        else:
            demo = create_demo_app(settings.demo_tokens_per_second, DEMO_PROFILE)
            base_url, writer_kind = await stack.enter_async_context(serve_beside(demo)) + "/v1", "demo"
            log.info("no ATELIER_LLM_BASE_URL: portraits come from the embedded demo writer")
        redis: Redis | None = None
        shared: Shared | None = None
        broker: InProcessBroker | RedisBroker
        if settings.redis_url:
            redis = redis_client(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            prefix = settings.redis_prefix
            broker = RedisBroker(redis, prefix)
            shared = Shared(
                board=JobBoard(redis, prefix, lease=settings.job_lease),
                circuit=RedisCircuitStorage(redis, f"{prefix}circuit:upstream"),
                limit=limit_storage(redis, prefix),
            )
        else:
            broker = InProcessBroker(clock)
        stack.push_async_callback(broker.aclose)
        catalog = CatalogService(sessionmaker)
        articles = ArticleService(sessionmaker, upstream_configured=settings.llm_base_url is not None)
        metrics = stack.enter_context(Metrics())
        model = LLMClient(http, upstream_config(settings, base_url))
        writer = Writer(metrics.metered(model, base_url=base_url, kind=writer_kind), writer_kind)
        portraits = build_portraits(
            settings,
            catalog=catalog,
            articles=articles,
            broker=broker,
            writer=writer,
            clock=clock,
            shared=shared,
        )
        # First out: running jobs end (or are handed over) before the resources they use.
        stack.push_async_callback(portraits.registry.aclose)
        portraits.registry.start()
        reads = ReadCache(int(settings.read_cache_mb * 2**20), settings.read_cache_ttl)
        forget_reads(reads, catalog, articles, portraits)
        if redis is not None:
            # a write on any process is seen on every other (or the cache's TTL bounds a lost message)
            bus = ReadCacheBus(reads, redis, f"{settings.redis_prefix}reads")
            bus.start()
            stack.push_async_callback(bus.aclose)
        metrics.watch(portraits, articles, reads)
        yield AppState(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            http=http,
            redis=redis,
            broker=broker,
            breaker=portraits.breaker,
            catalog=catalog,
            articles=articles,
            collection=CollectionService(catalog, articles, settings.default_language),
            portraits=portraits,
            reads=reads,
            metrics=metrics,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[AppState]:
        # Without Redis, one server per database (its jobs are its own); with it, any number.
        async with (
            services(settings) as state,
            sole_server(state["engine"]) if settings.redis_url is None else nullcontext(),
        ):
            # Everything built so far lives as long as the process: move it out of the garbage
            # collector's reach, so full collections (which pause every stream) only walk what streams
            # allocate.
            gc.freeze()
            yield state

    app = FastAPI(
        title="Atelier",
        summary="An artist catalog that writes long portraits and streams them as they are written.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_error_schema(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # In front of routing: a hit never reaches a route (app/kit/read_cache.py).
    app.add_middleware(ReadCacheMiddleware, state_key="reads")
    # uvicorn reads X-Forwarded-For before the app (atelier serve gives it ATELIER_TRUSTED_PROXIES); this only
    # logs once if a request shows it was told to trust other proxies (app/kit/forwarding.py).
    app.add_middleware(
        ForwardedForCheck, trusted_proxies=settings.trusted_proxies, setting="ATELIER_TRUSTED_PROXIES"
    )
    install_metrics(app)  # /metrics, and the count of open streams (outermost: it sees every response)
    app.include_router(health.router)
    app.include_router(collection_router)
    app.include_router(articles_router)
    app.include_router(generation_router)
    app.include_router(websocket_router)  # WS /ws/v1/articles (not in the OpenAPI document)
    app.include_router(web_router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    return app


@asynccontextmanager
async def cli_parts(settings: Settings) -> AsyncIterator[Parts]:
    async with services(settings) as state:
        yield Parts(catalog=state["catalog"], portraits=state["portraits"])


def cli(argv: Sequence[str] | None = None) -> int:
    """The `atelier` console script."""
    return commands.run(argv, cli_parts)


# The ASGI app uvicorn serves (`app.main:app`); building it connects to nothing until the lifespan runs.
app = create_app()

if __name__ == "__main__":
    sys.exit(cli())
