"""Read-path benchmark: the read routes of a stored portrait against the app's own `/health`, in one run,
with issue 10's bars checked, the shipped nginx micro-cache, the uncached (miss) path, and memory.

    .venv/bin/python bench/reads.py            # 64 connections, 1 s warm-up + 5 s per route: about 4 minutes
    .venv/bin/python bench/reads.py --quick    # 1 s warm-up + 2 s per route (wrk): about 2 minutes
    .venv/bin/python bench/reads.py --quick --postgres-url postgresql+asyncpg://postgres@127.0.0.1:5432/atelier_bench_reads
    .venv/bin/python bench/reads.py --quick --memory        # adds the memory section (10,000 portraits)
    .venv/bin/python bench/reads.py --quick --memory-only   # only the memory section

Processes, all on 127.0.0.1, started here and stopped at the end, one benchmark at a time:
- Atelier: `atelier migrate`, `atelier seed`, then one `atelier serve` (one uvicorn process, the default
  httptools parser) on a fresh SQLite file in a temporary directory, with the embedded demo writer (no
  ATELIER_LLM_BASE_URL) at ATELIER_DEMO_TOKENS_PER_SECOND=100000, and the read cache at its defaults
  (ATELIER_READ_CACHE_MB=64, ATELIER_READ_CACHE_TTL=5). The `long` portrait of artist 1 is written once
  through the API (`POST /api/v1/collection/artists/1/article?length=long` with a token), then only read;
- the load generator: `wrk` (Debian: `apt-get install -y wrk`) with one thread by default, or, when wrk is
  not installed (or with `--loadgen python`), this file's own: raw asyncio streams, HTTP/1.1 keep-alive,
  N connections each sending its next request as soon as the previous answer is read in full (chunked
  bodies too), for a fixed duration;
- nginx (`/usr/sbin/nginx`, when it exists; `--no-nginx` skips it), twice: (1) the shipped nginx.conf,
  rendered by `tests.nginx.servers.render_nginx_conf` (its ports, paths and micro-cache directory moved to
  the temporary directory; `worker_processes auto` as shipped), in front of the same `atelier serve`, asked
  with `Host: atelier.example.com` (the only name it answers); (2) a minimal one-process nginx serving the
  article JSON bytes as a static file: the ceiling for that response on this machine.

Sections, in this order:
1. `main` (cache on, SQLite), each route after a short uncounted warm-up: `/health` (the reference, run
   again at the end to show drift), the stored article as JSON, as markdown, as JSON with `If-None-Match` of
   its ETag (must be 304), HEAD of it, the artist page, the replay stream read to its end, the catalog API,
   the home page, one artist through the API.
2. `nginx`: through the shipped nginx.conf, the hot article JSON and the artist page (micro-cached), and the
   very same bytes of each served by that nginx as static files (written into its `/static/` directory):
   the ratio of each to its static twin is the bar (≥ 80 %). The app's CPU in the window shows what still
   reached it (about one revalidation per second per URL). Then the minimal static nginx row.
3. `miss-sqlite` and, with `--postgres-url`, `miss-postgres` (`--no-miss-path` skips both): the same routes
   (HEAD aside) with ATELIER_READ_CACHE_MB=0 (nothing kept: every read is a build), against that server's
   own `/health`: what a read costs when it is not cached. For PostgreSQL the database named in the URL is
   created here (it must not exist; `test` and the maintenance databases are refused), migrated, seeded,
   given the same portrait, and dropped at the end.
4. `memory` (`--memory`, or `--memory-only`): `atelier seed --synthetic` artists up to 10,000 with a stored
   `long` portrait each (rows copied from the demo-written one with the artist's name on top: about 20 kB
   of markdown and its HTML each, inserted with one INSERT ... SELECT), then, per bound in
   `--memory-bounds` (MB; 0 is the control: nothing kept), a fresh server with ATELIER_READ_CACHE_MB=bound
   and ATELIER_READ_CACHE_TTL=3600 (so the bound, not the TTL, limits what is kept). RSS (VmRSS of
   /proc/<pid>/status) is read after a `/health` warm-up (the baseline), then every 0.1 s while wrk reads
   the article JSON of a random one of the 10,000 per request (a Lua `request()`), for `--memory-duration`
   seconds. The server runs through `reads.py serve` (`atelier`'s own CLI, plus a SIGUSR1 handler that
   writes the read cache's counters: hits, misses, entries, bytes), so the hit ratio is observed, not guessed.

Columns: requests per second; as a percentage of the section's reference (`/health` of the same server and
load generator; in `nginx`, the static twin); latency p50 / p99 (wrk's own histogram, or exact
percentiles from the fallback); body bytes of one answer; wire bytes per answer (headers included, from the
load generator's byte count: a 304 that turned into 200 under load would show here); server CPU per
request (utime + stime of the server process, nginx's master and workers summed, from /proc/<pid>/stat over
the measured window, divided by the requests answered); errors (socket errors, and answers that were not the
expected status: wrk only counts non-2xx/3xx, the fallback counts every status). Every route is first
requested once with httpx (status, body bytes, the stream's `done` event, nginx's X-Cache-Status) and again
after its run; a route that does not answer as expected is flagged, and the exit status is 1.

Bars (issue 10, "Done means"), checked against the first `/health` of `main` and printed in their own table:
article JSON, markdown and artist page ≥ 50 %; replay stream ≥ 30 %; catalog API (per_page=20) and home
page ≥ 25 %; the conditional GET answers 304; through the shipped nginx the hot article and the page ≥ 80 %
of the static file; under the memory mix, peak RSS − baseline ≤ the bound. A bar's FAIL is reported, not an
exit status: the bench measures, it does not gate.

Nothing is pinned: the machine is shared, the load generator runs on the same cores as the server, and
numbers are comparable within one run, not across machines. Output: markdown tables on stdout; JSON and
markdown in bench/results/reads-<UTC timestamp>.{json,md} (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from relay import Child, wait_http  # noqa: E402  (the relay benchmark's process helpers, one definition)

PY = sys.executable
HOST = "127.0.0.1"
TOKEN = "bench"
NGINX = "/usr/sbin/nginx"
NGINX_HOST = "atelier.example.com"  # the shipped nginx.conf's server_name: any other Host is closed (444)
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARTISTS = "/api/v1/collection/artists"
ARTICLE = f"{ARTISTS}/1/article"
MEMORY_PORTRAITS = 10_000
REFUSED_DATABASES = {"test", "postgres", "template0", "template1"}


@dataclass
class Route:
    name: str
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    target: str = "atelier"  # or "nginx"


def routes(etag: str, *, head: bool = True) -> list[Route]:
    return [
        Route("GET /health (reference)", "/health"),
        Route("article JSON", f"{ARTICLE}?length=long"),
        Route("article markdown", f"{ARTICLE}?length=long", headers={"Accept": "text/markdown"}),
        Route(
            "article JSON, If-None-Match (304)",
            f"{ARTICLE}?length=long",
            headers={"If-None-Match": etag},
            expect=304,
        ),
        *([Route("HEAD article", f"{ARTICLE}?length=long", method="HEAD")] if head else []),
        Route("artist page /artists/1", "/artists/1"),
        Route("replay stream, read to its end", f"{ARTICLE}/stream?length=long"),
        Route("catalog API, per_page=20", f"{ARTISTS}?per_page=20"),
        Route("home page /", "/"),
        Route("one artist API", f"{ARTISTS}/1"),
        Route("GET /health (again, drift)", "/health"),
    ]


# (bar, route name in `main`, minimum % of /health)
RATIO_BARS = [
    ("article JSON ≥ 50 % of /health", "article JSON", 50),
    ("article markdown ≥ 50 %", "article markdown", 50),
    ("artist page ≥ 50 %", "artist page /artists/1", 50),
    ("replay stream ≥ 30 %", "replay stream, read to its end", 30),
    ("catalog API (per_page=20) ≥ 25 %", "catalog API, per_page=20", 25),
    ("home page ≥ 25 %", "home page /", 25),
]
NGINX_BAR = 80  # % of the same bytes as a static file, through the shipped nginx.conf


# =====================================================================================================
# Small helpers
# =====================================================================================================


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float:
    """CPU of a process and its direct children (nginx: the master and its workers)."""
    total = proc_cpu(pid)
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    with contextlib.suppress(OSError):
                        total += proc_cpu(int(child))
    return total


def vm_rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """Resident memory of a process (or its peak: VmHWM), in MiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} in /proc/{pid}/status")


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app"], cwd=ROOT, capture_output=True, text=True
        )
        return head.stdout.strip() + (" (app/ modified)" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


# =====================================================================================================
# The fallback load generator: `reads.py load ...`, one process, raw asyncio streams
# =====================================================================================================


async def _one_connection(
    port: int, requests: list[bytes], head_only: bool, stop_at: float, lat: list[float], stats: dict[str, Any]
) -> None:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        stats["connect_errors"] += 1
        return
    statuses: dict[str, int] = stats["statuses"]
    try:
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            writer.write(requests[0] if len(requests) == 1 else random.choice(requests))
            head = await reader.readuntil(b"\r\n\r\n")
            nbytes = len(head)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length = None
            chunked = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if head_only or status in (204, 304) or 100 <= status < 200:
                pass
            elif chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0], 16)
                    nbytes += len(size_line) + size + 2
                    if size == 0:
                        # trailers (none expected), then the final CRLF
                        while (line_b := await reader.readuntil(b"\r\n")) != b"\r\n":
                            nbytes += len(line_b)
                        break
                    await reader.readexactly(size + 2)
            elif length is not None:
                await reader.readexactly(length)
                nbytes += length
            else:  # body to the end of the connection: read it and stop this connection
                nbytes += len(await reader.read())
                lat.append(time.perf_counter() - t0)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                stats["bytes"] += nbytes
                break
            lat.append(time.perf_counter() - t0)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            stats["bytes"] += nbytes
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
        stats["read_errors"] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _load(
    port: int, connections: int, duration: float, requests: list[bytes], head_only: bool
) -> dict[str, Any]:
    lat: list[float] = []
    stats: dict[str, Any] = {"statuses": {}, "bytes": 0, "connect_errors": 0, "read_errors": 0}
    t0 = time.monotonic()
    stop_at = t0 + duration
    await asyncio.gather(
        *(_one_connection(port, requests, head_only, stop_at, lat, stats) for _ in range(connections))
    )
    elapsed = time.monotonic() - t0
    return {**stats, "elapsed": elapsed, "latencies_us": [round(x * 1e6, 1) for x in lat]}


