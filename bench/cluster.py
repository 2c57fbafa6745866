"""Several Atelier processes on Redis: takeover after SIGKILL, and Redis memory per retained portrait log.

    .venv/bin/python bench/cluster.py                  # both, with the defaults: about 3 minutes on 2 cores
    .venv/bin/python bench/cluster.py takeover --portraits 12 --leases 5:1,1:0.25
    .venv/bin/python bench/cluster.py memory --portraits 20

Processes, all on 127.0.0.1 (the plumbing is bench/relay.py's): the relay benchmark's fake upstream
(`relay.py upstream`, every token `w<seq>@<CLOCK_MONOTONIC ns> `, or `w<seq> ` for the memory run), a private
redis-server on a free port (nothing saved; never the machine's shared one), a fresh SQLite database, and two
Atelier processes A and B (`python -m uvicorn app.main:app`, as an operator starts them, with Atelier's own
INFO log lines in `<tmp>/logs/`), with the same ATELIER_DATABASE_URL, ATELIER_REDIS_URL and key prefix.

`takeover`, once per `--leases` pair (ATELIER_JOB_LEASE:ATELIER_JOB_SCAN; the first is the defaults): K
portraits started on A (`POST .../jobs`), each read from B (`GET /api/v1/jobs/{id}/stream`) by a reader that
stamps every event on receipt; `--kill-after` seconds later A gets SIGKILL. Per reader: from the kill to the
`continued` event with `reason: takeover`, to the first text after it, and to `done`; no gap and no repeat:
the event ids only ever increase (a reader catching up gets one merged `text` for several seqs, so ids may
skip), and the text of each upstream call is `w1 w2 ...` exactly (the tokens carry their own numbers); the
streamed text against the article stored (one version per portrait,
`GET .../article/versions`); and the upstream calls (K on A, K continuations on B). A job is taken over when
its owner's lease has expired (the owner renews it every min(scan, lease / 3) s) and a survivor's tick (every
min(scan, lease / 3) s) finds it, at most 8 per tick (`TAKEOVERS_PER_TICK`): so the expected time is
lease - renewal interval .. lease + tick, one tick more for each further 8 jobs.

`memory`: N finished portraits per length (short: 600 words, long: 3,000; ATELIER_WRITER_PLAN=never, so one
call each), one word per upstream delta, i.e. one log entry per word, with the bench's 22-byte tokens and with
word-sized ones (`w<seq> `, 5-6 bytes); then `MEMORY USAGE <prefix>log:<job id> SAMPLES 0` of each log, and
`INFO memory` used_memory before and after (which counts the job records kept beside the logs too).

Output: markdown tables on stdout; JSON in bench/results/ (git-ignored). Figures and their reading:
docs/performance.md, "Several processes on Redis".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from relay import BENCH, HOST, PY, TOKEN, TOKEN_RE, Bench, Child, fmt, free_port, log, raise_nofile, wait_http

AUTH = {"Authorization": f"Bearer {TOKEN}"}
ID_RE = re.compile(r"^(?P<stream>.+):(?P<seq>\d+)$")
TAKEOVERS_PER_TICK = 8  # app/generation/registry.py

# Atelier's own INFO lines (jobs started, taken over, given up) beside uvicorn's, as tests/cluster does.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        "atelier": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "app": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


class Cluster:
    """Bench's plumbing (upstream, database, artists, redis-server) and processes A and B on top of it."""

    def __init__(self, args: argparse.Namespace) -> None:
        bench_args = argparse.Namespace(
            database_url=None,
            keep_tmp=args.keep_tmp,
            systems="atelier-redis",
            redis_server=args.redis_server,
            rate=args.rate,
            atelier_cmd=None,
        )
        self.bench = Bench(bench_args)
        self.args = args
        self.nodes: dict[str, tuple[Child, int]] = {}
        self.next_artist = 0
        self.log_config = self.bench.tmp / "logging.json"
        self.log_config.write_text(json.dumps(LOG_CONFIG))

    def setup(self, artists: int) -> None:
        self.bench.setup(artists)

    def artists(self, k: int) -> list[int]:
        """K artists no earlier scenario wrote (so each has exactly the versions this one stores)."""
        chosen = self.bench.artist_ids[self.next_artist : self.next_artist + k]
        if len(chosen) < k:
            raise RuntimeError(f"not enough artists: {len(chosen)} left, {k} needed")
        self.next_artist += k
        return chosen

    def start(self, **settings: str) -> None:
        """A and B afresh, on a flushed Redis, with these ATELIER_* settings (without the prefix)."""
        self.stop()
        bench = self.bench
        bench.redis_call("FLUSHALL")
        env = bench.atelier_env()
        env.update(
            ATELIER_REDIS_URL=f"redis://{HOST}:{bench.redis_port}/0",
            ATELIER_REDIS_PREFIX=bench.redis_prefix,
            **{f"ATELIER_{name.upper()}": value for name, value in settings.items()},
        )
        for name in ("a", "b"):
            port = free_port()
            argv = [PY, "-m", "uvicorn", "app.main:app", "--host", HOST, "--port", str(port)]
            argv += ["--log-config", str(self.log_config)]
            self.nodes[name] = (bench.spawn(f"{name}-{port}", argv, env), port)
        for child, port in self.nodes.values():
            wait_http(f"http://{HOST}:{port}/health", child)

    def stop(self) -> None:
        for child, _port in self.nodes.values():
            self.bench.stop(child)
        self.nodes.clear()

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.nodes[name][1]}"

    def close(self) -> None:
        self.stop()
        self.bench.close()


