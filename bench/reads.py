"""Read-path benchmark: the read routes of a stored portrait against the app's own `/health`, in one run.

    .venv/bin/python bench/reads.py            # 64 connections, 1 s warm-up + 5 s per route: about 1.5 minutes
    .venv/bin/python bench/reads.py --quick    # 0.5 s warm-up + 2 s per route: about 40 s
    .venv/bin/python bench/reads.py --duration 10 --connections 128 --loadgen python

Processes, all on 127.0.0.1, started here and stopped at the end:
- Atelier: `atelier migrate`, `atelier seed`, then one `atelier serve` (one uvicorn process, the default
  httptools parser) on a fresh SQLite file in a temporary directory, with the embedded demo writer (no
  ATELIER_LLM_BASE_URL) at ATELIER_DEMO_TOKENS_PER_SECOND=100000. The `long` portrait of artist 1 is written
  once through the API (`POST /api/v1/collection/artists/1/article?length=long` with a token), then only read;
- the load generator: `wrk` (Debian: `apt-get install -y wrk`) with one thread by default, or, when wrk is
  not installed (or with `--loadgen python`), this file's own: raw asyncio streams, HTTP/1.1 keep-alive,
  N connections each sending its next request as soon as the previous answer is read in full (chunked
  bodies too), for a fixed duration;
- optionally nginx (`/usr/sbin/nginx`, one process: `master_process off`) serving the very bytes the app
  answered for the article JSON as a static file: the ceiling for that response on this machine.

Routes, one after the other, each with a short warm-up that is not counted: `/health` (the reference, run
again at the end to show drift), the stored article as JSON, as markdown, as JSON with `If-None-Match` of its
ETag (must be 304), HEAD of it, the artist page, the replay stream read to its end, the catalog API, the home
page, one artist through the API. Every route is first requested once with httpx: status, body bytes and
(stream) its `done` event are checked, and a route that does not answer as expected is flagged.

Columns: requests per second; as a percentage of `/health`'s (first run); latency p50 / p99 (wrk's own
histogram, or exact percentiles from the fallback); body bytes of one answer; wire bytes per answer (headers
included, from the load generator's byte count: a 304 that turned into 200 under load would show here);
server CPU per request (utime + stime of the server process from /proc/<pid>/stat over the measured
window, divided by the requests answered); errors (socket errors, and answers that were not the expected
status: wrk only counts non-2xx/3xx, the fallback counts every status).

Nothing is pinned: the machine is shared, the load generator runs on the same cores as the server, and
numbers are comparable within one run, not across machines. Output: a markdown table on stdout; JSON and
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
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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
CLK_TCK = os.sysconf("SC_CLK_TCK")
ARTICLE = "/api/v1/collection/artists/1/article"


@dataclass
class Route:
    name: str
    path: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    expect: int = 200
    target: str = "atelier"  # or "nginx"


def routes(etag: str) -> list[Route]:
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
        Route("HEAD article", f"{ARTICLE}?length=long", method="HEAD"),
        Route("artist page /artists/1", "/artists/1"),
        Route("replay stream, read to its end", f"{ARTICLE}/stream?length=long"),
        Route("catalog API, per_page=20", "/api/v1/collection/artists?per_page=20"),
        Route("home page /", "/"),
        Route("one artist API", "/api/v1/collection/artists/1"),
        Route("GET /health (again, drift)", "/health"),
    ]


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
    port: int, request: bytes, head_only: bool, stop_at: float, lat: list[float], stats: dict[str, Any]
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
            writer.write(request)
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
    port: int, connections: int, duration: float, request: bytes, head_only: bool
) -> dict[str, Any]:
    lat: list[float] = []
    stats: dict[str, Any] = {"statuses": {}, "bytes": 0, "connect_errors": 0, "read_errors": 0}
    t0 = time.monotonic()
    stop_at = t0 + duration
    await asyncio.gather(
        *(_one_connection(port, request, head_only, stop_at, lat, stats) for _ in range(connections))
    )
    elapsed = time.monotonic() - t0
    return {**stats, "elapsed": elapsed, "latencies_us": [round(x * 1e6, 1) for x in lat]}


def main_load(args: argparse.Namespace) -> int:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    request = base64.b64decode(args.request)
    result = asyncio.run(_load(args.port, args.connections, args.duration, request, args.head))
    json.dump(result, sys.stdout)
    return 0


def raw_request(route: Route, port: int) -> bytes:
    lines = [f"{route.method} {route.path} HTTP/1.1", f"Host: {HOST}:{port}", "User-Agent: bench-reads"]
    lines += [f"{k}: {v}" for k, v in route.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def run_python_load(route: Route, port: int, connections: int, duration: float) -> dict[str, Any]:
    argv = [PY, str(Path(__file__).resolve()), "load", "--port", str(port), "--connections", str(connections)]
    argv += ["--duration", str(duration), "--request", base64.b64encode(raw_request(route, port)).decode()]
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


def wrk_script(route: Route, tmp: Path) -> Path:
    lines = [f'wrk.method = "{route.method}"']
    lines += [f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in route.headers.items()]
    path = tmp / f"wrk-{abs(hash((route.name, route.method, route.path))) % 10**8}.lua"
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def run_wrk(route: Route, port: int, args: argparse.Namespace, duration: float, tmp: Path) -> dict[str, Any]:
    script = wrk_script(route, tmp)
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


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="atelier-reads-"))
        self.db_url = f"sqlite+aiosqlite:///{self.tmp / 'atelier.db'}"
        self.children: list[Child] = []

    def close(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        self.children.clear()
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
        env.update(
            ATELIER_DATABASE_URL=self.db_url,
            ATELIER_LLM_BASE_URL="",  # empty is unset: the embedded demo writer, whatever .env says
            ATELIER_API_TOKENS=TOKEN,
            ATELIER_DEMO_TOKENS_PER_SECOND="100000",
            ATELIER_GENERATION_RATE="1000000/minute",
            ATELIER_REDIS_URL="",
        )
        return env

    def atelier(self, *command: str) -> None:
        out = subprocess.run(
            [str(Path(PY).parent / "atelier"), *command],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if out.returncode != 0:
            raise RuntimeError(f"atelier {' '.join(command)} failed:\n{out.stderr[-2000:]}")

    def start_atelier(self) -> tuple[Child, int]:
        port = free_port()
        argv = [str(Path(PY).parent / "atelier"), "serve", "--host", HOST, "--port", str(port)]
        argv += ["--log-level", "warning"]
        child = Child("atelier", argv, self.env(), self.tmp)
        self.children.append(child)
        wait_http(f"http://{HOST}:{port}/health", child)
        return child, port

    def start_nginx(self, body: bytes) -> tuple[Child, int] | None:
        if not Path(NGINX).exists() or self.args.no_nginx:
            return None
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
        return child, port

    def setup(self) -> tuple[Child, int]:
        import httpx

        t0 = time.monotonic()
        self.atelier("migrate")
        self.atelier("seed")
        child, port = self.start_atelier()
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=120) as client:
            response = client.post(f"{ARTICLE}?length=long", headers={"Authorization": f"Bearer {TOKEN}"})
            if response.status_code != 200:
                raise RuntimeError(f"writing the portrait: {response.status_code} {response.text[:500]}")
        time.sleep(1.0)  # let the write's aftermath settle before the reference is measured
        log(f"migrated, seeded, portrait written in {time.monotonic() - t0:.1f}s (server pid {child.pid})")
        return child, port

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
            "problems": problems,
            "body": body,
        }

    def measure(self, route: Route, port: int, pid: int) -> dict[str, Any]:
        args = self.args
        check = self.check(route, port)
        if args.warmup > 0:
            self.load(route, port, args.warmup)
        cpu0 = proc_cpu(pid)
        result = self.load(route, port, args.duration)
        cpu = proc_cpu(pid) - cpu0
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
            "route": route.name,
            "target": route.target,
            "loadgen": self.loadgen_for(route),
            "method": route.method,
            "path": route.path,
            "headers": route.headers,
            "expected_status": route.expect,
            "status": check["status"],
            "body_bytes": check["body_bytes"],
            "content_type": check["content_type"],
            "requests": requests,
            "seconds": result["seconds"],
            "rps": rps,
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "wire_bytes_per_answer": result["wire_bytes"] / requests if requests else None,
            "server_cpu_s": cpu,
            "server_cpu_us_per_request": cpu / requests * 1e6 if requests else None,
            "statuses": result["statuses"],
            "socket_errors": result["socket_errors"],
            "unexpected_status": result["unexpected_status"],
            "problems": problems,
        }
        flag = f"  !! {'; '.join(problems)}" if problems else ""
        log(
            f"{route.name:<40} {rps:>9,.0f} req/s  p50 {fmt(row['p50_ms'], 2)} ms  p99 {fmt(row['p99_ms'], 2)} ms"
            f"  cpu {fmt(row['server_cpu_us_per_request'])} µs/req{flag}"
        )
        return row

    def loadgen_for(self, route: Route) -> str:
        # wrk 4.1 waits for a body after a HEAD answer's Content-Length and never completes one
        return "python" if route.method == "HEAD" else self.args.loadgen

    def load(self, route: Route, port: int, duration: float) -> dict[str, Any]:
        if self.loadgen_for(route) == "wrk":
            return run_wrk(route, port, self.args, duration, self.tmp)
        return run_python_load(route, port, self.args.connections, duration)

    def run(self) -> dict[str, Any]:
        server, port = self.setup()
        article = self.check(Route("article JSON", f"{ARTICLE}?length=long"), port)
        etag = article["etag"]
        if not etag:
            log("!! the article JSON has no ETag: the conditional GET sends an empty If-None-Match")
        todo = routes(etag or '""')
        if self.args.loadgen == "wrk" and any(r.method == "HEAD" for r in todo):
            # HEAD is measured with the asyncio load generator: give it its own /health reference, right before
            at = next(i for i, r in enumerate(todo) if r.method == "HEAD")
            todo.insert(
                at, Route("GET /health (asyncio loadgen: reference for HEAD)", "/health", method="GET")
            )
        rows = []
        for route in todo:
            if route.name.startswith("GET /health (asyncio"):
                saved, self.args.loadgen = self.args.loadgen, "python"
                rows.append(self.measure(route, port, server.pid))
                self.args.loadgen = saved
            else:
                rows.append(self.measure(route, port, server.pid))
        nginx = self.start_nginx(article["body"])
        if nginx is not None:
            child, nport = nginx
            route = Route("nginx: the same article JSON, static file", "/article.json", target="nginx")
            rows.append(self.measure(route, nport, child.pid))
            child.stop()
            self.children.remove(child)
        elif not self.args.no_nginx:
            log(f"no {NGINX}: no nginx ceiling row (apt-get install -y nginx-light)")
        server.stop()
        self.children.remove(server)
        # each row against the first /health measured with the same load generator
        references: dict[str, float] = {}
        for row in rows:
            if row["path"] == "/health" and row["target"] == "atelier":
                references.setdefault(row["loadgen"], row["rps"])
        for row in rows:
            reference = references.get(row["loadgen"])
            row["pct_of_health"] = 100 * row["rps"] / reference if reference else None
        return {"rows": rows, "etag": etag}


# =====================================================================================================
# Report
# =====================================================================================================


def table(rows: list[dict[str, Any]], loadgen: str) -> str:
    out = [
        "| route | status | req/s | % of /health | p50 / p99 latency ms | bytes | wire bytes / answer "
        "| server CPU µs / request | errors |",
        "|---|:---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        status = str(r["status"]) + (
            "" if r["status"] == r["expected_status"] else f" (expected {r['expected_status']})"
        )
        errors = "; ".join(r["problems"]) or "0"
        name = r["route"] + (" ¹" if r["loadgen"] != loadgen else "")
        out.append(
            f"| {name} | {status} | {r['rps']:,.0f} | {fmt(r['pct_of_health'])} "
            f"| {fmt(r['p50_ms'], 2)} / {fmt(r['p99_ms'], 2)} | {r['body_bytes']:,} "
            f"| {fmt(r['wire_bytes_per_answer'])} | {fmt(r['server_cpu_us_per_request'])} | {errors} |"
        )
    return "\n".join(out)


def notes(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    by = {r["route"]: r for r in rows}
    first, again = rows[0], by.get("GET /health (again, drift)")
    if again and first["rps"]:
        lines.append(
            f"/health drift over the run: {100 * (again['rps'] / first['rps'] - 1):+.0f} % (last against first)."
        )
    nginx = next((r for r in rows if r["target"] == "nginx"), None)
    art = by.get("article JSON")
    if nginx and art and nginx["rps"]:
        lines.append(
            f"Article JSON from Atelier = {100 * art['rps'] / nginx['rps']:.1f} % of nginx serving the same bytes "
            f"as a static file ({art['rps']:,.0f} against {nginx['rps']:,.0f} req/s)."
        )
    cond = by.get("article JSON, If-None-Match (304)")
    if cond:
        ok = cond["status"] == 304 and not cond["problems"]
        lines.append(
            "Conditional GET: "
            + ("answered 304 (checked before and after the run" if ok else "NOT answered 304 as expected (")
            + f"; {fmt(cond['wire_bytes_per_answer'])} wire bytes per answer under load)."
        )
    if any(r["loadgen"] == "python" for r in rows) and any(r["loadgen"] == "wrk" for r in rows):
        lines.append(
            "¹ Measured with the built-in asyncio load generator (wrk 4.1 never completes a HEAD answer that has a "
            "Content-Length), and its % against /health measured with that same generator."
        )
    bad = [r["route"] for r in rows if r["problems"]]
    if bad:
        lines.append("Routes with problems: " + ", ".join(bad) + ".")
    return lines


def main_run(args: argparse.Namespace) -> int:
    if args.quick:
        args.duration, args.warmup = min(args.duration, 2.0), min(args.warmup, 0.5)
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
    started = time.gmtime()
    log(
        f"load generator {args.loadgen}, {args.connections} connections, warm-up {args.warmup}s + {args.duration}s"
        " per route"
    )
    bench = Bench(args)
    try:
        result = bench.run()
    finally:
        bench.close()
    rows = result["rows"]
    stamp = time.strftime("%Y%m%d-%H%M%S", started)
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
        "quick": args.quick,
        "etag": result["etag"],
    }
    header = (
        f"Read paths, {meta['started_utc']} UTC, Atelier {meta['commit']}, Python {meta['python']}, "
        f"{meta['cpus']} CPUs (shared, nothing pinned); {args.loadgen}"
        + (f" ({args.threads} thread)" if args.loadgen == "wrk" else "")
        + f", {args.connections} connections, {args.warmup}s warm-up + {args.duration}s per route; "
        "one `atelier serve` process on SQLite."
    )
    md = "\n".join([header, "", table(rows, args.loadgen), "", *[f"- {n}" for n in notes(rows)], ""])
    print(md)
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"reads-{stamp}.md").write_text(md)
    (results / f"reads-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    log(f"wrote bench/results/reads-{stamp}.{{json,md}}")
    return 1 if any(r["problems"] for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    load = sub.add_parser("load", help="(internal) the fallback load generator, JSON on stdout")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--connections", type=int, required=True)
    load.add_argument("--duration", type=float, required=True)
    load.add_argument("--request", required=True, help="the raw request, base64")
    load.add_argument("--head", action="store_true")
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per route (default 5)")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="uncounted seconds before each route (default 1)"
    )
    p.add_argument("--connections", type=int, default=64, help="keep-alive connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the server needs a core)")
    p.add_argument("--quick", action="store_true", help="2 s per route, 0.5 s warm-up (1 s with wrk)")
    p.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk if installed, else the built-in asyncio one",
    )
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx static-file row")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (database, logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "load":
        return main_load(args)
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