def main_load(args: argparse.Namespace) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.requests_file:  # one raw request per line, base64: each request picks one at random
        requests = [base64.b64decode(x) for x in Path(args.requests_file).read_text().split()]
    else:
        requests = [base64.b64decode(args.request)]
    result = asyncio.run(_load(args.port, args.connections, args.duration, requests, args.head))
    json.dump(result, sys.stdout)
    return 0


def raw_request(route: Route, port: int, path: str | None = None) -> bytes:
    lines = [f"{route.method} {path or route.path} HTTP/1.1"]
    if not any(k.lower() == "host" for k in route.headers):
        lines.append(f"Host: {HOST}:{port}")
    lines += ["User-Agent: bench-reads", *(f"{k}: {v}" for k, v in route.headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def run_python_load(
    route: Route,
    port: int,
    connections: int,
    duration: float,
    paths: list[str] | None = None,
    tmp: Path | None = None,
) -> dict[str, Any]:
    argv = [PY, str(Path(__file__).resolve()), "load", "--port", str(port), "--connections", str(connections)]
    argv += ["--duration", str(duration), "--request", base64.b64encode(raw_request(route, port)).decode()]
    if paths:  # a random one of `paths` per request
        assert tmp is not None
        listing = tmp / "requests.b64"
        listing.write_text("\n".join(base64.b64encode(raw_request(route, port, p)).decode() for p in paths))
        argv += ["--requests-file", str(listing)]
    if route.method == "HEAD":
        argv.append("--head")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{out.stderr[-2000:]}")
    raw = json.loads(out.stdout)
    lat = sorted(raw["latencies_us"])
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    requests = sum(statuses.values())
    unexpected = sum(v for k, v in statuses.items() if k != route.expect)
    return {
        "requests": requests,
        "seconds": raw["elapsed"],
        "p50_ms": (percentile(lat, 50) or 0) / 1000 if lat else None,
        "p99_ms": (percentile(lat, 99) or 0) / 1000 if lat else None,
        "wire_bytes": raw["bytes"],
        "statuses": statuses,
        "socket_errors": raw["connect_errors"] + raw["read_errors"],
        "unexpected_status": unexpected,
    }


# =====================================================================================================
# wrk
# =====================================================================================================

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%.1f,"p99_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(route: Route, tmp: Path, paths: list[str] | None = None) -> Path:
    lines = [f'wrk.method = "{route.method}"']
    lines += [f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in route.headers.items()]
    if paths:  # a random one of `paths` per request
        lines.append("local paths = {" + ",".join(json.dumps(p) for p in paths) + "}")
        lines.append("local count = #paths")
        lines.append("math.randomseed(os.time())")
        lines.append("request = function() return wrk.format(nil, paths[math.random(count)]) end")
    path = tmp / f"wrk-{abs(hash((route.name, route.method, route.path, bool(paths)))) % 10**8}.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def run_wrk(
    route: Route,
    port: int,
    args: argparse.Namespace,
    duration: float,
    tmp: Path,
    paths: list[str] | None = None,
) -> dict[str, Any]:
    script = wrk_script(route, tmp, paths)
    seconds = max(1, round(duration))  # wrk takes whole seconds only
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{seconds}s"]
    argv += ["--timeout", "10s", "-s", str(script), f"http://{HOST}:{port}{route.path}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}")
    raw = json.loads(line.removeprefix("BENCHJSON "))
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "wire_bytes": raw["bytes"],
        "statuses": None,  # wrk counts only non-2xx/3xx answers
        "socket_errors": raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        "unexpected_status": raw["status"],
    }