# =====================================================================================================
# Takeover
# =====================================================================================================


async def read_job(client: httpx.AsyncClient, url: str, deadline: float) -> dict[str, Any]:
    """One reader: every event as (receive ns, id, type, data), until `done`/`error`, EOF or the deadline."""
    events: list[tuple[int, str | None, str, str]] = []
    status = "incomplete"
    try:
        async with asyncio.timeout_at(deadline), client.stream("GET", url) as response:
            if response.status_code != 200:
                return {"status": f"http {response.status_code}", "events": events}
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
                    continue
                if "data" in fields:
                    kind = fields.get("event", "message")
                    events.append((time.monotonic_ns(), fields.get("id"), kind, fields["data"]))
                    if kind in ("done", "error"):
                        status = kind
                        break
                fields = {}
            else:
                status = "eof"
    except TimeoutError:
        status = "timeout"
    except httpx.HTTPError as exc:
        status = f"broken: {type(exc).__name__}"
    return {"status": status, "events": events}


def ids_check(events: list[tuple[int, str | None, str, str]]) -> tuple[int, int, int]:
    """(events with an id, gaps, repeats) of one reader's stream: every seq from 1 once, in order."""
    seqs = []
    for _t, event_id, _kind, _data in events:
        match = ID_RE.match(event_id or "")
        if match:
            seqs.append(int(match.group("seq")))
    gaps = repeats = 0
    last = 0
    for seq in seqs:
        if seq <= last:
            repeats += 1
            continue
        gaps += seq - last - 1
        last = seq
    return len(seqs), gaps, repeats


async def takeover_run(cluster: Cluster, lease: float, scan: float) -> dict[str, Any]:
    args = cluster.args
    bench = cluster.bench
    cluster.start(job_lease=f"{lease:g}", job_scan=f"{scan:g}")
    k = args.portraits
    artists = cluster.artists(k)
    bench.control(tokens=args.tokens, rate=args.rate, compact=0, reset=1)
    loop = asyncio.get_running_loop()
    a_child = cluster.nodes["a"][0]
    limits = httpx.Limits(max_connections=k + 10)
    async with (
        httpx.AsyncClient(base_url=cluster.url("a"), headers=AUTH, timeout=30, limits=limits) as on_a,
        httpx.AsyncClient(base_url=cluster.url("b"), headers=AUTH, timeout=30, limits=limits) as on_b,
    ):
        jobs = []
        for artist in artists:
            response = await on_a.post(f"/api/v1/collection/artists/{artist}/article/jobs?length=short")
            response.raise_for_status()
            jobs.append(response.json()["job_id"])
        t_started = time.monotonic_ns()
        deadline = loop.time() + args.tokens / args.rate * 3 + lease + 60
        readers = [
            asyncio.ensure_future(read_job(on_b, f"/api/v1/jobs/{job}/stream", deadline)) for job in jobs
        ]
        await asyncio.sleep(args.kill_after)
        t_kill = time.monotonic_ns()
        os.kill(a_child.pid, signal.SIGKILL)
        log(
            f"lease {lease:g} s, scan {scan:g} s: SIGKILL to A ({a_child.pid}) {(t_kill - t_started) / 1e9:.1f}s in"
        )
        results = await asyncio.gather(*readers)
        await asyncio.sleep(1.0)  # the last article's commit, before reading what was stored
        rows = []
        for artist, job, got in zip(artists, jobs, results, strict=True):
            versions = (await on_b.get(f"/api/v1/collection/artists/{artist}/article/versions")).json()[
                "items"
            ]
            article = await on_b.get(f"/api/v1/collection/artists/{artist}/article?length=short")
            status = (await on_b.get(f"/api/v1/jobs/{job}")).json()
            rows.append(reader_row(got, t_kill, versions, article, status))
    stats = bench.upstream_stats()
    b_child = cluster.nodes["b"][0]
    cluster.stop()
    b_log = b_child.log_path.read_text(errors="replace")
    return summarize_takeover(lease, scan, k, rows, stats, b_log, bench)


