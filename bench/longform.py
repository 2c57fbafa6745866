"""Length-adherence benchmark: single-call writing with continuation against outline-first (planned) writing,
with a demo writer that misbehaves like the models of the long-writing studies.

    .venv/bin/python bench/longform.py            # 32 sample artists x short/medium/long, both modes: ~1-2 min
    .venv/bin/python bench/longform.py --quick    # 8 artists
    .venv/bin/python bench/longform.py --help     # every knob (profile, concurrency, tokens/s, ...)

Everything runs in this process, on 127.0.0.1:
- the demo writer (`app.demo_writer.create_demo_app`) served on a loopback port with `serve_beside`, as
  `app.main.services()` serves it, with a `DemoProfile`: it stops at `--stop-ratio` (0.65) of the words it is
  asked for, sends at most `--max-words-per-call` (300) new tokens per call (then finishes with `length`),
  and every `--drop-every`-th (5th) call it receives drops its connection after half of its tokens. The app is
  wrapped in a small ASGI middleware that records every request body;
- Atelier's real core: `build_portraits` with the real `LLMClient` over httpx (`upstream_http_client`,
  `app.main.upstream_config`), a fresh SQLite file per mode migrated with `app.migrations.upgrade` (what
  `atelier migrate` runs) and seeded with the 32 sample artists (`seed_catalog`);
- the jobs go through `PortraitService.open` with origin "job" and a trusted client (not rate limited),
  `--concurrency` at a time.

Each mode gets its own database, demo writer (so its own drop schedule, counted from its first call) and
core: `single` is ATELIER_WRITER_PLAN=never (one call, continued when cut), `planned` is
ATELIER_WRITER_PLAN=always (an outline, then one call per section, each continued when cut). Both use
ATELIER_LLM_CONTINUATION=prefix and ATELIER_LLM_MAX_CONTINUATIONS=`--max-continuations` (16 by default:
the default 6 is not enough for this profile, see below).

Per mode and length, and per mode overall:
- complete: share of portraits stored and not `truncated` (target 100 %); failed: portraits that stored
  nothing (an `error` event);
- S_l: LongBench-Write's length score, from the `done` event (checked equal to the stored article's), mean and
  min (target: mean >= 95 planned); words: mean words written, as % of the target;
- continuations per portrait (mean / max; `done.continuations`, checked equal to the number of `continued`
  events and to the upstream calls beyond one per unit: the portrait, or the outline and each section);
- upstream calls (total, and per portrait), from the recorded requests;
- wall time per portrait (from `open` to the job's end, mean; several run at once, so it includes waiting
  for the CPU), and planning's time overhead against single-call writing, per length;
- seams: the stored markdown against the demo writer's own text, exactly. Single-call: the markdown must equal
  `text_for_prompt(user_message(facts, language, length), stop_ratio)`, the whole text the demo writes for
  that request, so any character lost or repeated at a seam (a continuation's echo, a dropped call) shows.
  Planned: for each section, the text between consecutive section starts (`article.outline`) must equal
  `text_for_prompt(<the recorded first call of that section>, stop_ratio)` (plus the blank line that separates
  sections). The section requests are taken from the recording because how many words a section is asked
  for depends on what the sections before it wrote (`next_ask`). Also checked: the `text` deltas joined are
  the stored markdown. A failed check prints the first differing position with context.

Why 16 continuations: a single-call `long` portrait is 3000 x 0.65 = 1950 words, seven calls of at most 300
words (six continuations) before any drop, and each drop adds one; a planned `long` portrait writes ~3000 words
in 300-word calls over 5-7 sections, so ~5-8 continuations plus its drops. With 6, many would be stored
truncated: a limit of the setting, not of the strategy (`--max-continuations 6` shows it).

Output: markdown tables on stdout; JSON (every portrait) and markdown in
bench/results/longform-<UTC timestamp>.{json,md} (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from app import migrations  # noqa: E402
from app.articles.params import TARGET_WORDS  # noqa: E402
from app.articles.service import ArticleService  # noqa: E402
from app.auth import Client  # noqa: E402
from app.catalog.models import Artist  # noqa: E402
from app.catalog.seed import seed_catalog  # noqa: E402
from app.catalog.service import CatalogService  # noqa: E402
from app.db import create_engine, create_sessionmaker  # noqa: E402
from app.demo_writer.app import DemoProfile, create_demo_app, text_for_prompt  # noqa: E402
from app.generation import prompt  # noqa: E402
from app.generation.assembly import build_portraits  # noqa: E402
from app.generation.jobs import Job  # noqa: E402
from app.generation.portrait import Accepted, PortraitRequest, PortraitService  # noqa: E402
from app.generation.run import Writer  # noqa: E402
from app.kit.clock import SystemClock  # noqa: E402
from app.kit.sidecar import serve_beside  # noqa: E402
from app.llm.client import LLMClient  # noqa: E402
from app.llm.transport import upstream_http_client  # noqa: E402
from app.main import UPSTREAM_CONNECTIONS, UPSTREAM_KEEPALIVE, upstream_config  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.streaming.broker import InProcessBroker  # noqa: E402
from app.streaming.events import Continued, Done, Error, Outline, Section, Text  # noqa: E402

LANGUAGE = "en"
MODES = {"single": "never", "planned": "always"}  # mode -> ATELIER_WRITER_PLAN
TRUSTED = Client(trusted=True, address="bench")
_TARGET = re.compile(r"about (\d+) words")
_SECTION = re.compile(r"Write section (\d+) of (\d+) of the portrait")


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# =====================================================================================================
# The demo writer's requests, recorded
# =====================================================================================================


class Recorder:
    """ASGI middleware: records every request body, then hands the app the same body. `send` is passed on
    untouched (the demo writer reaches uvicorn's transport through it to drop a call)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        self.bodies.append(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


@dataclass
class Call:
    """One recorded request, read as the demo writer reads it."""

    portrait: tuple[str, int]  # (the facts document, the portrait's target words)
    kind: str  # "single", "outline" or "section"
    continuation: bool  # a trailing assistant turn
    user: str  # the last user message
    section: int | None = None  # from 1
    count: int | None = None  # sections in the outline
    so_far: str | None = None


def _between(text: str, opening: str, closing: str, before: int | None = None) -> tuple[str, int] | None:
    at = text.rfind(opening, 0, len(text) if before is None else before)
    if at < 0:
        return None
    end = text.find(closing, at)
    return (text[at + len(opening) : end], at) if end >= 0 else None


def facts_document(user: str) -> str:
    found = _between(user, prompt.FACTS_OPEN, prompt.FACTS_CLOSE)
    return found[0] if found else ""


def parse_call(body: bytes) -> Call:
    messages = json.loads(body)["messages"]
    continuation = messages[-1].get("role") == "assistant"
    user = [m["content"] for m in messages if m.get("role") == "user"][-1]
    facts = _between(user, prompt.FACTS_OPEN, prompt.FACTS_CLOSE)
    facts_doc, facts_at = facts if facts else ("", len(user))
    section = _SECTION.match(user)
    if section:
        outline_doc = _between(user, prompt.OUTLINE_OPEN, prompt.OUTLINE_CLOSE, before=facts_at)
        so_far_doc = _between(user, prompt.SO_FAR_OPEN, prompt.SO_FAR_CLOSE, before=facts_at)
        outline = json.loads(outline_doc[0]) if outline_doc else {}
        target = sum(int(s.get("words", 0)) for s in outline.get("sections", []))
        so_far = json.loads(so_far_doc[0]) if so_far_doc else ""
        number, count = int(section.group(1)), int(section.group(2))
        return Call((facts_doc, target), "section", continuation, user, number, count, so_far)
    found = _TARGET.search(user)
    target = int(found.group(1)) if found else 0
    kind = "outline" if user.startswith(prompt.PLAN_REQUEST) else "single"
    return Call((facts_doc, target), kind, continuation, user)


# =====================================================================================================
# Checks
# =====================================================================================================


def first_difference(expected: str, actual: str, context: int = 50) -> str | None:
    """None when equal; else where they first differ, with some text either side."""
    if expected == actual:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    lo = max(0, at - context)
    return (
        f"first difference at character {at} (expected {len(expected)} chars, stored {len(actual)}): "
        f"expected {expected[lo : at + context]!r} / stored {actual[lo : at + context]!r}"
    )


def separator(text: str) -> str:
    """What run.py puts between a section and the next one's heading."""
    if not text or text.endswith("\n\n"):
        return ""
    return "\n" if text.endswith("\n") else "\n\n"


def check_single(markdown: str, user: str, ratio: float, truncated: bool) -> str | None:
    """The whole markdown against the demo's text for the request; a truncated one against its start."""
    expected = text_for_prompt(user, ratio)
    if truncated and expected.startswith(markdown):
        return None
    return first_difference(expected, markdown)


def check_planned(
    markdown: str,
    firsts: dict[tuple[int, str], tuple[str, int]],
    starts: list[int] | None,
    ratio: float,
    truncated: bool,
) -> str | None:
    """Section after section, from the start of the markdown: the recorded first request of section k whose
    portrait-so-far is the markdown up to here, the demo's text for it, the separator, then section k+1. Every
    section must be there, whole, up to the last one of the outline; a truncated portrait may stop inside
    one (its text a prefix of the demo's). The section starts found must be the stored outline's."""
    position, index, found = 0, 1, []
    while True:
        so_far = markdown[:position]
        request = firsts.get((index, so_far))
        if request is None:
            if truncated and position == len(markdown):
                break  # cut before the next section's first call was answered
            return f"section {index} (at character {position}): no recorded request with this text so far"
        user, count = request
        found.append(position)
        expected = text_for_prompt(user, ratio)
        rest = markdown[position:]
        if index == count:
            if rest == expected or (truncated and expected.startswith(rest)):
                break
            return f"section {index} of {count} (the last, at {position}): {first_difference(expected, rest)}"
        whole = expected + separator(so_far + expected)
        if rest.startswith(whole):
            position, index = position + len(whole), index + 1
            continue
        if truncated and whole.startswith(rest):
            break
        return f"section {index} of {count} (at {position}): {first_difference(whole, rest[: len(whole)])}"
    if starts is not None and starts != found:
        return f"the stored section starts {starts} are not where the sections begin: {found}"
    return None


# =====================================================================================================
# One mode
# =====================================================================================================


@dataclass
class Portrait:
    mode: str
    artist_id: int
    artist: str
    length: str
    target: int
    stored: bool = False
    truncated: bool | None = None
    finish_reason: str | None = None
    error: str | None = None
    words: int = 0
    length_score: float | None = None
    continuations: int = 0
    continued_events: int = 0
    continued_reasons: dict[str, int] = field(default_factory=dict)
    sections: int = 0  # in the stored outline (or begun, when stored without it); 0 when written in one call
    outline_stored: bool | None = None
    calls: int = 0
    wall_s: float = 0.0
    duration_ms: int | None = None
    deltas_match: bool | None = None
    seams_ok: bool | None = None
    seams_problem: str | None = None
    counts_ok: bool | None = None
    counts_problem: str | None = None
    calls_by_kind: dict[str, int] = field(
        default_factory=dict
    )  # "outline", "section", "single", "+continuation"
    last_call: str | None = None  # the kind of the portrait's last call (where a failed one stopped)


@dataclass
class ModeRun:
    mode: str
    portraits: list[Portrait]
    calls: list[Call]
    elapsed_s: float
    breaker: dict[str, Any]  # the circuit at the end (`Breaker.describe`)


async def write_one(
    portraits: PortraitService,
    articles: ArticleService,
    broker: InProcessBroker,
    artist: Artist,
    length: str,
    mode: str,
) -> tuple[Portrait, Job | None, list[Any]]:
    result = Portrait(mode, artist.id, artist.name, length, TARGET_WORDS[length])
    started = time.perf_counter()
    outcome = await portraits.open(PortraitRequest(artist.id, LANGUAGE, length, "job", TRUSTED))  # type: ignore[arg-type]
    if not isinstance(outcome, Accepted):
        result.error = f"not accepted: {type(outcome).__name__}"
        return result, None, []
    job = outcome.job
    await job.finished.wait()
    result.wall_s = time.perf_counter() - started
    batch = await broker.read(job.id, 0, wait=0)
    events = [] if batch is None else [event.payload for event in batch.events]
    return result, job, events


def summarise_events(result: Portrait, events: list[Any]) -> str:
    """Fill `result` from the job's events; returns the text the deltas add up to."""
    deltas: list[str] = []
    for payload in events:
        if isinstance(payload, Text):
            deltas.append(payload.delta)
        elif isinstance(payload, Continued):
            result.continued_events += 1
            result.continued_reasons[payload.reason] = result.continued_reasons.get(payload.reason, 0) + 1
        elif isinstance(payload, Done):
            result.stored = True
            result.truncated = payload.truncated
            result.finish_reason = payload.finish_reason
            result.words = payload.words
            result.length_score = payload.length_score
            result.continuations = payload.continuations
            result.duration_ms = payload.duration_ms
        elif isinstance(payload, Error):
            result.error = payload.code
        elif isinstance(payload, Outline | Section):
            pass
    return "".join(deltas)


async def run_mode(
    mode: str, artists: list[int], lengths: list[str], args: argparse.Namespace, tmp: Path
) -> ModeRun:
    database_url = f"sqlite+aiosqlite:///{tmp / f'{mode}.db'}"
    await asyncio.to_thread(migrations.upgrade, database_url)  # what `atelier migrate` runs
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        writer_plan=MODES[mode],
        llm_continuation="prefix",
        llm_max_continuations=args.max_continuations,
        demo_tokens_per_second=args.tokens_per_second,
    )
    profile = DemoProfile(
        stop_ratio=args.stop_ratio, max_words_per_call=args.max_words_per_call, drop_every=args.drop_every
    )
    recorder = Recorder(create_demo_app(settings.demo_tokens_per_second, profile))
    engine = create_engine(database_url)
    clock = SystemClock()
    broker = InProcessBroker(clock)
    http = upstream_http_client(UPSTREAM_CONNECTIONS, UPSTREAM_KEEPALIVE, pool_timeout=10)
    try:
        sessionmaker = create_sessionmaker(engine)
        await seed_catalog(sessionmaker)
        async with sessionmaker() as session:
            by_id = {a.id: a for a in (await session.scalars(select(Artist).order_by(Artist.id))).all()}
        chosen = [by_id[i] for i in artists if i in by_id]
        catalog = CatalogService(sessionmaker)
        articles = ArticleService(sessionmaker, upstream_configured=False)
        async with serve_beside(recorder) as base:
            writer = Writer(LLMClient(http, upstream_config(settings, base + "/v1")), "demo")
            portraits = build_portraits(
                settings, catalog=catalog, articles=articles, broker=broker, writer=writer, clock=clock
            )
            try:
                gate = asyncio.Semaphore(args.concurrency)

                async def one(artist: Artist, length: str) -> tuple[Portrait, Job | None, list[Any]]:
                    async with gate:
                        return await write_one(portraits, articles, broker, artist, length, mode)

                started = time.perf_counter()
                outcomes = await asyncio.gather(*(one(a, n) for a in chosen for n in lengths))
                elapsed = time.perf_counter() - started
                breaker = await portraits.breaker.describe()
            finally:
                await portraits.registry.aclose()
        calls = [parse_call(body) for body in recorder.bodies]
        results = [await verify(r, job, events, calls, articles, args) for r, job, events in outcomes]
    finally:
        await http.aclose()
        await broker.aclose()
        await engine.dispose()
    return ModeRun(mode, results, calls, elapsed, breaker)


