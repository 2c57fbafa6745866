"""Search and paging at scale: `CatalogService.search` in-process over N synthetic artists, against the naive
scan (today's query without any index) on the same data, on SQLite and on PostgreSQL.

    .venv/bin/python bench/search.py                 # 100,000 artists, 50 timed runs per query
    .venv/bin/python bench/search.py --quick         # 100,000 artists, 10 timed runs per query
    .venv/bin/python bench/search.py --artists 20000 --no-postgres

Databases, made here and removed at the end: a fresh SQLite file in a temporary directory, and the
PostgreSQL database `atelier_bench` (created from --postgres-url's server, dropped after; nothing else is
touched). Each is built by `alembic upgrade head` and filled by `seed_synthetic` (what `atelier seed
--synthetic N` runs); PostgreSQL then gets `VACUUM ANALYZE` (what autovacuum does after a bulk load). SQLite
is measured as the app leaves it (no ANALYZE).

Each query: 2 untimed runs, then the timed ones, one after the other, each `CatalogService.search` (count +
page, its own session). The naive column runs today's statement (LIKE over `search_text` / `genre_keys`,
ORDER BY name_key, id, count of the subquery) with the indexes out of play (SQLite: `NOT INDEXED`;
PostgreSQL: index and bitmap scans off for the transaction): what the catalog did before migration 0005.
Both must return the same ids and total; a query where they differ is flagged.

Bars: words of 3+ characters p50 <= 5 ms and p99 <= 20 ms; words of 1-2 characters p99 <= 100 ms. The
unfiltered listing has no bar of its own (shown for paging). Then the query plans of the main statements.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker  # noqa: E402

from app import migrations  # noqa: E402
from app.catalog.models import genre_key  # noqa: E402
from app.catalog.repository import ArtistQuery  # noqa: E402
from app.catalog.service import CatalogService  # noqa: E402
from app.catalog.synthetic import seed_synthetic, synthetic_artists  # noqa: E402
from app.db import create_engine, create_sessionmaker  # noqa: E402
from app.kit.text import fold  # noqa: E402

BENCH_DATABASE = "atelier_bench"


@dataclass(frozen=True)
class Case:
    label: str
    query: ArtistQuery
    bar: str  # "3+", "1-2" or "" (no bar)


def rare_title_word(count: int) -> str:
    """A made-up word from one artist's work titles (few artists share it)."""
    rows = synthetic_artists(count)
    for row in rows[len(rows) // 2 :]:
        for work in row["notable_works"]:
            words = work.split(" ")
            if len(words) == 3:
                return fold(words[2])
    raise RuntimeError("no rare title")


def cases(count: int) -> list[Case]:
    rare = rare_title_word(count)
    out = [
        Case("name fragment 'kowal'", ArtistQuery(q="kowal"), "3+"),
        Case("name fragment 'kowal' p10", ArtistQuery(q="kowal", page=10), "3+"),
        Case("name fragment 'kowal' p100", ArtistQuery(q="kowal", page=100), "3+"),
        Case("common genre word 'rock'", ArtistQuery(q="rock"), "3+"),
        Case("common genre word 'rock' p10", ArtistQuery(q="rock", page=10), "3+"),
        Case("common genre word 'rock' p100", ArtistQuery(q="rock", page=100), "3+"),
        Case(f"rare work title '{rare}'", ArtistQuery(q=rare), "3+"),
        Case("accents typed without 'sondergaard'", ArtistQuery(q="sondergaard"), "3+"),
        Case("Cyrillic typed Latin 'sokolova'", ArtistQuery(q="sokolova"), "3+"),
        Case("two words 'maria lopez'", ArtistQuery(q="maria lopez"), "3+"),
        Case("genre filter 'jazz'", ArtistQuery(genre="jazz"), "3+"),
        Case("genre filter 'mbalax' + 'the'", ArtistQuery(q="the", genre="mbalax"), "3+"),
        Case("1 char 'q'", ArtistQuery(q="q"), "1-2"),
        Case("1 char 'a'", ArtistQuery(q="a"), "1-2"),
        Case("2 chars 'zu'", ArtistQuery(q="zu"), "1-2"),
        Case("2 chars 'zu' p100", ArtistQuery(q="zu", page=100), "1-2"),
        Case("unfiltered p1", ArtistQuery(), ""),
        Case("unfiltered p10", ArtistQuery(page=10), ""),
        Case("unfiltered p100", ArtistQuery(page=100), ""),
    ]
    return out


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def naive_search(session: AsyncSession, query: ArtistQuery, dialect: str) -> tuple[list[int], int]:
    """Today's statement with no index in play: the baseline."""
    conditions, params = [], {}
    folded = fold(query.q) if query.q else ""
    for number, word in enumerate(folded.split(" ") if folded else []):
        conditions.append(f"search_text LIKE :w{number} ESCAPE '\\'")
        params[f"w{number}"] = _like(word)
    if query.genre and fold(query.genre):
        conditions.append("genre_keys LIKE :g ESCAPE '\\'")
        params["g"] = _like(genre_key(query.genre))
    where = " AND ".join(conditions) or "1 = 1"
    source = "artists NOT INDEXED" if dialect == "sqlite" else "artists"
    if dialect == "postgresql":
        for setting in ("enable_indexscan", "enable_bitmapscan", "enable_indexonlyscan"):
            await session.execute(text(f"SET LOCAL {setting} = off"))
    total = await session.scalar(
        text(f"SELECT count(*) FROM (SELECT id FROM {source} WHERE {where}) AS m"), params
    )
    ids = await session.scalars(
        text(f"SELECT id FROM {source} WHERE {where} ORDER BY name_key, id LIMIT :limit OFFSET :offset"),
        {**params, "limit": query.per_page, "offset": (query.page - 1) * query.per_page},
    )
    return list(ids), total or 0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def time_case(
    catalog: CatalogService,
    sessionmaker: async_sessionmaker[AsyncSession],
    case: Case,
    runs: int,
    dialect: str,
) -> dict[str, Any]:
    new, naive = [], []
    for number in range(runs + 2):
        started = time.perf_counter()
        artists, total = await catalog.search(case.query)
        if number >= 2:
            new.append((time.perf_counter() - started) * 1000)
    naive_runs = max(3, runs // 5)  # the scan is slow; fewer runs say enough
    for number in range(naive_runs + 1):
        started = time.perf_counter()
        async with sessionmaker() as session:
            ids, naive_total = await naive_search(session, case.query, dialect)
        if number >= 1:
            naive.append((time.perf_counter() - started) * 1000)
    return {
        "case": case,
        "total": total,
        "same": [a.id for a in artists] == ids and total == naive_total,
        "p50": statistics.median(new),
        "p99": percentile(new, 0.99),
        "naive_p50": statistics.median(naive),
        "naive_p99": percentile(naive, 0.99),
        "samples": new,
    }


def verdict(row: dict[str, Any]) -> str:
    bar = row["case"].bar
    if bar == "3+":
        return "ok" if row["p50"] <= 5 and row["p99"] <= 20 else "MISS"
    if bar == "1-2":
        return "ok" if row["p99"] <= 100 else "MISS"
    return ""


def table(name: str, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"### {name}",
        "",
        "| query | matches | p50 ms | p99 ms | naive p50 ms | naive p99 ms | speed-up (p50) | bar | same rows |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case'].label} | {row['total']} | {row['p50']:.2f} | {row['p99']:.2f} "
            f"| {row['naive_p50']:.1f} | {row['naive_p99']:.1f} | {row['naive_p50'] / row['p50']:.0f}x "
            f"| {verdict(row)} | {'yes' if row['same'] else 'NO'} |"
        )
    for bar in ("3+", "1-2"):
        samples = [s for row in rows if row["case"].bar == bar for s in row["samples"]]
        if samples:
            lines.append(
                f"| **all {bar} char queries** | | {statistics.median(samples):.2f} "
                f"| {percentile(samples, 0.99):.2f} | | | | | |"
            )
    return "\n".join(lines)


async def plans(engine: AsyncEngine, catalog: CatalogService, labelled: list[Case], dialect: str) -> str:
    """The statements one search sends (caught on the way out), explained on the same connection type."""
    caught: list[tuple[str, Any]] = []

    def catch(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        caught.append((statement, parameters))

    out = []
    for case in labelled:
        caught.clear()
        event.listen(engine.sync_engine, "before_cursor_execute", catch)
        try:
            await catalog.search(case.query)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", catch)
        out.append(f"#### {case.label}")
        for statement, parameters in [c for c in caught if c[0].lstrip().upper().startswith("SELECT")]:
            prefix = (
                "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) "
            )
            async with engine.connect() as connection:
                result = await connection.exec_driver_sql(prefix + statement, parameters)
                rows = result.all()
            plan = [row[-1] if dialect == "sqlite" else row[0] for row in rows]
            out += ["```", " ".join(statement.split())[:400], "--", *map(str, plan), "```"]
    return "\n".join(out)


async def admin(url: str, sql: str) -> None:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def measure(name: str, url: str, args: argparse.Namespace, after_seed: str | None) -> str:
    log(f"{name}: migrating")
    await asyncio.to_thread(migrations.upgrade, url)
    engine = create_engine(url)
    try:
        sessionmaker = create_sessionmaker(engine)
        started = time.perf_counter()
        added = await seed_synthetic(sessionmaker, args.artists)
        seeded = time.perf_counter() - started
        log(f"{name}: seeded {added} artists in {seeded:.1f} s")
        if after_seed:
            await admin(url, after_seed)
        catalog = CatalogService(sessionmaker)
        dialect = engine.dialect.name
        rows = []
        started = time.perf_counter()
        genres = await catalog.genres()
        genres_ms = (time.perf_counter() - started) * 1000
        for case in cases(args.artists):
            rows.append(await time_case(catalog, sessionmaker, case, args.runs, dialect))
            log(f"{name}: {case.label}: p50 {rows[-1]['p50']:.2f} ms")
        main = [c for c in cases(args.artists) if c.label in PLANNED]
        return "\n\n".join(
            [
                table(
                    f"{name}: {args.artists} artists, seeded in {seeded:.1f} s, {args.runs} runs per query",
                    rows,
                ),
                f"genres(): {len(genres)} genres in {genres_ms:.2f} ms (first call)",
                await plans(engine, catalog, main, dialect),
            ]
        )
    finally:
        await engine.dispose()


PLANNED = {
    "common genre word 'rock'",
    "rare work title",
    "genre filter 'jazz'",
    "2 chars 'zu'",
    "unfiltered p100",
}


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


async def main(args: argparse.Namespace) -> int:
    PLANNED.update(c.label for c in cases(args.artists) if c.label.startswith("rare work title"))
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        reports.append(await measure("SQLite", url, args, None))
    if not args.no_postgres:
        base, _, _ = args.postgres_url.rpartition("/")
        bench_url = f"{base}/{BENCH_DATABASE}"
        await admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
        await admin(args.postgres_url, f'CREATE DATABASE "{BENCH_DATABASE}"')
        try:
            reports.append(await measure("PostgreSQL", bench_url, args, "VACUUM ANALYZE"))
        finally:
            await admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
    print("\n\n".join(reports))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 timed runs per query instead of 50")
    parser.add_argument("--artists", type=int, default=100_000, help="synthetic artists (default 100000)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per query (overrides --quick)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--postgres-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a database on the server to connect to while creating and dropping atelier_bench",
    )
    return parser


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    arguments.runs = arguments.runs or (10 if arguments.quick else 50)
    raise SystemExit(asyncio.run(main(arguments)))
