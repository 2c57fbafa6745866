"""The generation core put together: one function, so the server, the command line and the tests assemble
exactly the same thing (only the chat model and the clock differ in tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from limits.aio.storage import Storage

from app.articles.service import ArticleService
from app.catalog.service import CatalogService
from app.generation.board import JobBoard
from app.generation.jobs import Job
from app.generation.portrait import PortraitService
from app.generation.ratelimit import GenerationLimiter
from app.generation.registry import JobRegistry
from app.generation.run import GenerationRun, LongForm, Writer
from app.kit.clock import Clock
from app.llm.breaker import Breaker, CircuitStorage
from app.settings import Settings
from app.streaming.broker import Broker


@dataclass(frozen=True)
class Shared:
    """What several processes share (on Redis): the jobs' board, the circuit, the generation limit."""

    board: JobBoard
    circuit: CircuitStorage
    limit: Storage


def build_portraits(
    settings: Settings,
    *,
    catalog: CatalogService,
    articles: ArticleService,
    broker: Broker,
    writer: Writer,
    clock: Clock,
    shared: Shared | None = None,
) -> PortraitService:
    board = shared.board if shared is not None else None
    registry = JobRegistry(
        broker=broker,
        clock=clock,
        grace=settings.job_grace,
        retention=settings.job_retention,
        board=board,
        scan=settings.job_scan,
    )
    catalog.on_deleted.append(registry.cancel_artist)  # a deleted artist's running jobs end
    breaker = Breaker(
        settings.breaker_fail_max,
        settings.breaker_reset_timeout,
        clock=clock,
        storage=shared.circuit if shared is not None else None,
        # a trial resolves at its first token, within these (plus a margin)
        trial_timeout=settings.llm_connect_timeout + settings.llm_idle_timeout + 5,
    )
    run = GenerationRun(
        broker=broker,
        writer=writer,
        store=articles.store,
        system_prompt=settings.system_prompt,
        breaker=breaker,
        longform=LongForm(
            continuation=settings.llm_continuation,
            max_continuations=settings.llm_max_continuations,
            plan=settings.writer_plan,
            total_timeout=settings.llm_total_timeout,
        ),
        owns=_owned_on(board) if board is not None else None,
    )
    registry.resume = run.resume
    return PortraitService(
        articles=articles,
        broker=broker,
        registry=registry,
        run=run,
        breaker=breaker,
        limiter=GenerationLimiter(settings.generation_rate, shared.limit if shared is not None else None),
        sync_wait=settings.sync_wait,
    )


def _owned_on(board: JobBoard) -> Callable[[Job], Awaitable[bool]]:
    async def owns(job: Job) -> bool:
        return await board.owns(job.id)

    return owns