# =====================================================================================================
# The run
# =====================================================================================================


def wait_http_host(url: str, child: Child, host: str, timeout: float = 30.0) -> None:
    """wait_http with a Host header (the shipped nginx.conf closes any other Host without an answer)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited at start; see {child.log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, headers={"Host": host}, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout}s; see {child.log_path}")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="atelier-reads-"))
        self.sqlite_url = f"sqlite+aiosqlite:///{self.tmp / 'atelier.db'}"
        self.children: list[Child] = []
        self.rows: list[dict[str, Any]] = []
        self.memory: list[dict[str, Any]] = []
        self.problems: list[str] = []  # a section that could not run
        self.etag: str | None = None

    def close(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- Atelier -------------------------------------------------------------------------------------

    def env(self, db_url: str, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        env.update(
            ATELIER_DATABASE_URL=db_url,
            ATELIER_LLM_BASE_URL="",  # empty is unset: the embedded demo writer, whatever .env says
            ATELIER_API_TOKENS=TOKEN,
            ATELIER_DEMO_TOKENS_PER_SECOND="100000",
            ATELIER_GENERATION_RATE="1000000/minute",
            ATELIER_REDIS_URL="",
        )
        env.update({f"ATELIER_{k.upper()}": v for k, v in settings.items()})
        return env

    def atelier(self, db_url: str, *command: str) -> None:
        out = subprocess.run(
            [str(Path(PY).parent / "atelier"), *command],
            env=self.env(db_url),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"atelier {' '.join(command)} failed:\n{out.stderr[-2000:]}")

    def start_atelier(
        self, db_url: str, name: str = "atelier", stats: Path | None = None, **settings: str
    ) -> tuple[Child, int]:
        """`atelier serve`; with `stats`, the same CLI through `reads.py serve` (read-cache counters on SIGUSR1)."""
        port = free_port()
        if stats is None:
            argv = [str(Path(PY).parent / "atelier"), "serve"]
        else:
            argv = [PY, str(Path(__file__).resolve()), "serve"]
        argv += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
        env = self.env(db_url, **settings)
        if stats is not None:
            env["BENCH_READS_STATS"] = str(stats)
        child = Child(name, argv, env, self.tmp)
        self.children.append(child)
        wait_http(f"http://{HOST}:{port}/health", child)
        return child, port

    def stop(self, child: Child) -> None:
        child.stop()
        self.children.remove(child)

    def write_portrait(self, port: int, artist: int = 1) -> None:
        import httpx

        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120) as client:
            response = client.post(
                f"{ARTISTS}/{artist}/article?length=long", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            if response.status_code != 200:
                raise RuntimeError(f"writing the portrait: {response.status_code} {response.text[:500]}")

    # --- measuring -----------------------------------------------------------------------------------

    def check(self, route: Route, port: int) -> dict[str, Any]:
        """One request with httpx: status, body bytes, and whether it answered as expected."""
        import httpx

        response = httpx.request(
            route.method, f"http://{HOST}:{port}{route.path}", headers=route.headers, timeout=30
        )
        body = response.content
        problems = []
        if response.status_code != route.expect:
            problems.append(f"status {response.status_code}, expected {route.expect}")
        if "stream" in route.path and b"event: done" not in body:
            problems.append("stream did not end with a `done` event")
        return {
            "status": response.status_code,
            "body_bytes": len(body),
            "content_length": response.headers.get("content-length"),
            "content_type": response.headers.get("content-type"),
            "etag": response.headers.get("etag"),
            "cache_status": response.headers.get("x-cache-status"),
            "problems": problems,
            "body": body,
        }

    def measure(
        self,
        route: Route,
        port: int,
        cpu: Callable[[], float],
        section: str,
        side_cpu: Callable[[], float] | None = None,
        ref: str | None = None,
    ) -> dict[str, Any]:
        """One route: check, warm-up, the measured run (CPU of `cpu`, and of `side_cpu`), check again."""
        args = self.args
        check = self.check(route, port)
        if args.warmup > 0:
            self.load(route, port, args.warmup)
        cpu0 = cpu()
        side0 = side_cpu() if side_cpu else 0.0
        result = self.load(route, port, args.duration)
        used = cpu() - cpu0
        side = side_cpu() - side0 if side_cpu else None
        after = self.check(route, port)  # still answering as expected after the load?
        problems = check["problems"] + [
            f"after the run: {p}" for p in after["problems"] if p not in check["problems"]
        ]
        requests = result["requests"]
        rps = requests / result["seconds"] if result["seconds"] else 0.0
        if result["unexpected_status"]:
            problems.append(f"{result['unexpected_status']} answers with an unexpected status")
        if not requests:
            problems.append("no request answered")
        if result["socket_errors"]:
            problems.append(f"{result['socket_errors']} socket errors")
        row = {
            "section": section,
            "route": route.name,
            "ref": ref,
            "target": route.target,
            "loadgen": self.loadgen_for(route),
            "method": route.method,
            "path": route.path,
            "headers": route.headers,
            "expected_status": route.expect,
            "status": check["status"],
            "body_bytes": check["body_bytes"],
            "content_type": check["content_type"],
            "cache_status_after": after["cache_status"],
            "requests": requests,
            "seconds": result["seconds"],
            "rps": rps,
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "wire_bytes_per_answer": result["wire_bytes"] / requests if requests else None,
            "server_cpu_s": used,
            "server_cpu_us_per_request": used / requests * 1e6 if requests else None,
            "app_cpu_s": side,
            "app_cpu_us_per_request": side / requests * 1e6 if requests and side is not None else None,
            "statuses": result["statuses"],
            "socket_errors": result["socket_errors"],
            "unexpected_status": result["unexpected_status"],
            "problems": problems,
        }
        flag = f"  !! {'; '.join(problems)}" if problems else ""
        log(
            f"[{section}] {route.name:<44} {rps:>9,.0f} req/s  p50 {fmt(row['p50_ms'], 2)} ms"
            f"  p99 {fmt(row['p99_ms'], 2)} ms  cpu {fmt(row['server_cpu_us_per_request'])} µs/req{flag}"
        )
        self.rows.append(row)
        return row

    def loadgen_for(self, route: Route) -> str:
        # wrk 4.1 waits for a body after a HEAD answer's Content-Length and never completes one
        return "python" if route.method == "HEAD" else self.args.loadgen

    def load(
        self, route: Route, port: int, duration: float, paths: list[str] | None = None
    ) -> dict[str, Any]:
        if self.loadgen_for(route) == "wrk":
            return run_wrk(route, port, self.args, duration, self.tmp, paths)
        return run_python_load(route, port, self.args.connections, duration, paths, self.tmp)

    def measure_routes(self, todo: list[Route], port: int, pid: int, section: str) -> None:
        if self.args.loadgen == "wrk" and any(r.method == "HEAD" for r in todo):
            # HEAD is measured with the asyncio load generator: give it its own /health reference, right before
            at = next(i for i, r in enumerate(todo) if r.method == "HEAD")
            todo.insert(at, Route("GET /health (asyncio loadgen: reference for HEAD)", "/health"))
        for route in todo:
            if route.name.startswith("GET /health (asyncio"):
                saved, self.args.loadgen = self.args.loadgen, "python"
                self.measure(route, port, lambda: proc_cpu(pid), section)
                self.args.loadgen = saved
            else:
                self.measure(route, port, lambda: proc_cpu(pid), section)

    # --- sections ------------------------------------------------------------------------------------

    def section_main(self) -> tuple[Child, int, dict[str, bytes]]:
        t0 = time.monotonic()
        self.atelier(self.sqlite_url, "migrate")
        self.atelier(self.sqlite_url, "seed")
        server, port = self.start_atelier(self.sqlite_url)
        self.write_portrait(port)
        time.sleep(1.0)  # let the write's aftermath settle before the reference is measured
        log(f"migrated, seeded, portrait written in {time.monotonic() - t0:.1f}s (server pid {server.pid})")
        article = self.check(Route("article JSON", f"{ARTICLE}?length=long"), port)
        page = self.check(Route("artist page", "/artists/1"), port)
        self.etag = article["etag"]
        if not self.etag:
            log("!! the article JSON has no ETag: the conditional GET sends an empty If-None-Match")
        self.measure_routes(routes(self.etag or '""'), port, server.pid, "main")
        return server, port, {"article.json": article["body"], "artist-1.html": page["body"]}

    def section_nginx(self, app: Child, app_port: int, bodies: dict[str, bytes]) -> None:
        """The shipped nginx.conf (micro-cache on) in front of the running Atelier; the same bytes as static."""
        if str(ROOT) not in sys.path:
            sys.path.append(str(ROOT))
        try:
            from tests.nginx.servers import render_nginx_conf
        except Exception as error:  # the tests' helpers moved or broke: say so, measure the rest
            self.problems.append(f"nginx section skipped: cannot import tests.nginx.servers ({error!r})")
            log(f"!! {self.problems[-1]}")
            return
        shipped = (ROOT / "nginx.conf").read_text()
        if "proxy_cache_path" not in shipped:
            log("!! the shipped nginx.conf has no proxy_cache_path: measured without a micro-cache")
        directory = self.tmp / "nginx-shipped"
        static = directory / "static"
        (static / "bench").mkdir(parents=True)
        for name, body in bodies.items():
            (static / "bench" / name).write_bytes(body)
        port = free_port()
        try:
            conf = render_nginx_conf(
                directory, port=port, upstream_port=app_port, static_dir=static, overrides={}
            )
        except Exception as error:
            self.problems.append(f"nginx section skipped: render_nginx_conf failed ({error!r})")
            log(f"!! {self.problems[-1]}")
            return
        base = [NGINX, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]
        test = subprocess.run(
            [*base, "-t", "-q", "-g", f"pid {directory}/nginx.pid;"],
            capture_output=True,
            text=True,
            check=False,
        )
        if test.returncode != 0:
            self.problems.append(
                f"nginx section skipped: nginx -t refused the rendered config: {test.stderr[-500:]}"
            )
            log(f"!! {self.problems[-1]}")
            return
        child = Child(
            "nginx-shipped", [*base, "-g", f"daemon off; pid {directory}/nginx.pid;"], None, directory
        )
        self.children.append(child)
        wait_http_host(f"http://{HOST}:{port}/static/bench/article.json", child, NGINX_HOST)
        host = {"Host": NGINX_HOST}
        pairs = [
            ("article JSON", f"{ARTICLE}?length=long", "article.json"),
            ("artist page /artists/1", "/artists/1", "artist-1.html"),
        ]
        for name, path, static_name in pairs:
            twin = f"nginx static: the same {name} bytes"
            cached = Route(f"nginx micro-cache: {name}", path, headers=dict(host), target="nginx")
            self.measure(cached, port, lambda: tree_cpu(child.pid), "nginx", lambda: proc_cpu(app.pid), twin)
            plain = Route(twin, f"/static/bench/{static_name}", headers=dict(host), target="nginx")
            self.measure(plain, port, lambda: tree_cpu(child.pid), "nginx", lambda: proc_cpu(app.pid), twin)
        self.stop(child)

    def section_static(self, body: bytes) -> None:
        """A minimal one-process nginx serving the article JSON bytes: the ceiling on this machine."""
        static = self.tmp / "static"
        static.mkdir(exist_ok=True)
        (static / "article.json").write_bytes(body)
        port = free_port()
        t = self.tmp
        conf = t / "nginx.conf"
        conf.write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {t}/nginx.pid;
error_log {t}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {t}/ngx-body;
    proxy_temp_path {t}/ngx-proxy;
    fastcgi_temp_path {t}/ngx-fastcgi;
    uwsgi_temp_path {t}/ngx-uwsgi;
    scgi_temp_path {t}/ngx-scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    server {{
        listen {HOST}:{port};
        root {static};
    }}
}}
"""
        )
        child = Child("nginx", [NGINX, "-p", str(t), "-e", f"{t}/nginx-error.log", "-c", str(conf)], None, t)
        self.children.append(child)
        wait_http(f"http://{HOST}:{port}/article.json", child)
        route = Route("nginx (1 process, minimal config): the article JSON, static file", "/article.json")
        route.target = "nginx"
        self.measure(route, port, lambda: proc_cpu(child.pid), "static")
        self.stop(child)

    def section_miss(self, db_url: str, section: str) -> None:
        server, port = self.start_atelier(db_url, name=f"atelier-{section}", read_cache_mb="0")
        etag = self.check(Route("article JSON", f"{ARTICLE}?length=long"), port)["etag"]
        self.measure_routes(routes(etag or '""', head=False), port, server.pid, section)
        self.stop(server)

    def section_miss_postgres(self, url: str) -> None:
        import asyncpg
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        name = parsed.database or ""
        if not name or name in REFUSED_DATABASES:
            raise SystemExit(f"--postgres-url: refusing database {name!r} (use a dedicated one)")
        admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)

        async def admin_sql(sql: str, *params: Any) -> Any:
            connection = await asyncpg.connect(admin)
            try:
                return await connection.fetchval(sql, *params)
            finally:
                await connection.close()

        if asyncio.run(admin_sql("SELECT 1 FROM pg_database WHERE datname = $1", name)):
            raise SystemExit(f"--postgres-url: database {name!r} exists already; drop it or name another")
        asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
        log(f"created PostgreSQL database {name}")
        try:
            self.atelier(url, "migrate")
            self.atelier(url, "seed")
            server, port = self.start_atelier(url, name="atelier-pg-writer", read_cache_mb="0")
            self.write_portrait(port)
            self.stop(server)
            self.section_miss(url, "miss-postgres")
        finally:
            for child in [c for c in self.children if c.name.startswith("atelier-")]:
                self.stop(child)
            asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}"'))
            log(f"dropped PostgreSQL database {name}")

    def section_memory(self) -> None:
        """10,000 stored portraits read at random, with the read cache at each bound in --memory-bounds."""
        args = self.args
        path = self.tmp / "memory.db"
        url = f"sqlite+aiosqlite:///{path}"
        t0 = time.monotonic()
        self.atelier(url, "migrate")
        self.atelier(url, "seed")
        with sqlite3.connect(path) as db:
            seeded = db.execute("SELECT count(*) FROM artists").fetchone()[0]
        if seeded < MEMORY_PORTRAITS:
            self.atelier(url, "seed", "--synthetic", str(MEMORY_PORTRAITS - seeded))
        server, port = self.start_atelier(url, name="atelier-memory-writer")
        self.write_portrait(port)
        self.stop(server)
        with sqlite3.connect(path) as db:
            columns = [row[1] for row in db.execute("PRAGMA table_info(articles)") if row[1] != "id"]
            template = db.execute(
                "SELECT id FROM articles WHERE artist_id = 1 AND length = 'long' ORDER BY version DESC LIMIT 1"
            ).fetchone()[0]
            values = {c: f"t.{c}" for c in columns}
            values.update(
                artist_id="a.id",
                version="1",
                job_id="NULL",
                facts_version="a.facts_version",
                markdown="'# ' || a.name || char(10) || char(10) || t.markdown",
                html="'<h1>' || a.name || '</h1>' || t.html",
            )
            db.execute(
                f"INSERT INTO articles ({', '.join(columns)}) "
                f"SELECT {', '.join(values[c] for c in columns)} FROM artists a, articles t "
                "WHERE t.id = ? AND NOT EXISTS (SELECT 1 FROM articles x WHERE x.artist_id = a.id "
                "AND x.length = 'long' AND x.language = t.language)",
                (template,),
            )
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT artist_id FROM articles WHERE length = 'long' ORDER BY artist_id LIMIT ?",
                    (MEMORY_PORTRAITS,),
                )
            ]
            markdown_kb = db.execute(
                "SELECT avg(length(markdown)), avg(length(html)) FROM articles"
            ).fetchone()
        log(
            f"memory: {len(ids):,} artists with a stored long portrait (markdown {markdown_kb[0] / 1000:.1f} kB, "
            f"html {markdown_kb[1] / 1000:.1f} kB on average), ready in {time.monotonic() - t0:.0f}s"
        )
        paths = [f"{ARTISTS}/{i}/article?length=long" for i in ids]
        for bound in args.memory_bounds:
            self.memory.append(self.memory_run(url, paths, bound))

    def memory_run(self, url: str, paths: list[str], bound: float) -> dict[str, Any]:
        args = self.args
        label = f"{bound:g}"
        stats_path = self.tmp / f"cache-stats-{label}.json"
        server, port = self.start_atelier(
            url, name=f"atelier-memory-{label}", stats=stats_path, read_cache_mb=label, read_cache_ttl="3600"
        )
        pid = server.pid

        def cache_stats() -> dict[str, Any]:
            stats_path.unlink(missing_ok=True)
            os.kill(pid, signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while not stats_path.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no read-cache counters from pid {pid} (see {server.log_path})")
                time.sleep(0.02)
            stats: list[dict[str, Any]] = json.loads(stats_path.read_text())
            return stats[0]

        self.load(Route("GET /health (warm-up)", "/health"), port, max(args.warmup, 1.0))
        time.sleep(0.5)
        baseline = vm_rss_mb(pid)
        before = cache_stats()
        samples: list[tuple[float, float]] = []  # (seconds into the run, VmRSS MiB)
        threads: list[int] = []  # the server's threads (aiosqlite runs one per open connection)
        stop = threading.Event()
        began = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    samples.append((time.monotonic() - began, vm_rss_mb(pid)))
                    threads.append(int(vm_rss_mb(pid, "Threads") * 1024))
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        cpu0 = proc_cpu(pid)
        route = Route("memory mix", paths[0])
        result = self.load(route, port, args.memory_duration, paths)
        cpu = proc_cpu(pid) - cpu0
        stop.set()
        sampler.join()
        after = cache_stats()
        final = vm_rss_mb(pid)
        peak = max([rss for _, rss in samples] + [final])
        half = max([rss for at, rss in samples if at <= args.memory_duration / 2] + [baseline])
        hwm = vm_rss_mb(pid, "VmHWM")
        self.stop(server)
        hits = after["hits"] - before["hits"]
        misses = after["misses"] - before["misses"]
        requests = result["requests"]
        problems = []
        if result["unexpected_status"]:
            problems.append(f"{result['unexpected_status']} answers with an unexpected status")
        if result["socket_errors"]:
            problems.append(f"{result['socket_errors']} socket errors")
        row = {
            "bound_mb": bound,
            "portraits": len(paths),
            "baseline_rss_mb": baseline,
            "peak_rss_mb": peak,
            "peak_first_half_mb": half,
            "max_threads": max(threads, default=None),
            "rss_samples": [(round(at, 2), round(rss, 1)) for at, rss in samples],
            "vm_hwm_mb": hwm,
            "final_rss_mb": final,
            "growth_mb": peak - baseline,
            "within_bound": (peak - baseline) <= bound if bound > 0 else None,
            "requests": requests,
            "seconds": result["seconds"],
            "rps": requests / result["seconds"] if result["seconds"] else 0.0,
            "server_cpu_us_per_request": cpu / requests * 1e6 if requests else None,
            "hits": hits,
            "misses": misses,
            "hit_ratio": hits / (hits + misses) if hits + misses else None,
            "entries": after["entries"],
            "cache_mb": after["bytes"] / 2**20,
            "problems": problems,
        }
        log(
            f"[memory] bound {label} MB: RSS {baseline:.1f} → peak {peak:.1f} MB (+{peak - baseline:.1f}), "
            f"{row['rps']:,.0f} req/s, hit ratio {fmt(100 * row['hit_ratio'] if row['hit_ratio'] is not None else None)} %, "
            f"{row['entries']:,} entries, {row['cache_mb']:.1f} MB held"
            + (f"  !! {'; '.join(problems)}" if problems else "")
        )
        return row

    def run(self) -> None:
        args = self.args
        if not args.memory_only:
            server, port, bodies = self.section_main()
            nginx = Path(NGINX).exists() and not args.no_nginx
            if nginx:
                self.section_nginx(server, port, bodies)
            self.stop(server)
            if nginx:
                self.section_static(bodies["article.json"])
            elif not args.no_nginx:
                log(f"no {NGINX}: no nginx rows (apt-get install -y nginx-light)")
            if not args.no_miss_path:
                self.section_miss(self.sqlite_url, "miss-sqlite")
                if args.postgres_url:
                    self.section_miss_postgres(args.postgres_url)
        if args.memory or args.memory_only:
            self.section_memory()
        # each row against the first /health of its section measured with the same load generator, and
        # against the first /health of `main`
        main_refs: dict[str, float] = {}
        section_refs: dict[tuple[str, str], float] = {}
        for row in self.rows:
            if row["path"] == "/health" and row["target"] == "atelier":
                section_refs.setdefault((row["section"], row["loadgen"]), row["rps"])
                if row["section"] == "main":
                    main_refs.setdefault(row["loadgen"], row["rps"])
        by_name = {(r["section"], r["route"]): r for r in self.rows}
        for row in self.rows:
            main = main_refs.get(row["loadgen"])
            row["pct_of_health"] = 100 * row["rps"] / main if main else None
            if row["ref"]:
                twin = by_name.get((row["section"], row["ref"]))
                reference = twin["rps"] if twin else None
            else:
                reference = section_refs.get((row["section"], row["loadgen"]))
            row["pct_of_ref"] = 100 * row["rps"] / reference if reference else None


# =====================================================================================================
# Report
# =====================================================================================================

SECTION_TITLES = {
    "main": "Cache on (defaults: ATELIER_READ_CACHE_MB=64, TTL 5 s), SQLite; % of this server's first /health",
    "nginx": "Behind the shipped nginx.conf (micro-cache), Host: atelier.example.com; % of the static twin "
    "(the same bytes from the same nginx's /static/); app CPU = the app's CPU in the window per answer",
    "static": "The ceiling: a minimal one-process nginx, the article JSON bytes as a static file",
    "miss-sqlite": "Miss path: ATELIER_READ_CACHE_MB=0 (nothing kept), SQLite; % of this server's first /health",
    "miss-postgres": "Miss path: ATELIER_READ_CACHE_MB=0 (nothing kept), PostgreSQL; % of this server's "
    "first /health",
}


def table(rows: list[dict[str, Any]], loadgen: str, section: str) -> str:
    nginx = section == "nginx"
    out = [
        "| route | status | req/s | "
        + ("% of static | % of main /health | X-Cache-Status" if nginx else "% of ref")
        + " | p50 / p99 latency ms | bytes | wire bytes / answer | server CPU µs / request"
        + (" | app CPU µs / answer" if nginx else "")
        + " | errors |",
        "|---|:---:|---:|---:|"
        + ("---:|:---:|" if nginx else "")
        + "---:|---:|---:|---:|"
        + ("---:|" if nginx else "")
        + "---|",
    ]
    for r in rows:
        status = str(r["status"]) + (
            "" if r["status"] == r["expected_status"] else f" (expected {r['expected_status']})"
        )
        errors = "; ".join(r["problems"]) or "0"
        name = r["route"] + (" ¹" if r["loadgen"] != loadgen else "")
        extra = f" | {fmt(r['pct_of_health'])} | {r['cache_status_after'] or '–'}" if nginx else ""
        app = f" | {fmt(r['app_cpu_us_per_request'], 2)}" if nginx else ""
        out.append(
            f"| {name} | {status} | {r['rps']:,.0f} | {fmt(r['pct_of_ref'])}{extra} "
            f"| {fmt(r['p50_ms'], 2)} / {fmt(r['p99_ms'], 2)} | {r['body_bytes']:,} "
            f"| {fmt(r['wire_bytes_per_answer'])} | {fmt(r['server_cpu_us_per_request'])}{app} | {errors} |"
        )
    return "\n".join(out)


def bars(rows: list[dict[str, Any]], memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 10's bars against what was measured: (bar, measured, verdict)."""
    by = {(r["section"], r["route"]): r for r in rows}
    out: list[dict[str, Any]] = []

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("PASS" if ok else "FAIL")

    if any(r["section"] == "main" for r in rows):
        for bar, route, minimum in RATIO_BARS:
            r = by.get(("main", route))
            value = r["pct_of_ref"] if r else None
            ok = None if value is None else value >= minimum and not r["problems"]
            measured = f"{fmt(value)} %" + (f" ({r['rps']:,.0f} req/s)" if r else "")
            if ok is not None and value is not None and value < minimum:
                measured += f"; short by {minimum - value:.1f} points"
            out.append({"bar": bar, "measured": measured, "verdict": verdict(ok)})
        r = by.get(("main", "article JSON, If-None-Match (304)"))
        if r:
            ok = r["status"] == 304 and not r["problems"]
            out.append(
                {
                    "bar": "conditional GET answers 304",
                    "measured": f"{r['status']}, {fmt(r['wire_bytes_per_answer'])} wire bytes per answer under "
                    f"load, {fmt(r['pct_of_ref'])} % of /health",
                    "verdict": verdict(ok),
                }
            )
    for name in ("article JSON", "artist page /artists/1"):
        r = by.get(("nginx", f"nginx micro-cache: {name}"))
        if r:
            value = r["pct_of_ref"]
            ok = None if value is None else value >= NGINX_BAR and not r["problems"]
            out.append(
                {
                    "bar": f"behind nginx: {name} ≥ {NGINX_BAR} % of static",
                    "measured": f"{fmt(value)} % ({r['rps']:,.0f} req/s, static twin "
                    f"{by[('nginx', r['ref'])]['rps']:,.0f})",
                    "verdict": verdict(ok),
                }
            )
    control = next((m for m in memory if m["bound_mb"] == 0), None)
    for m in memory:
        if m["bound_mb"] > 0:
            out.append(
                {
                    "bar": f"memory: peak RSS − idle baseline ≤ bound ({m['bound_mb']:g} MB)",
                    "measured": f"+{m['growth_mb']:.1f} MB ({m['baseline_rss_mb']:.1f} → {m['peak_rss_mb']:.1f} MB)",
                    "verdict": verdict(m["within_bound"] and not m["problems"]),
                }
            )
            if control:
                over = m["peak_rss_mb"] - control["peak_rss_mb"]
                out.append(
                    {
                        "bar": f"memory: peak RSS − the cache-off run's peak ≤ bound ({m['bound_mb']:g} MB)",
                        "measured": f"+{over:.1f} MB ({control['peak_rss_mb']:.1f} → {m['peak_rss_mb']:.1f} MB)",
                        "verdict": verdict(over <= m["bound_mb"] and not m["problems"]),
                    }
                )
    return out


def bars_table(items: list[dict[str, Any]]) -> str:
    out = ["| bar (issue 10) | measured | verdict |", "|---|---|:---:|"]
    out += [f"| {b['bar']} | {b['measured']} | {b['verdict']} |" for b in items]
    return "\n".join(out)


def memory_table(memory: list[dict[str, Any]]) -> str:
    out = [
        "| ATELIER_READ_CACHE_MB | RSS baseline MB | peak, first half MB | peak MB | growth MB | growth ≤ bound "
        "| final MB | req/s | server CPU µs / request | hit ratio | entries | cache holds MB | max threads | errors |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in memory:
        within = "–" if m["within_bound"] is None else ("yes" if m["within_bound"] else "NO")
        hit = f"{100 * m['hit_ratio']:.1f} %" if m["hit_ratio"] is not None else "–"
        out.append(
            f"| {m['bound_mb']:g}{' (control)' if m['bound_mb'] == 0 else ''} | {m['baseline_rss_mb']:.1f} "
            f"| {m['peak_first_half_mb']:.1f} | {m['peak_rss_mb']:.1f} | {m['growth_mb']:+.1f} | {within} | {m['final_rss_mb']:.1f} "
            f"| {m['rps']:,.0f} | {fmt(m['server_cpu_us_per_request'])} | {hit} | {m['entries']:,} "
            f"| {m['cache_mb']:.1f} | {m['max_threads'] or '–'} | {'; '.join(m['problems']) or '0'} |"
        )
    return "\n".join(out)


def notes(rows: list[dict[str, Any]], problems: list[str]) -> list[str]:
    lines = []
    by = {(r["section"], r["route"]): r for r in rows}
    for section in ("main", "miss-sqlite", "miss-postgres"):
        first = next((r for r in rows if r["section"] == section), None)
        again = by.get((section, "GET /health (again, drift)"))
        if first and again and first["rps"]:
            lines.append(
                f"{section}: /health drift over the section: {100 * (again['rps'] / first['rps'] - 1):+.0f} % "
                "(last against first)."
            )
    static = next((r for r in rows if r["section"] == "static"), None)
    art = by.get(("main", "article JSON"))
    if static and art and static["rps"]:
        lines.append(
            f"Article JSON straight from Atelier = {100 * art['rps'] / static['rps']:.1f} % of a minimal nginx serving "
            f"the same bytes as a static file ({art['rps']:,.0f} against {static['rps']:,.0f} req/s)."
        )
    for name in ("article JSON", "artist page /artists/1"):
        hot, miss = by.get(("main", name)), by.get(("miss-sqlite", name))
        if hot and miss and hot["server_cpu_us_per_request"] and miss["server_cpu_us_per_request"]:
            lines.append(
                f"{name}: a hit costs the server {fmt(hot['server_cpu_us_per_request'])} µs of CPU, a miss on SQLite "
                f"{fmt(miss['server_cpu_us_per_request'])} µs "
                f"({miss['server_cpu_us_per_request'] / hot['server_cpu_us_per_request']:.0f}×)."
            )
    if any(r["loadgen"] == "python" for r in rows) and any(r["loadgen"] == "wrk" for r in rows):
        lines.append(
            "¹ Measured with the built-in asyncio load generator (wrk 4.1 never completes a HEAD answer that has a "
            "Content-Length), and its % against /health measured with that same generator."
        )
    bad = [f"{r['section']}: {r['route']}" for r in rows if r["problems"]]
    if bad:
        lines.append("Routes with problems: " + ", ".join(bad) + ".")
    lines += problems
    return lines


def main_run(args: argparse.Namespace) -> int:
    if args.quick:
        args.duration, args.warmup = min(args.duration, 2.0), min(args.warmup, 0.5)
        args.memory_duration = min(args.memory_duration, 15.0)
    if args.loadgen in ("auto", "wrk"):
        if shutil.which("wrk"):
            args.loadgen = "wrk"
        elif args.loadgen == "wrk":
            print(
                "wrk is not installed: `apt-get install -y wrk` (Debian), or --loadgen python",
                file=sys.stderr,
            )
            return 2
        else:
            log("wrk not found (Debian: `apt-get install -y wrk`): using the built-in asyncio load generator")
            args.loadgen = "python"
    if args.loadgen == "wrk":  # wrk takes whole seconds only
        args.duration, args.warmup = float(max(1, round(args.duration))), float(max(1, round(args.warmup)))
        args.memory_duration = float(max(1, round(args.memory_duration)))
    started = time.gmtime()
    log(
        f"load generator {args.loadgen}, {args.connections} connections, warm-up {args.warmup}s + {args.duration}s"
        " per route"
    )
    bench = Bench(args)
    try:
        bench.run()
    finally:
        bench.close()
    rows, memory = bench.rows, bench.memory
    stamp = time.strftime("%Y%m%d-%H%M%S", started)
    checked = bars(rows, memory)
    meta = {
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", started),
        "commit": git_commit(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_after": os.getloadavg(),
        "loadgen": args.loadgen,
        "wrk_threads": args.threads if args.loadgen == "wrk" else None,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "memory_duration_s": args.memory_duration if memory else None,
        "quick": args.quick,
        "etag": bench.etag,
        "postgres": bool(args.postgres_url),
    }
    header = (
        f"Read paths, {meta['started_utc']} UTC, Atelier {meta['commit']}, Python {meta['python']}, "
        f"{meta['cpus']} CPUs (shared, nothing pinned); {args.loadgen}"
        + (f" ({args.threads} thread)" if args.loadgen == "wrk" else "")
        + f", {args.connections} connections, {args.warmup}s warm-up + {args.duration}s per route; "
        "one `atelier serve` process."
    )
    parts = [header, ""]
    for section, title in SECTION_TITLES.items():
        section_rows = [r for r in rows if r["section"] == section]
        if section_rows:
            parts += [f"### {section}: {title}", "", table(section_rows, args.loadgen, section), ""]
    if memory:
        parts += [
            f"### memory: {memory[0]['portraits']:,} distinct stored portraits, the article JSON of a random one per "
            f"request for {args.memory_duration:g}s; ATELIER_READ_CACHE_TTL=3600; RSS = VmRSS of the server",
            "",
            memory_table(memory),
            "",
        ]
    if checked:
        parts += ["### Bars", "", bars_table(checked), ""]
    parts += [f"- {n}" for n in notes(rows, bench.problems)]
    md = "\n".join([*parts, ""])
    print(md)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"reads-{stamp}.md").write_text(md)
    (results / f"reads-{stamp}.json").write_text(
        json.dumps(
            {"meta": meta, "rows": rows, "memory": memory, "bars": checked, "problems": bench.problems},
            indent=2,
        )
        + "\n"
    )
    log(f"wrote bench/results/reads-{stamp}.{{json,md}}")
    failed = any(r["problems"] for r in rows) or any(m["problems"] for m in memory) or bench.problems
    return 1 if failed else 0


def main_serve(argv: list[str]) -> int:
    """`atelier serve` as is, plus: on SIGUSR1, the read cache's counters are written to $BENCH_READS_STATS."""
    from app.kit import read_cache

    caches: list[Any] = []
    original = read_cache.ReadCache.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        caches.append(self)

    read_cache.ReadCache.__init__ = init  # type: ignore[method-assign]
    target = os.environ["BENCH_READS_STATS"]

    def dump(_signum: int, _frame: Any) -> None:
        stats = [
            {
                "hits": c.hits,
                "misses": c.misses,
                "entries": len(c),
                "bytes": c.bytes,
                "max_bytes": c.max_bytes,
            }
            for c in caches
        ]
        Path(target + ".tmp").write_text(json.dumps(stats))
        os.replace(target + ".tmp", target)

    signal.signal(signal.SIGUSR1, dump)
    from app.main import cli

    return cli(["serve", *argv])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    load = sub.add_parser("load", help="(internal) the fallback load generator, JSON on stdout")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--connections", type=int, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--request", required=True, help="the raw request, base64")
    load.add_argument("--requests-file", help="raw requests, base64, one a line: a random one per request")
    load.add_argument("--head", action="store_true")
    sub.add_parser("serve", help="(internal) `atelier serve ...` with the read cache's counters on SIGUSR1")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per route (default 5)")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="uncounted seconds before each route (default 1)"
    )
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the server needs a core)")
    p.add_argument(
        "--quick", action="store_true", help="2 s per route, 0.5 s warm-up (1 s with wrk), memory runs 15 s"
    )
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk if installed, else the built-in asyncio one",
    )
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx sections (shipped config, static)")
    p.add_argument(
        "--no-miss-path", action="store_true", help="skip the cache-off (ATELIER_READ_CACHE_MB=0) runs"
    )
    p.add_argument(
        "--postgres-url",
        help="also run the miss path on PostgreSQL, in this database (created here, dropped after; it must not "
        "exist), e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/atelier_bench_reads",
    )
    p.add_argument(
        "--memory", action="store_true", help="add the memory section (10,000 portraits at random)"
    )
    p.add_argument("--memory-only", action="store_true", help="run only the memory section")
    p.add_argument(
        "--memory-bounds",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.0, 32.0, 128.0],
        help="ATELIER_READ_CACHE_MB of each memory run, comma-separated (default 0,32,128; 0 is the control)",
    )
    p.add_argument(
        "--memory-duration",
        type=float,
        default=30.0,
        help="seconds of random reads per memory run (default 30)",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (database, logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # everything after it is `atelier serve`'s
        return main_serve(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "load":
        return main_load(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
