"""`GET /metrics`: what the service does, as Prometheus text (docs/metrics.md lists every metric).

Names follow OpenTelemetry's GenAI conventions where one exists (`gen_ai_client_*`, a call to the writing
service being a `chat` operation), and are `atelier_*` otherwise. Nothing here changes what the other parts
do: they are observed through what they already offer, so no lower package imports this one:

- upstream calls through `MeteredModel`, a `ChatModel` wrapped around the real one;
- jobs through `JobRegistry.on_launched` / `on_finished`, stored portraits through `ArticleService.on_stored`,
  the read cache through `ReadCache.on_lookup`;
- open streams through `OpenStreams`, an ASGI middleware that sees each response start;
- the circuit through `Breaker.describe()`, read when the metrics are scraped.

Per instance. The workers of one `atelier serve --workers N` report as one through prometheus-client's
multiprocess mode: with `PROMETHEUS_MULTIPROC_DIR` set (`atelier serve` sets a private one for N > 1) every
process writes its values to files there and a scrape, on any worker, reads them all: counters and
histograms summed over every process that ever ran (a restarted worker's counts are not lost); gauges
summed (or the latest taken) over the live ones only. Without it the values live in the process, in a
registry of this `Metrics` (so several apps in one process, as in the tests, never mix their counts), which
also holds the collectors prometheus-client's default registry has (process, platform, garbage collector).
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import re
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.articles.service import ArticleService
from app.generation.jobs import Job
from app.generation.portrait import PortraitService
from app.kit.read_cache import ReadCache
from app.llm.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from app.llm.client import ChatModel, Chunk, Finish, Messages
from app.llm.errors import UpstreamError

log = logging.getLogger("atelier.metrics")

STATE_KEY: Final = "metrics"  # where the lifespan state holds this process's `Metrics`
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# OpenTelemetry's gen_ai.operation.name for a chat completions call.
OPERATION: Final = "chat"
# OpenTelemetry's advised boundaries for gen_ai.client.operation.duration (10 ms doubling to 81.92 s), doubled
# on to 655.36 s: a long portrait's call may run for minutes (ATELIER_LLM_TOTAL_TIMEOUT: 600 s by default).
DURATION_BUCKETS: Final = tuple(round(0.01 * 2**i, 2) for i in range(17))
# OpenTelemetry's advised boundaries for gen_ai.client.token.usage: 1 to 4**13, by fours.
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))

GEN_AI_LABELS: Final = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
# gen_ai.provider.name: OpenTelemetry's well-known value where the host is one we know, a name of our own for
# a few more, the host name otherwise ("best knowledge": Atelier speaks one protocol to many vendors).
KNOWN_PROVIDERS: Final = {"mistral.ai": "mistral_ai", "openai.com": "openai", "infomaniak.com": "infomaniak"}
DEMO_PROVIDER: Final = "atelier_demo"
BREAKER_STATES: Final = (CLOSED, OPEN, HALF_OPEN)
# A live gauge's file in the multiprocess directory: gauge_live<mode>_<pid>.db
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def provider_name(base_url: str, kind: str) -> str:
    """gen_ai.provider.name for the writer at `base_url` (`kind`: "demo" or "upstream")."""
    if kind == "demo":
        return DEMO_PROVIDER
    host = (urlsplit(base_url).hostname or "").lower()
    for domain, name in KNOWN_PROVIDERS.items():
        if host == domain or host.endswith("." + domain):
            return name
    return host or "unknown"


def multiprocess_directory() -> str | None:
    """The directory this process's metrics are written to, or None when they live in the process.

    prometheus-client chooses once, when it is first imported, from PROMETHEUS_MULTIPROC_DIR; what it chose is
    what counts (a variable set after that import changes nothing, and is said so)."""
    directory = os.environ.get(MULTIPROC_ENV)
    chosen = values.ValueClass is not values.MutexValue
    if directory and not chosen:
        log.warning(
            "%s was set after prometheus-client was imported: metrics stay in this process", MULTIPROC_ENV
        )
        return None
    return directory if chosen else None


class Metrics:
    """Every metric of one process, and how it is scraped. Build one per process (the app's lifespan does,
    through `main.services()`), then hand it what it observes: `metered()` and `watch()`."""

    def __init__(self) -> None:
        self.directory = multiprocess_directory()
        # In multiprocess mode the metrics below are only written (to files): a scrape reads the directory.
        self.registry = CollectorRegistry()
        registry = self.registry

        # --- the writing service (OpenTelemetry GenAI) ---------------------------------------------------
        # How long each call to the writing service takes, by outcome: latency, and which failures happen
        # how often (error_type: the stream error code, e.g. upstream_timeout; empty on success, which
        # Prometheus reads as absent, as OpenTelemetry sets error.type only on an error).
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of each call to the writing service (one chat completion, streamed), by outcome.",
            (*GEN_AI_LABELS, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # How long a reader waits for the first words of each call: what the upstream's queueing costs.
        self.time_to_first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk_seconds",
            "Time from each call's request to its first chunk of text, for calls that sent one, by outcome.",
            (*GEN_AI_LABELS, "error_type"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # Tokens in and out per call, as the writing service reports them: what the portraits cost.
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used by each call that reported its usage (gen_ai_token_type: input or output).",
            (*GEN_AI_LABELS, "gen_ai_token_type"),
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )

        # --- readers --------------------------------------------------------------------------------------
        # Streams being sent right now (SSE, bare markdown): the load that holds connections and memory.
        self.open_streams = Gauge(
            "atelier_open_streams",
            "Portrait streams being sent now, by format (sse, markdown).",
            ("format",),
            multiprocess_mode="livesum",
            registry=registry,
        )

        # --- jobs -----------------------------------------------------------------------------------------
        # Generations running in this instance now.
        self.jobs_running = Gauge(
            "atelier_jobs_running",
            "Generation jobs running now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        # Generations that ended, by how (state: done, error, cancelled; error_type: the stream error code,
        # empty when done): how many portraits readers asked for were written, and why the others were not.
        self.jobs_ended = Counter(
            "atelier_jobs",
            "Generation jobs that ended, by final state and error code.",
            ("state", "error_type"),
            registry=registry,
        )
        # Calls made to go on after a cut (length limit, broken call, takeover), counted when their job ends:
        # against atelier_jobs_total, how often portraits need a seam.
        self.continuations = Counter(
            "atelier_continuations",
            "Continuation calls (seams) made by generation jobs, counted when each job ends.",
            registry=registry,
        )
        # New versions stored: portraits actually kept (a job may end done only once it is stored).
        self.articles_stored = Counter(
            "atelier_articles_stored",
            "Portrait versions stored.",
            registry=registry,
        )

        # --- reads ----------------------------------------------------------------------------------------
        # Cacheable reads answered from memory (hit) or built (miss): whether ATELIER_READ_CACHE_MB and _TTL
        # are big enough, and what the reads cost the database.
        self.read_cache_reads = Counter(
            "atelier_read_cache_reads",
            "Reads of cacheable responses, answered from the read cache (hit) or built (miss).",
            ("result",),
            registry=registry,
        )
        self._read_hit = self.read_cache_reads.labels(result="hit")
        self._read_miss = self.read_cache_reads.labels(result="miss")

        # --- the circuit (read at each scrape) ------------------------------------------------------------
        # Whether new portraits are paused because the writing service fails (1 on the current state). With
        # Redis the circuit is shared, so the latest value any worker read is the service's.
        self.breaker_state = Gauge(
            "atelier_breaker_state",
            "The upstream circuit breaker's state: 1 for the current one (closed, open, half-open).",
            ("state",),
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.breaker_failures = Gauge(
            "atelier_breaker_failures",
            "Consecutive counted upstream failures the circuit breaker holds now.",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self._breaker: Breaker | None = None

        if self.directory is None:
            # what prometheus-client's default registry would show of the process
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            self._scraped = registry
        else:
            self._scraped = CollectorRegistry()
            MultiProcessCollector(self._scraped, path=self.directory)  # type: ignore[no-untyped-call]

    # --- the process's life ------------------------------------------------------------------------------

    def __enter__(self) -> Metrics:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """This process stops: its live gauges (open streams, running jobs) leave the sums."""
        if self.directory is not None:
            mark_process_dead(os.getpid(), self.directory)  # type: ignore[no-untyped-call]

    # --- what it observes --------------------------------------------------------------------------------

    def metered(self, model: ChatModel, *, base_url: str, kind: str) -> ChatModel:
        """`model`, its calls measured (`kind`: "demo" or "upstream", as `Writer.kind`)."""
        return MeteredModel(model, self, provider_name(base_url, kind))

    def watch(self, portraits: PortraitService, articles: ArticleService, reads: ReadCache) -> None:
        """Subscribe to the hooks of the built parts (after `build_portraits`)."""
        portraits.registry.on_launched.append(self._job_launched)
        portraits.registry.on_finished.append(self._job_finished)
        articles.on_stored.append(self._article_stored)
        reads.on_lookup.append(self._read)
        self._breaker = portraits.breaker

    def _job_launched(self, _job: Job) -> None:
        self.jobs_running.inc()

    def _job_finished(self, job: Job) -> None:
        self.jobs_running.dec()
        error_type = job.error.code if job.error is not None and job.status != "done" else ""
        self.jobs_ended.labels(state=job.status, error_type=error_type).inc()
        if job.continuations:
            self.continuations.inc(job.continuations)

    async def _article_stored(self, _artist_id: int) -> None:
        self.articles_stored.inc()

    def _read(self, hit: bool) -> None:
        (self._read_hit if hit else self._read_miss).inc()

    # --- the scrape --------------------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The Prometheus text of this instance (every worker's values, in multiprocess mode)."""
        await self._read_breaker()
        if self.directory is not None:
            self._forget_dead_processes()
        return generate_latest(self._scraped)

    async def _read_breaker(self) -> None:
        if self._breaker is None:
            return
        try:
            described = await self._breaker.describe()
        except Exception as exc:  # e.g. the shared circuit's Redis is down: the rest is still worth reading
            log.warning("metrics: the circuit breaker could not be read (%s)", type(exc).__name__)
            return
        for state in BREAKER_STATES:
            self.breaker_state.labels(state=state).set(1 if described["state"] == state else 0)
        self.breaker_failures.set(described["failures"])

    def _forget_dead_processes(self) -> None:
        """A worker that died without its shutdown (killed, crashed) left its live gauges behind; drop them
        (its counters stay: what it did still counts)."""
        assert self.directory is not None
        pids = set()
        for path in glob.glob(os.path.join(glob.escape(self.directory), "gauge_live*_*.db")):
            found = _LIVE_GAUGE_FILE.search(os.path.basename(path))
            if found:
                pids.add(int(found.group(1)))
        for pid in pids:
            if not _alive(pid):
                mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


