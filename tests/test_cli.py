"""The `atelier` command, run as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream, error_reply
from tests.nginx.servers import atelier as atelier_process
from tests.nginx.servers import send_raw

ROOT = Path(__file__).resolve().parent.parent
# The console script pip installed (`atelier = "app.main:cli"`), run as a user runs it.
ATELIER = str(Path(sys.executable).parent / "atelier")


def atelier(
    *args: str, database: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite+aiosqlite:///{database}", **(env or {})}
    return subprocess.run(
        [ATELIER, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_migrate_then_seed_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    assert atelier("migrate", database=database).returncode == 0
    first = atelier("seed", database=database)
    assert first.returncode == 0 and "artist(s) added" in first.stdout
    second = atelier("seed", database=database)
    assert second.returncode == 0 and "already there" in second.stdout


def test_serve_answers_on_its_port(tmp_path: Path) -> None:
    import socket

    database = tmp_path / "serve.db"
    assert atelier("migrate", database=database).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ATELIER_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    process = subprocess.Popen(
        [ATELIER, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
    )
    try:
        with httpx.Client(timeout=2) as client:
            for _ in range(100):
                try:
                    response = client.get(f"http://127.0.0.1:{port}/health")
                    break
                except httpx.TransportError:
                    process.poll()
                    assert process.returncode is None, "atelier serve exited"
                    __import__("time").sleep(0.1)
            else:
                raise AssertionError("atelier serve did not answer within 10 s")
        assert response.json() == {"status": "ok"}
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_generate_streams_to_a_file_and_stores_it(tmp_path: Path) -> None:
    database = tmp_path / "gen.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0
    out = tmp_path / "piaf.md"
    env_rate = {"ATELIER_DEMO_TOKENS_PER_SECOND": "5000"}
    result = atelier(
        "generate", "Édith Piaf", "--length", "short", "--out", str(out), database=database, env=env_rate
    )
    assert result.returncode == 0, result.stderr
    markdown = out.read_text()
    assert markdown.startswith("# Édith Piaf")
    assert "words" in result.stderr and "stored as version 1" in result.stderr
    again = atelier("generate", "edith piaf", "--length", "short", database=database, env=env_rate)
    assert again.returncode == 0 and again.stdout == markdown  # from the store, by folded name
    assert "stored portrait" in again.stderr


def test_generate_planned_shows_its_sections_and_writes_the_stored_markdown(tmp_path: Path) -> None:
    """A planned portrait (the demo writer, ATELIER_WRITER_PLAN=always): the progress line names the section
    being written and counts words as the server does; stdout is the stored markdown, with no seams."""
    import sqlite3

    from app.kit.text import count_words

    database = tmp_path / "plan.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0
    env = {"ATELIER_DEMO_TOKENS_PER_SECOND": "5000", "ATELIER_WRITER_PLAN": "always"}
    result = atelier("generate", "Édith Piaf", "--length", "medium", database=database, env=env)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(database) as connection:
        markdown, words, outline = connection.execute(
            "SELECT markdown, words, outline FROM articles ORDER BY id DESC"
        ).fetchone()
    sections = len(json.loads(outline)["sections"])
    assert sections >= 2
    assert result.stdout == markdown  # the deltas joined: the stored text, byte for byte
    assert words == count_words(markdown)
    lines = result.stderr.replace("\r", "\n").splitlines()
    shown = [int(m.group(1)) for line in lines if (m := re.search(r"section (\d+) of (\d+)", line))]
    assert all(f"of {sections}" in line for line in lines if "section " in line)
    assert shown == sorted(shown) and shown[0] == 1 and shown[-1] == sections  # each section, in order
    final = [line for line in lines if "section " in line][-1]
    assert f"{words:,}/1,500 words" in final  # one count: the progress line ends on the stored words
    assert f"stored as version 1 ({words:,} words)" in result.stderr


def test_generate_when_it_fails_then_nonzero_and_no_file(tmp_path: Path, upstream: FakeUpstream) -> None:
    database = tmp_path / "fail.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0
    upstream.script(error_reply(401))
    out = tmp_path / "never.md"
    env = {"ATELIER_LLM_BASE_URL": upstream.base_url, "ATELIER_LLM_API_KEY": "k"}
    result = atelier("generate", "1", "--out", str(out), database=database, env=env)
    assert result.returncode == 1
    assert "upstream_auth" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    unknown = atelier("generate", "Nobody At All", database=database)
    assert unknown.returncode == 1 and "no artist" in unknown.stderr


def test_serve_when_no_parser_named_then_httptools_and_h11_on_demand() -> None:
    """httptools by default (less CPU per streamed event; nginx bounds request heads in front), h11 when asked
    (it bounds them itself: test_serve_with_h11_refuses_a_16_mib_header). That `atelier serve` hands uvicorn
    ATELIER_TRUSTED_PROXIES is proven by running it: tests/test_proxies.py."""
    from app.cli import commands

    parser = commands.build_parser(lambda _settings: None)  # type: ignore[arg-type,return-value]
    assert parser.parse_args(["serve"]).http == "httptools"
    assert parser.parse_args(["serve", "--http", "h11"]).http == "h11"


def test_serve_with_h11_refuses_a_16_mib_header(tmp_path: Path) -> None:
    # Served without nginx in front, `--http h11` bounds the request head (docs/deployment.md).
    with atelier_process(tmp_path, "serve", "--http", "h11") as served:
        big = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (16 * 1024 * 1024) + b"\r\n\r\n"
        answer = send_raw(served.port, big)
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:200]
        fits = (
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
            + b"a" * 16_000
            + b"\r\nConnection: close\r\n\r\n"
        )
        assert send_raw(served.port, fits).startswith(b"HTTP/1.1 200")  # an ordinary large cookie still fits


def test_migrate_when_stored_html_of_an_older_renderer_then_rendered_again(tmp_path: Path) -> None:
    """`atelier migrate` re-renders every stored article whose HTML another renderer version made."""
    import asyncio
    import sqlite3

    from app.articles.render import RENDERER_VERSION, render_markdown
    from app.articles.service import ArticleDraft, ArticleService
    from app.db import create_engine, create_sessionmaker

    database = tmp_path / "render.db"
    assert atelier("migrate", database=database).returncode == 0
    assert atelier("seed", database=database).returncode == 0

    async def store() -> int:
        engine = create_engine(f"sqlite+aiosqlite:///{database}")
        try:
            service = ArticleService(create_sessionmaker(engine), upstream_configured=False)
            draft = ArticleDraft(
                1, "en", "short", "# Old\n\n*Text.*\n", "m", "demo", "stop", None, 1, None, None
            )
            return (await service.store(draft)).id
        finally:
            await engine.dispose()

    article_id = asyncio.run(store())
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE articles SET html = '<p>old</p>', renderer_version = ? WHERE id = ?",
            (RENDERER_VERSION - 1, article_id),
        )
    result = atelier("migrate", database=database)
    assert result.returncode == 0, result.stderr
    assert "1 stored article(s) rendered again" in result.stdout
    with sqlite3.connect(database) as connection:
        row = connection.execute(
            "SELECT html, renderer_version FROM articles WHERE id = ?", (article_id,)
        ).fetchone()
    assert row == (render_markdown("# Old\n\n*Text.*\n"), RENDERER_VERSION)
    again = atelier("migrate", database=database)
    assert again.returncode == 0 and "rendered again" not in again.stdout


def test_serve_with_several_workers_and_no_redis_then_refused_saying_why(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "ATELIER_REDIS_URL"}
    result = atelier("serve", "--workers", "3", database=tmp_path / "w.db", env=env)
    assert result.returncode == 2
    assert "--workers 3 refused: ATELIER_REDIS_URL is not set" in result.stderr
    assert "Redis" in result.stderr and "Traceback" not in result.stderr


def test_serve_with_two_workers_and_redis_then_both_serve_and_report_their_metrics_as_one(
    tmp_path: Path,
) -> None:
    """With ATELIER_REDIS_URL, `--workers 2` runs two uvicorn workers on one port (the same SQLite file: no
    one-server-per-database refusal with Redis); `atelier serve` gives them a private PROMETHEUS_MULTIPROC_DIR
    (under TMPDIR) which both write to and which is gone once it stops."""
    from tests.nginx.servers import clean_environment, free_port, process, serve_command
    from tests.redis_server import redis_server, unique_prefix
    from tests.support import wait_until

    database = tmp_path / "workers.db"
    assert atelier("migrate", database=database).returncode == 0
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = free_port()
    with redis_server() as redis:
        env = clean_environment(
            ATELIER_DATABASE_URL=f"sqlite+aiosqlite:///{database}",
            ATELIER_REDIS_URL=redis.url,
            ATELIER_REDIS_PREFIX=unique_prefix(),
            TMPDIR=str(temporary),
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with (
            process("serve", serve_command(port, "--workers", "2"), env=env, cwd=tmp_path) as served,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client,
        ):
            scrapes: list[httpx.Response] = []

            def scraped_by() -> set[int]:
                """The workers that answered a scrape (each writes the circuit's gauges when it does)."""
                served.check_alive()
                try:
                    # a new connection each time: either worker may accept it
                    scrapes.append(client.get("/metrics", headers={"Connection": "close"}))
                except httpx.TransportError:
                    return set()  # not listening yet
                return {
                    int(path.stem.rpartition("_")[2])
                    for path in temporary.glob("atelier-metrics-*/gauge_livemostrecent_*.db")
                }

            wait_until(lambda: len(scraped_by()) == 2, timeout=30, what="both workers answering")
            workers = scraped_by()
            assert served.popen.pid not in workers  # the workers, not the supervisor
            for pid in workers:
                os.kill(pid, 0)  # both still running: neither refused to start
            assert all(response.status_code == 200 for response in scrapes)
            assert "atelier_jobs_running 0.0" in scrapes[-1].text
            assert (
                "process_cpu_seconds_total" not in scrapes[-1].text
            )  # multiprocess: no per-process collectors
            assert client.get("/health").json() == {"status": "ok"}
            served.stop()
            assert served.popen.returncode in (0, -15), served.log()
        assert list(temporary.glob("atelier-metrics-*")) == []  # removed at exit
