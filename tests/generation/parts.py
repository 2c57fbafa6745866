"""The generation core assembled from real parts, without uvicorn: a migrated SQLite file, the real
services, the in-process event log, a scripted chat model and a manual clock. With `redis=` (a private
redis-server's URL and a key prefix), the parts several processes share are on Redis, as `app.main.services()`
builds them with ATELIER_REDIS_URL: two `generation_parts` on one Redis and one database are two processes.

    async with generation_parts(sqlite_database, script("Hello ", "world.")) as parts:
        artist = await parts.add_artist("Nina Simone")
        outcome = await parts.portraits.open(parts.request(artist.id))

Tests run it inside `asyncio.run()` (the project uses no pytest async plugin).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from app.articles.params import Length
from app.articles.service import ArticleService
from app.auth import Client
from app.catalog.models import Artist
from app.catalog.schemas import ArtistCreate
from app.catalog.service import CatalogService
from app.db import create_engine, create_sessionmaker
from app.generation.assembly import Shared, build_portraits
from app.generation.board import JobBoard
from app.generation.jobs import Origin
from app.generation.portrait import PortraitRequest, PortraitService
from app.generation.ratelimit import limit_storage
from app.generation.registry import JobRegistry
from app.generation.run import GenerationRun, Writer
from app.kit.redis_client import redis_client
from app.llm.breaker import Breaker
from app.llm.redis_circuit import RedisCircuitStorage
from app.settings import Settings
from app.streaming.broker import InProcessBroker
from app.streaming.events import Event
from app.streaming.redis_broker import RedisBroker
from tests.fakes.chat import ScriptedChat, Step
from tests.fakes.clock import ManualClock

SYSTEM_PROMPT = "You write portraits."
TRUSTED = Client(trusted=True, address="127.0.0.9")
ANONYMOUS = Client(trusted=False, address="203.0.113.7")


@dataclass
class GenerationParts:
    clock: ManualClock
    broker: InProcessBroker | RedisBroker
    registry: JobRegistry
    chat: ScriptedChat
    run: GenerationRun
    breaker: Breaker
    catalog: CatalogService
    articles: ArticleService
    portraits: PortraitService

    async def add_artist(self, name: str = "Nina Simone", **fields: Any) -> Artist:
        return await self.catalog.create(ArtistCreate(name=name, **fields))

    def request(
        self,
        artist_id: int,
        *,
        origin: Origin = "stream",
        client: Client = ANONYMOUS,
        language: str = "en",
        length: Length = "long",
        refresh: bool = False,
        resume: str | None = None,
    ) -> PortraitRequest:
        return PortraitRequest(artist_id, language, length, origin, client, refresh, resume)

    async def log(self, stream_id: str) -> list[Event]:
        """Every event of a log so far (empty if it is gone)."""
        batch = await self.broker.read(stream_id, 0, wait=0)
        return [] if batch is None else batch.events


@asynccontextmanager
async def generation_parts(
    database_url: str,
    *scripts: Sequence[Step],
    grace: float = 10.0,
    retention: float = 900.0,
    fail_max: int = 2,
    reset_timeout: float = 30.0,
    rate: str = "1000/minute",
    sync_wait: float = 5.0,
    writer_kind: str = "upstream",
    plan: str = "never",
    continuation: str = "prefix",
    max_continuations: int = 6,
    total_timeout: float = 600.0,
    redis: tuple[str, str] | None = None,
    lease: float = 0.6,
    scan: float = 0.1,
) -> AsyncIterator[GenerationParts]:
    """The core as `app.main.services()` builds it (`build_portraits`), on a SQLite file, with a scripted
    chat model and a manual clock; with `redis` (url, prefix), shared through Redis (`lease`, `scan`: the
    board's, short so that takeovers happen within a test)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        system_prompt=SYSTEM_PROMPT,
        job_grace=grace,
        job_retention=retention,
        breaker_fail_max=fail_max,
        breaker_reset_timeout=reset_timeout,
        generation_rate=rate,
        sync_wait=sync_wait,
        writer_plan=plan,  # one call per portrait unless a test plans
        llm_continuation=continuation,
        llm_max_continuations=max_continuations,
        llm_total_timeout=total_timeout,
        job_lease=lease,
        job_scan=scan,
    )
    engine = create_engine(database_url)
    clock = ManualClock()
    broker: InProcessBroker | RedisBroker
    shared: Shared | None = None
    client = None
    if redis is None:
        broker = InProcessBroker(clock)
    else:
        url, prefix = redis
        client = redis_client(url)
        broker = RedisBroker(client, prefix)
        shared = Shared(
            board=JobBoard(client, prefix, lease=lease),
            circuit=RedisCircuitStorage(client, f"{prefix}circuit:upstream"),
            limit=limit_storage(client, prefix),
        )
    try:
        sessionmaker = create_sessionmaker(engine)
        catalog = CatalogService(sessionmaker)
        articles = ArticleService(sessionmaker, upstream_configured=writer_kind == "upstream")
        chat = ScriptedChat(*scripts)
        portraits = build_portraits(
            settings,
            catalog=catalog,
            articles=articles,
            broker=broker,
            writer=Writer(chat, writer_kind),
            clock=clock,
            shared=shared,
        )
        portraits.registry.start()
        parts = GenerationParts(
            clock=clock,
            broker=broker,
            registry=portraits.registry,
            chat=chat,
            run=portraits.run,
            breaker=portraits.breaker,
            catalog=catalog,
            articles=articles,
            portraits=portraits,
        )
        try:
            yield parts
        finally:
            await portraits.registry.aclose()  # running jobs end first, as in app.main.services()
    finally:
        await broker.aclose()
        if client is not None:
            await client.aclose()
        await engine.dispose()