def reader_row(
    got: dict[str, Any],
    t_kill: int,
    versions: list[dict[str, Any]],
    article: httpx.Response,
    status: dict[str, Any],
) -> dict[str, Any]:
    events = got["events"]

    def ms(t: int | None) -> float | None:
        return None if t is None else (t - t_kill) / 1e6

    t_continued = t_first_new = t_done = t_last_before = None
    reasons = []
    text = []
    segments: list[list[str]] = [[]]  # the text of each upstream call: split at every `continued`
    for t, _id, kind, data in events:
        if kind == "text":
            text.append(json.loads(data)["delta"])
            segments[-1].append(text[-1])
            if t_continued is None and t < t_kill:
                t_last_before = t
            if t_continued is not None and t_first_new is None:
                t_first_new = t
        elif kind == "continued":
            reason = json.loads(data).get("reason")
            reasons.append(reason)
            segments.append([])
            if reason == "takeover" and t_continued is None:
                t_continued = t
        elif kind == "done":
            t_done = t
    with_ids, merged, repeats = ids_check(events)
    # Lost or repeated text: each upstream call's tokens are w1, w2, ... in order, so every segment must be
    # exactly that; a merged event (a reader catching up gets one `text` for several seqs) skips ids, not text.
    gaps = 0
    for segment in segments:
        seqs = [int(m.group(1)) for m in TOKEN_RE.finditer("".join(segment))]
        if seqs != list(range(1, len(seqs) + 1)):
            gaps += 1
    stored = article.json().get("markdown") if article.status_code == 200 else None
    streamed = "".join(text)
    return {
        "status": got["status"],
        "events": len(events),
        "with_ids": with_ids,
        "ids_skipped_by_merging": merged,
        "segments": [len(TOKEN_RE.findall("".join(segment))) for segment in segments],
        "gaps": gaps,
        "repeats": repeats,
        "continued_reasons": reasons,
        "kill_to_continued_ms": ms(t_continued),
        "kill_to_new_text_ms": ms(t_first_new),
        "kill_to_done_ms": ms(t_done),
        "last_text_before_kill_ms": ms(t_last_before),
        "versions": len(versions),
        "stored_matches": stored is not None and stored.strip() == streamed.strip(),
        "stored_chars": None if stored is None else len(stored),
        "streamed_chars": len(streamed),
        "job_status": status.get("status"),
        "job_error": status.get("error"),
    }