async def verify(
    result: Portrait,
    job: Job | None,
    events: list[Any],
    calls: list[Call],
    articles: ArticleService,
    args: argparse.Namespace,
) -> Portrait:
    if job is None:
        return result
    joined = summarise_events(result, events)
    user = prompt.user_message(job.facts, job.language, job.length)
    key = (facts_document(user), result.target)
    mine = [c for c in calls if c.portrait == key]
    result.calls = len(mine)
    for c in mine:
        kind = c.kind + (" continuation" if c.continuation else "")
        result.calls_by_kind[kind] = result.calls_by_kind.get(kind, 0) + 1
    result.last_call = (mine[-1].kind + (" continuation" if mine[-1].continuation else "")) if mine else None
    if not result.stored or job.article_id is None:
        return result
    found = await articles.find_with_artist(job.article_id)
    assert found is not None
    article = found[0]
    markdown = article.markdown
    result.deltas_match = joined == markdown
    if article.length_score != result.length_score:
        result.counts_problem = f"stored length_score {article.length_score} != done {result.length_score}"
    outline = article.outline
    truncated = bool(result.truncated)
    result.outline_stored = outline is not None
    firsts = {
        (c.section or 0, c.so_far or ""): (c.user, c.count or 0)
        for c in mine
        if c.kind == "section" and not c.continuation
    }
    if firsts:  # planned (stored with its outline, or truncated without it)
        starts = [int(s["start"]) for s in outline["sections"]] if outline else None
        result.sections = len(starts) if starts else len(firsts)
        problem = check_planned(markdown, firsts, starts, args.stop_ratio, truncated)
        # every outline call (a broken one is asked again once, with no seam: no text was written), then each
        # section begun (a section asked again is a seam)
        units = sum(c.kind == "outline" for c in mine) + len(firsts)
    else:
        recorded = [c.user for c in mine if c.kind == "single" and not c.continuation]
        problem = check_single(markdown, user, args.stop_ratio, truncated)
        if problem is None and recorded and recorded[0] != user:
            problem = "the recorded request is not prompt.user_message(...)"
        # the outline calls (unreadable, or broken twice), then one call
        units = 1 + sum(c.kind == "outline" for c in mine)
    result.seams_ok = problem is None
    result.seams_problem = problem
    seams = result.calls - units
    counted = {result.continuations, result.continued_events, seams}
    if len(counted) != 1:
        result.counts_problem = (
            f"done.continuations={result.continuations}, continued events={result.continued_events}, "
            f"calls beyond one per unit={seams}"
        )
    result.counts_ok = result.counts_problem is None
    return result


