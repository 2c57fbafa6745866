"""The `atelier` command: serve, migrate, seed, generate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack

from app.cli.generate import GenerateFailed, OpenParts, add_arguments, generate
from app.settings import get_settings

# The largest request line and headers `atelier serve` reads (h11 answers 400 beyond): above nginx.conf's
# `large_client_header_buffers 4 8k`, so a request nginx let through always fits.
MAX_HEADER_BYTES = 64 * 1024


WORKERS_REFUSED = (
    "atelier serve: --workers {workers} refused: ATELIER_REDIS_URL is not set. Several processes share their "
    "jobs, event logs, circuit and limits through Redis; without it each worker would run its own jobs (a "
    "portrait written twice, a reader's resume landing on a worker that does not have it). Set "
    "ATELIER_REDIS_URL, or run one worker.\n"
)
# prometheus-client's multiprocess mode: where each worker writes its metrics, so a scrape on any reads all.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    if args.workers > 1 and not settings.redis_url:
        sys.stderr.write(WORKERS_REFUSED.format(workers=args.workers))
        return 2
    with ExitStack() as stack:
        if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
            # The workers report as one (app/metrics.py): a directory of this run alone, empty at start (no
            # counts of an earlier run), removed at exit; the workers, started afterwards, inherit it.
            directory = tempfile.mkdtemp(prefix="atelier-metrics-")
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
            os.environ[MULTIPROC_ENV] = directory
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            # The one place X-Forwarded-For is read (app/auth.py takes the client as uvicorn gives it): only
            # from the peers in ATELIER_TRUSTED_PROXIES, never uvicorn's own default.
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,
            # httptools by default: it costs less CPU per streamed event than h11 (bench/relay.py), and nginx
            # bounds the request head in front; h11, on demand, bounds it itself. See docs/deployment.md.
            http=args.http,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            limit_concurrency=args.limit_concurrency,
            timeout_keep_alive=args.timeout_keep_alive,
            # SSE streams never close by themselves: without a bound, a stopping process would wait for its
            # readers forever and never reach its lifespan's end, where its jobs are handed over.
            timeout_graceful_shutdown=args.timeout_graceful_shutdown,
            # WebSocket messages are small JSON events, and compressing each for each reader costs 1.4-1.8x
            # the CPU per token of an SSE reader (bench/relay.py --ws-deflate); SSE is not compressed either.
            ws_per_message_deflate=False,
            workers=args.workers,
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app import migrations

    settings = get_settings()
    if args.down:
        migrations.downgrade(settings.database_url, args.revision or "-1")
        return 0
    revision = args.revision or "head"
    migrations.upgrade(settings.database_url, revision)
    if revision == "head":  # the schema is the models' now: stored HTML of an older renderer is re-rendered
        refreshed = asyncio.run(_refresh_renderings(settings.database_url))
        if refreshed:
            print(f"migrate: {refreshed} stored article(s) rendered again by the current renderer")
    return 0


async def _refresh_renderings(database_url: str) -> int:
    from app.articles.service import ArticleService
    from app.db import create_engine, create_sessionmaker

    engine = create_engine(database_url)
    try:
        # Staleness plays no part in rendering: whether an upstream is configured does not matter here.
        return await ArticleService(
            create_sessionmaker(engine), upstream_configured=False
        ).refresh_renderings()
    finally:
        await engine.dispose()


def _seed(args: argparse.Namespace) -> int:
    from app.catalog.seed import seed_catalog
    from app.catalog.synthetic import seed_synthetic
    from app.db import create_engine, create_sessionmaker

    async def run() -> int:
        engine = create_engine(get_settings().database_url)
        try:
            if args.synthetic is not None:
                return await seed_synthetic(create_sessionmaker(engine), args.synthetic)
            return await seed_catalog(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    added = asyncio.run(run())
    if added:
        print(f"seed: {added} artist(s) added")
    elif args.synthetic is not None:
        print(f"seed: the {args.synthetic} synthetic artists are already there")
    else:
        print("seed: the sample catalog is already there")
    return 0


def _count(value: str) -> int:
    count = int(value)
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def _generate(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.WARNING)  # the terminal shows the portrait and one progress line
    try:
        return asyncio.run(generate(args, args.open_parts))
    except GenerateFailed as exc:
        sys.stderr.write(f"\natelier generate: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\natelier generate: interrupted; nothing was stored\n")
        return 130


def build_parser(open_parts: OpenParts) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Atelier: portraits of artists, streamed.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the app with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--http",
        choices=["h11", "httptools"],
        default="httptools",
        help="HTTP parser: httptools (the default) is the faster one and bounds nothing, so serve behind "
        "nginx.conf, which bounds request heads and cuts slow ones (it must be in front anyway: uvicorn has no "
        "header timeout); h11 refuses request heads over 64 KiB when serving without nginx",
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="connections and tasks beyond which uvicorn answers 503 (default: no limit)",
    )
    serve.add_argument(
        "--timeout-keep-alive", type=int, default=5, help="seconds an idle keep-alive connection is kept"
    )
    serve.add_argument(
        "--workers",
        type=_count,
        default=1,
        help="worker processes (default 1); more than one needs ATELIER_REDIS_URL, and they report their "
        "metrics as one",
    )
    serve.add_argument(
        "--timeout-graceful-shutdown",
        type=float,
        default=3.0,
        help="seconds open streams get after SIGTERM before they are closed (their readers reconnect "
        "elsewhere) and the running jobs are handed over to another process (default 3)",
    )
    serve.set_defaults(run=_serve)

    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument("revision", nargs="?", help="target revision (default: head, or -1 with --down)")
    migrate.add_argument("--down", action="store_true", help="downgrade instead (e.g. `--down base`)")
    migrate.set_defaults(run=_migrate)

    seed = commands.add_parser("seed", help="load the sample catalog (idempotent)")
    seed.add_argument(
        "--synthetic",
        type=_count,
        metavar="N",
        help="load N made-up artists instead (deterministic, idempotent: for measuring, see bench/search.py)",
    )
    seed.set_defaults(run=_seed)

    generate_ = commands.add_parser("generate", help="write an artist's portrait, streamed to the terminal")
    add_arguments(generate_)
    generate_.set_defaults(run=_generate, open_parts=open_parts)
    return parser


def run(argv: Sequence[str] | None, open_parts: OpenParts) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    args = build_parser(open_parts).parse_args(argv)
    code: int = args.run(args)
    return code