def summarize_takeover(
    lease: float,
    scan: float,
    k: int,
    rows: list[dict[str, Any]],
    stats: dict[str, Any],
    b_log: str,
    bench: Bench,
) -> dict[str, Any]:
    def spread(key: str) -> dict[str, float | None]:
        values = [r[key] / 1000 for r in rows if r[key] is not None]
        if not values:
            return {"min": None, "median": None, "max": None, "n": 0}
        return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}

    tick = min(scan, lease / 3)
    return {
        "lease_s": lease,
        "scan_s": scan,
        "tick_s": tick,
        "expected_s": [lease - tick, lease + tick * (1 + (k - 1) // TAKEOVERS_PER_TICK)],
        "portraits": k,
        "continued_s": spread("kill_to_continued_ms"),
        "new_text_s": spread("kill_to_new_text_ms"),
        "done_s": spread("kill_to_done_ms"),
        "readers_done": sum(r["status"] == "done" for r in rows),
        "statuses": sorted({r["status"] for r in rows}),
        "gaps": sum(r["gaps"] for r in rows),
        "repeats": sum(r["repeats"] for r in rows),
        "one_article_each": all(r["versions"] == 1 for r in rows),
        "versions": [r["versions"] for r in rows],
        "texts_match_stored": sum(r["stored_matches"] for r in rows),
        "takeover_seams": sum(r["continued_reasons"].count("takeover") for r in rows),
        "upstream_calls": stats.get("started"),
        "upstream_aborted": stats.get("aborted"),
        "taken_over_logged": b_log.count("taken over at seq"),
        "b_log_errors": [line for line in b_log.splitlines() if " ERROR " in line][:20],
        "rows": rows,
    }


def takeover_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| lease / scan s (tick) | portraits | kill → `continued` (takeover) s, min / median / max "
        "| kill → first new text s | kill → `done` s | expected s | readers done | text gaps / repeated ids "
        "| one article each | streamed = stored | upstream calls |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|\n"
    )

    def three(s: dict[str, float | None]) -> str:
        return f"{fmt(s['min'], 2)} / {fmt(s['median'], 2)} / {fmt(s['max'], 2)}"

    rows = []
    for r in runs:
        lo, hi = r["expected_s"]
        rows.append(
            f"| {r['lease_s']:g} / {r['scan_s']:g} ({r['tick_s']:.2g}) | {r['portraits']} | {three(r['continued_s'])} "
            f"| {three(r['new_text_s'])} | {three(r['done_s'])} | {lo:.2g}-{hi:.2g} | {r['readers_done']}/{r['portraits']} "
            f"| {r['gaps']} / {r['repeats']} | {'yes' if r['one_article_each'] else 'NO: ' + str(r['versions'])} "
            f"| {r['texts_match_stored']}/{r['portraits']} | {r['upstream_calls']} |"
        )
    return head + "\n".join(rows) + "\n"


# =====================================================================================================
# Memory
# =====================================================================================================


async def memory_run(cluster: Cluster, length: str, words: int, compact: bool) -> dict[str, Any]:
    args = cluster.args
    bench = cluster.bench
    cluster.start(writer_plan="never")
    n = args.portraits
    artists = cluster.artists(n)
    bench.control(tokens=words, rate=args.memory_rate, compact=int(compact), reset=1)
    prefix = bench.redis_prefix
    before = bench.redis_call("INFO", "memory")["used_memory"]
    async with (
        httpx.AsyncClient(base_url=cluster.url("a"), headers=AUTH, timeout=30) as on_a,
        httpx.AsyncClient(base_url=cluster.url("b"), headers=AUTH, timeout=30) as on_b,
    ):
        jobs = []
        for i, artist in enumerate(artists):
            client = on_a if i % 2 == 0 else on_b
            response = await client.post(f"/api/v1/collection/artists/{artist}/article/jobs?length={length}")
            response.raise_for_status()
            jobs.append(response.json()["job_id"])
        deadline = time.monotonic() + words / args.memory_rate * 4 + 60
        statuses: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            for job in jobs:
                if statuses.get(job, {}).get("status") not in ("done", "error", "cancelled"):
                    statuses[job] = (await on_a.get(f"/api/v1/jobs/{job}")).json()
            if all(s.get("status") in ("done", "error", "cancelled") for s in statuses.values()):
                break
            await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)
    after = bench.redis_call("INFO", "memory")["used_memory"]
    logs, records, entries, chars = [], [], [], []
    for job in jobs:
        logs.append(int(bench.redis_call("MEMORY", "USAGE", f"{prefix}log:{job}", "SAMPLES", "0") or 0))
        records.append(int(bench.redis_call("MEMORY", "USAGE", f"{prefix}job:{job}", "SAMPLES", "0") or 0))
        entries.append(int(bench.redis_call("XLEN", f"{prefix}log:{job}")))
        text = [
            fields.get(b"d", b"")
            for _id, fields in bench.redis_call("XRANGE", f"{prefix}log:{job}", "-", "+")
            if fields.get(b"t") == b"text"
        ]
        chars.append(sum(len(t) for t in text))
    ttl = bench.redis_call("PTTL", f"{prefix}log:{jobs[0]}")
    cluster.stop()
    done = sum(s.get("status") == "done" for s in statuses.values())
    stored_words = [s.get("words", 0) for s in statuses.values()]
    per_log = statistics.mean(logs)
    per_words = words  # one word per delta (Atelier's own count splits `w1@<ns>` in two)
    return {
        "length": length,
        "tokens": "w<seq> (5-6 bytes)" if compact else "w<seq>@<ns> (22 bytes)",
        "portraits": n,
        "done": done,
        "words": per_words,
        "stored_words": statistics.mean(stored_words) if stored_words else None,
        "entries": statistics.mean(entries),
        "text_bytes": statistics.mean(chars),
        "log_bytes": per_log,
        "log_bytes_per_1000_words": per_log / per_words * 1000,
        "log_bytes_per_entry": per_log / statistics.mean(entries),
        "overhead_per_entry": (per_log - statistics.mean(chars)) / statistics.mean(entries),
        "record_bytes": statistics.mean(records),
        "used_memory_delta_per_portrait": (after - before) / n,
        "used_memory_delta_per_1000_words": (after - before) / n / per_words * 1000,
        "log_ttl_s": ttl / 1000 if ttl and ttl > 0 else ttl,
    }