# =====================================================================================================
# Tables
# =====================================================================================================


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def aggregate(rows: list[Portrait]) -> dict[str, Any]:
    stored = [r for r in rows if r.stored]
    complete = [r for r in stored if not r.truncated]
    scores = [r.length_score for r in stored if r.length_score is not None]
    ratios = [r.words / r.target for r in stored]
    return {
        "portraits": len(rows),
        "complete_pct": 100 * len(complete) / len(rows) if rows else None,
        "truncated": sum(1 for r in stored if r.truncated),
        "failed": len(rows) - len(stored),
        "words_pct": 100 * _mean(ratios) if ratios else None,
        "score_mean": _mean(scores),
        "score_min": min(scores) if scores else None,
        "cont_mean": _mean([r.continuations for r in stored]),
        "cont_max": max((r.continuations for r in stored), default=None),
        "words_mean": _mean([r.words for r in stored]),
        "calls": sum(r.calls for r in rows),
        "calls_per": _mean([r.calls for r in rows]),
        "wall_mean": _mean([r.wall_s for r in stored]),  # a failed portrait's short life would flatter it
        "seams_ok": sum(1 for r in stored if r.seams_ok and r.deltas_match),
        "counts_ok": sum(1 for r in stored if r.counts_ok),
        "stored": len(stored),
        "reasons": _reasons(rows),
    }


