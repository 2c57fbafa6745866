"""CPU per upstream chunk: httpx's own transport (httpcore + h11) against httpx-aiohttp, same run.

    .venv/bin/python bench/upstream_read.py                 # 200 streams x 250 chunks at 50/s, ~1 min
    .venv/bin/python bench/upstream_read.py --streams 400

The fake upstream of the relay benchmark (`relay.py upstream`, its own process) streams Mistral-style SSE
chunks to every connection at a steady rate, one write per chunk, as a model would. For each transport, a fresh process reads
N streams at once, either as bytes (`aiter_bytes`) or through Atelier's whole read path
(`LLMClient.stream`: httpx-sse, JSON, deltas, timeouts), and reports its own CPU time per chunk. Each
mode runs `--rounds` times, alternating, and the table shows the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MODES = ["httpx/bytes", "httpx-aiohttp/bytes", "httpx/atelier", "httpx-aiohttp/atelier"]


async def read(mode: str, streams: int, port: int) -> dict[str, float]:
    import httpx

    from app.llm.client import LLMClient, TextDelta, UpstreamConfig
    from app.llm.transport import upstream_http_client

    transport, what = mode.split("/")
    if transport == "httpx":
        limits = httpx.Limits(max_connections=4096, max_keepalive_connections=4096)
        http = httpx.AsyncClient(limits=limits, timeout=30)
    else:
        http = upstream_http_client(4096, 4096, pool_timeout=30)
    base = f"http://127.0.0.1:{port}/v1"
    config = UpstreamConfig(
        base_url=base,
        api_key=None,
        model="bench",
        max_tokens=4096,
        temperature=0.7,
        connect_timeout=5.0,
        idle_timeout=30.0,
        total_timeout=600.0,
        max_output_chars=10**9,
    )
    client = LLMClient(http, config)
    count = 0

    async def one() -> None:
        nonlocal count
        if what == "bytes":
            async with http.stream("POST", f"{base}/chat/completions", json={"stream": True}) as response:
                async for _ in response.aiter_bytes():
                    count += 1
        else:
            async for item in client.stream([{"role": "user", "content": "bench"}]):
                count += isinstance(item, TextDelta)

    async with http:
        await one()  # warm up: a connection, imports, code paths
        count = 0
        cpu, wall = time.process_time(), time.monotonic()
        await asyncio.gather(*(one() for _ in range(streams)))
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return {"chunks": count, "cpu_s": cpu, "wall_s": wall, "us_per_chunk": 1e6 * cpu / max(count, 1)}


def wait_until_serving(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=250)
    parser.add_argument("--rate", type=float, default=50.0, help="chunks per second per stream")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=9931)
    parser.add_argument("--read", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import uvloop

    if args.read:
        print(json.dumps(uvloop.run(read(args.read, args.streams, args.port))))
        return 0

    common = ["--streams", str(args.streams), "--chunks", str(args.chunks), "--rate", str(args.rate)]
    common += ["--port", str(args.port)]
    upstream = [sys.executable, str(BENCH / "relay.py"), "upstream", "--port", str(args.port)]
    server = subprocess.Popen([*upstream, "--rate", str(args.rate), "--tokens", str(args.chunks)])
    try:
        wait_until_serving(args.port)
        results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, __file__, "--read", mode, *common],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[mode].append(json.loads(out.stdout))
                print(
                    f"round {round_ + 1}: {mode}: {results[mode][-1]['us_per_chunk']:.1f} µs per chunk",
                    file=sys.stderr,
                )
    finally:
        server.terminate()
    print(
        f"\n{args.streams} streams x {args.chunks} chunks at {args.rate:g}/s, median of {args.rounds} rounds\n"
    )
    print("| transport / reading | chunks | CPU µs per chunk | vs httpx |")
    print("|---|---:|---:|---:|")
    medians = {mode: statistics.median(r["us_per_chunk"] for r in results[mode]) for mode in MODES}
    for mode in MODES:
        baseline = medians["httpx/" + mode.split("/")[1]]
        chunks = int(statistics.median(r["chunks"] for r in results[mode]))
        print(f"| {mode} | {chunks:,} | {medians[mode]:.1f} | {100 * medians[mode] / baseline:.0f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