def memory_table(runs: list[dict[str, Any]]) -> str:
    head = (
        "| length | tokens | portraits (done) | words | log entries | text bytes | MEMORY USAGE of a log, bytes "
        "| per 1,000 words | per entry (overhead beyond the text) | job record | INFO used_memory Δ per portrait "
        "| per 1,000 words |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r['length']} | {r['tokens']} | {r['portraits']} ({r['done']}) | {r['words']:,.0f} | {r['entries']:,.0f} "
        f"| {r['text_bytes']:,.0f} | {r['log_bytes']:,.0f} | {r['log_bytes_per_1000_words']:,.0f} "
        f"| {r['log_bytes_per_entry']:.1f} ({r['overhead_per_entry']:.1f}) | {r['record_bytes']:,.0f} "
        f"| {r['used_memory_delta_per_portrait']:,.0f} | {r['used_memory_delta_per_1000_words']:,.0f} |"
        for r in runs
    ]
    return head + "\n".join(rows) + "\n"


# =====================================================================================================
# Main
# =====================================================================================================


def parse_leases(value: str) -> list[tuple[float, float]]:
    pairs = []
    for part in value.split(","):
        if part.strip():
            lease, _, scan = part.partition(":")
            pairs.append((float(lease), float(scan or 1)))
    return pairs


async def main_async(args: argparse.Namespace, cluster: Cluster) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.command in ("all", "takeover"):
        out["takeover"] = [
            await takeover_run(cluster, lease, scan) for lease, scan in parse_leases(args.leases)
        ]
    if args.command in ("all", "memory"):
        runs = []
        for compact in (False, True):
            for length, words in (("short", 600), ("long", 3000)):
                runs.append(await memory_run(cluster, length, words, compact))
                log(f"memory: {length}, compact={compact}: {runs[-1]['log_bytes']:,.0f} bytes per log")
        out["memory"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Several Atelier processes on Redis: takeover after SIGKILL, Redis memory per portrait.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=("all", "takeover", "memory"), default="all")
    parser.add_argument("--portraits", type=int, default=12, help="K portraits killed (takeover), N (memory)")
    parser.add_argument(
        "--leases",
        default="5:1,1:0.25",
        help="ATELIER_JOB_LEASE:ATELIER_JOB_SCAN pairs for takeover runs (5:1 are the defaults)",
    )
    parser.add_argument("--tokens", type=int, default=1000, help="takeover: tokens per upstream call")
    parser.add_argument("--rate", type=float, default=50.0, help="takeover: upstream tokens/s per stream")
    parser.add_argument(
        "--kill-after", type=float, default=3.0, help="takeover: seconds from start to SIGKILL"
    )
    parser.add_argument(
        "--memory-rate", type=float, default=1000.0, help="memory: upstream tokens/s per stream"
    )
    parser.add_argument("--redis-server", default="redis-server")
    parser.add_argument("--out", default=str(BENCH / "results"))
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (logs, database)"
    )
    args = parser.parse_args(argv)
    raise_nofile()
    cluster = Cluster(args)
    needed = args.portraits * (len(parse_leases(args.leases)) + 4)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        cluster.setup(needed)
        out = asyncio.run(main_async(args, cluster))
    finally:
        with contextlib.suppress(Exception):
            cluster.close()
    md = ""
    if "takeover" in out:
        md += "Takeover after SIGKILL of A (readers on B):\n\n" + takeover_table(out["takeover"]) + "\n"
        for r in out["takeover"]:
            if r["b_log_errors"]:
                md += f"B logged errors (lease {r['lease_s']:g}): {r['b_log_errors']}\n"
    if "memory" in out:
        md += "Redis memory per retained portrait log:\n\n" + memory_table(out["memory"]) + "\n"
    print(f"\n{md}")
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (outdir / f"cluster-{stamp}.json").write_text(json.dumps({"argv": sys.argv, **out}, indent=1))
    (outdir / f"cluster-{stamp}.md").write_text(md)
    log(f"results: {outdir}/cluster-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