class MeteredModel:
    """A `ChatModel` that measures each call of the one it wraps: duration and outcome, time to first chunk,
    tokens used. What it yields and raises is the wrapped model's, unchanged."""

    def __init__(self, inner: ChatModel, metrics: Metrics, provider: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.provider = provider

    @property
    def model(self) -> str:
        return self.inner.model

    async def stream(
        self, messages: Messages, *, time_left: float | None = None
    ) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        first: float | None = None
        finished = False
        error_type = ""
        try:
            async with aclosing(self.inner.stream(messages, time_left=time_left)) as chunks:
                async for chunk in chunks:
                    if first is None:
                        first = time.perf_counter() - started
                    if isinstance(chunk, Finish):
                        finished = True
                        self._tokens(chunk)
                    yield chunk
        except UpstreamError as exc:
            error_type = exc.code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            # stopped by us (the job was cancelled, or its reader stopped reading) before the call ended
            if not finished:
                error_type = "cancelled"
            raise
        except Exception as exc:
            error_type = type(exc).__qualname__
            raise
        finally:
            labels = (OPERATION, self.provider, self.inner.model, error_type)
            self.metrics.operation_duration.labels(*labels).observe(time.perf_counter() - started)
            if first is not None:
                self.metrics.time_to_first_chunk.labels(*labels).observe(first)

    def _tokens(self, finish: Finish) -> None:
        usage = finish.usage
        if usage is None:
            return
        for token_type, count in (("input", usage.prompt_tokens), ("output", usage.completion_tokens)):
            if count is not None:
                self.metrics.token_usage.labels(
                    OPERATION, self.provider, self.inner.model, token_type
                ).observe(count)


class OpenStreams:
    """Counts the portrait streams being sent (`atelier_open_streams`): an HTTP response is one from its start
    to its end when it is an event stream (sse) or a bare markdown stream (text/plain that asks proxies not to
    buffer it, `X-Accel-Buffering: no`, as `streaming/responses.py` sends them); a WebSocket from its accept."""

    def __init__(self, app: ASGIApp, state_key: str = STATE_KEY) -> None:
        self.app = app
        self.state_key = state_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics: Metrics | None = scope.get("state", {}).get(self.state_key)
        if metrics is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        counted: Gauge | None = None
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal counted, started
            if not started and message["type"] in ("http.response.start", "websocket.accept"):
                started = True
                kind = "websocket" if message["type"] == "websocket.accept" else _stream_format(message)
                if kind is not None:
                    counted = metrics.open_streams.labels(format=kind)
                    counted.inc()
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if counted is not None:
                counted.dec()


def _stream_format(start: Message) -> str | None:
    content_type = b""
    unbuffered = False
    for name, value in start.get("headers", []):
        lowered = name.lower()
        if lowered == b"content-type":
            content_type = value.lower()
        elif lowered == b"x-accel-buffering":
            unbuffered = value.strip().lower() == b"no"
    if content_type.startswith(b"text/event-stream"):
        return "sse"
    if unbuffered and content_type.startswith(b"text/plain"):
        return "markdown"
    return None


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
async def metrics(request: Request) -> Response:
    """This instance's metrics, every worker's together (docs/metrics.md); never kept by the read cache."""
    collected: Metrics = getattr(request.state, STATE_KEY)
    return Response(await collected.exposition(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """The route, and the middleware that counts open streams (the lifespan's state holds the `Metrics`)."""
    app.add_middleware(OpenStreams, state_key=STATE_KEY)
    app.include_router(router)