def _reasons(rows: list[Portrait]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in rows:
        for reason, n in r.continued_reasons.items():
            total[reason] = total.get(reason, 0) + n
    return total


HEADER = (
    "| mode | length | portraits | complete | failed | words (% of target) | S_l mean | S_l min "
    "| continuations mean / max | upstream calls (per portrait) | wall per portrait, mean | seams exact "
    "| counts agree |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def table_row(mode: str, length: str, a: dict[str, Any]) -> str:
    return (
        f"| {mode} | {length} | {a['portraits']} | {_fmt(a['complete_pct'], '.0f')} % | {a['failed']} "
        f"| {_fmt(a['words_pct'], '.0f')} % | {_fmt(a['score_mean'])} | {_fmt(a['score_min'])} "
        f"| {_fmt(a['cont_mean'], '.1f')} / {a['cont_max'] if a['cont_max'] is not None else '–'} "
        f"| {a['calls']} ({_fmt(a['calls_per'], '.1f')}) | {_fmt(a['wall_mean'], '.2f')} s "
        f"| {a['seams_ok']}/{a['stored']} | {a['counts_ok']}/{a['stored']} |"
    )


def report(runs: list[ModeRun], lengths: list[str], meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    lines = [HEADER]
    summary: dict[str, Any] = {}
    for run in runs:
        summary[run.mode] = {}
        for length in lengths:
            a = aggregate([r for r in run.portraits if r.length == length])
            summary[run.mode][length] = a
            lines.append(table_row(run.mode, f"{length} ({TARGET_WORDS[length]})", a))
        a = aggregate(run.portraits)
        summary[run.mode]["all"] = a
        lines.append(table_row(f"**{run.mode}**", "**all**", a))
    by_mode = {run.mode: run for run in runs}
    if "single" in by_mode and "planned" in by_mode:
        lines += [
            "",
            "| length | wall, single | wall, planned | planning's time overhead | words, single | words, planned "
            "| time per 1000 words written, single / planned |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for length in [*lengths, "all"]:
            s, p = summary["single"][length], summary["planned"][length]
            words_s, words_p = s["words_mean"], p["words_mean"]
            overhead = (
                100 * (p["wall_mean"] / s["wall_mean"] - 1) if s["wall_mean"] and p["wall_mean"] else None
            )
            per_s = 1000 * s["wall_mean"] / words_s if words_s else None
            per_p = 1000 * p["wall_mean"] / words_p if words_p else None
            lines.append(
                f"| {length} | {_fmt(s['wall_mean'], '.2f')} s | {_fmt(p['wall_mean'], '.2f')} s "
                f"| {_fmt(overhead, '+.0f')} % | {_fmt(words_s, '.0f')} | {_fmt(words_p, '.0f')} "
                f"| {_fmt(per_s, '.2f')} s / {_fmt(per_p, '.2f')} s |"
            )
    lines += [
        "",
        "| mode | run time | upstream calls (by kind) | `continued` by reason | circuit at the end |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for run in runs:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary[run.mode]["all"]["reasons"].items()))
        kinds: dict[str, int] = {}
        for c in run.calls:
            kind = c.kind + (" continuation" if c.continuation else "")
            kinds[kind] = kinds.get(kind, 0) + 1
        by_kind = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
        lines.append(
            f"| {run.mode} | {run.elapsed_s:.1f} s | {len(run.calls)} ({by_kind}) | {reasons or '–'} "
            f"| {run.breaker.get('state', '?')} |"
        )
    problems = [
        f"- {r.mode} {r.artist} ({r.artist_id}) {r.length}: "
        + "; ".join(
            p
            for p in (
                r.error and f"error {r.error} after {r.calls} call(s), the last one: {r.last_call}",
                r.truncated and f"truncated ({r.finish_reason})",
                r.seams_problem,
                r.deltas_match is False and "the text deltas joined differ from the stored markdown",
                r.counts_problem,
                r.sections and r.outline_stored is False and "stored without its outline",
            )
            if p
        )
        for run in runs
        for r in run.portraits
        if r.error
        or r.truncated
        or r.seams_problem
        or r.deltas_match is False
        or r.counts_problem
        or (r.sections and r.outline_stored is False)
    ]
    settings = ", ".join(f"{k}={v}" for k, v in meta["settings"].items())
    text = "\n".join(
        [
            f"Profile: {meta['profile']}. Settings: {settings}. {meta['artists']} artists, concurrency "
            f"{meta['concurrency']}, {meta['machine']}.",
            "",
            *lines,
        ]
    )
    if problems:
        text += "\n\nPortraits that did not come out whole or exact:\n" + "\n".join(problems[:40])
        if len(problems) > 40:
            text += f"\n- ... and {len(problems) - 40} more (in the JSON)"
    return text, summary


# =====================================================================================================
# Main
# =====================================================================================================


async def main_async(args: argparse.Namespace) -> int:
    lengths = args.lengths
    artists = list(range(1, (8 if args.quick else args.artists) + 1))
    runs: list[ModeRun] = []
    with tempfile.TemporaryDirectory(prefix="atelier-longform-") as tmp:
        for mode in args.modes:
            log(
                f"{mode} (ATELIER_WRITER_PLAN={MODES[mode]}): {len(artists)} artists x {', '.join(lengths)} ..."
            )
            run = await run_mode(mode, artists, lengths, args, Path(tmp))
            log(
                f"{mode}: {len(run.portraits)} portraits, {len(run.calls)} upstream calls in {run.elapsed_s:.1f} s"
            )
            runs.append(run)
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": (
            f"stop_ratio={args.stop_ratio}, max_words_per_call={args.max_words_per_call}, "
            f"drop_every={args.drop_every}"
        ),
        "settings": {
            "ATELIER_WRITER_PLAN": "never (single) / always (planned)",
            "ATELIER_LLM_CONTINUATION": "prefix",
            "ATELIER_LLM_MAX_CONTINUATIONS": args.max_continuations,
            "ATELIER_DEMO_TOKENS_PER_SECOND": args.tokens_per_second,
            "ATELIER_LLM_MAX_TOKENS": 6000,
        },
        "artists": len(artists),
        "lengths": lengths,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    text, summary = report(runs, lengths, meta)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"longform-{stamp}.md").write_text(text + "\n")
    document = {
        "meta": meta,
        "summary": summary,
        "portraits": [asdict(r) for run in runs for r in run.portraits],
        "elapsed_s": {run.mode: run.elapsed_s for run in runs},
        "breaker": {run.mode: run.breaker for run in runs},
    }
    (results / f"longform-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    log(f"wrote bench/results/longform-{stamp}.{{json,md}}")
    bad = any(
        r.stored and (not r.seams_ok or not r.deltas_match or not r.counts_ok)
        for run in runs
        for r in run.portraits
    )
    return 1 if bad else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 artists instead of --artists")
    p.add_argument("--artists", type=int, default=32, help="the first N sample artists (default 32: all)")
    p.add_argument("--lengths", nargs="+", choices=sorted(TARGET_WORDS), default=["short", "medium", "long"])
    p.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["single", "planned"])
    p.add_argument("--concurrency", type=int, default=8, help="portraits written at once (default 8)")
    p.add_argument("--tokens-per-second", type=float, default=5000, help="the demo writer's pace per call")
    p.add_argument("--max-continuations", type=int, default=16, help="ATELIER_LLM_MAX_CONTINUATIONS")
    p.add_argument("--stop-ratio", type=float, default=0.65)
    p.add_argument("--max-words-per-call", type=int, default=300)
    p.add_argument("--drop-every", type=int, default=5)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
