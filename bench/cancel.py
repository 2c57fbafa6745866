"""How soon after the grace period the upstream request of an abandoned job is closed.

A reader reads the first token and leaves; the scripted upstream (tests/fakes) records when its request
was closed. Prints the delay past `ATELIER_JOB_GRACE`. Loopback only; bounded by --runs.

    .venv/bin/python bench/cancel.py [--runs 20] [--grace 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import migrations
from tests.conftest import make_settings
from tests.fakes.upstream import Reply, chunk, event, fake_upstream, hang
from tests.support import AUTH, live_server, sqlite_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--grace", type=float, default=0.5)
    args = parser.parse_args()
    database = Path(tempfile.mkdtemp()) / "cancel.db"
    migrations.upgrade(sqlite_url(database))
    late_ms: list[float] = []
    with fake_upstream() as upstream:
        settings = make_settings(
            sqlite_url(database),
            llm_base_url=upstream.base_url,
            llm_api_key="k",
            job_grace=args.grace,
            generation_rate="100000/minute",
        )
        with live_server(settings) as server:
            for run in range(args.runs):
                upstream.reset()
                upstream.script(Reply(steps=[event(chunk(role="assistant")), event(chunk("first ")), hang()]))
                created = server.client.post(
                    "/api/v1/collection/artists", json={"name": f"A{run}"}, headers=AUTH
                )
                path = f"/api/v1/collection/artists/{created.json()['id']}/article/stream"
                with server.client.stream("GET", path) as response:
                    for line in response.iter_lines():
                        if "first" in line:
                            break
                left = time.monotonic()
                closed = upstream.wait_closed(0, timeout=args.grace + 5)
                assert closed.closed_at is not None and closed.disconnected_by_client
                late_ms.append((closed.closed_at - left - args.grace) * 1000)
    late_ms.sort()
    print("| runs | grace | closed after grace expiry: min | median | p95 | max |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    p95 = late_ms[min(len(late_ms) - 1, round(0.95 * (len(late_ms) - 1)))]
    print(
        f"| {len(late_ms)} | {args.grace} s | {late_ms[0]:.1f} ms | {statistics.median(late_ms):.1f} ms "
        f"| {p95:.1f} ms | {late_ms[-1]:.1f} ms |"
    )


if __name__ == "__main__":
    main()
