"""`GET /metrics` on a real server: the GenAI histograms of each upstream call (scripted upstream and the
embedded demo writer), jobs by state, stored portraits, open streams, the circuit, the read cache; and the
multiprocess mode, where several processes write into one PROMETHEUS_MULTIPROC_DIR and any scrape sums them."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import DURATION_BUCKETS, provider_name
from tests.fakes.upstream import MODEL, FakeUpstream, Reply, chunk, completion, error_reply, event, wait
from tests.nginx.servers import (
    Process,
    clean_environment,
    migrated_sqlite,
    process,
    serve_command,
    wait_for_port,
)
from tests.nginx.servers import free_port as free_tcp_port
from tests.support import (
    ARTISTS,
    AUTH,
    TOKEN,
    LiveServer,
    MakeServer,
    add_artist,
    stream_events,
    wait_until,
)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One scrape, parsed by prometheus-client's own parser: every sample by name and labels."""

    samples: dict[tuple[str, Labels], float]
    text: str

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels (None: not exported)."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(
            value for (sample, have), value in self.samples.items() if sample == name and wanted <= set(have)
        )

    def label_sets(self, name: str) -> list[dict[str, str]]:
        return [dict(have) for (sample, have) in self.samples if sample == name]


def parse(text: str) -> Scrape:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(samples, text)


def scrape(client: httpx.Client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert "etag" not in response.headers  # never kept by the read cache
    return parse(response.text)


def genai(provider: str, error_type: str = "") -> dict[str, str]:
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": provider,
        "gen_ai_request_model": MODEL,
        "error_type": error_type,
    }


def tokens(provider: str, token_type: str) -> dict[str, str]:
    return {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": provider,
        "gen_ai_request_model": MODEL,
        "gen_ai_token_type": token_type,
    }


DURATION = "gen_ai_client_operation_duration_seconds"
FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"
TOKENS = "gen_ai_client_token_usage"


def stream_path(artist_id: int) -> str:
    return f"{ARTISTS}/{artist_id}/article/stream"


# --- one process ------------------------------------------------------------------------------------------


def test_a_portrait_shows_in_the_genai_histograms_the_jobs_and_the_stored_articles(
    app_server: LiveServer, upstream: FakeUpstream
) -> None:
    upstream.script(completion(["# Nina Simone\n\n", "The High ", "Priestess of Soul.\n"]))
    provider = provider_name(upstream.base_url, "upstream")
    assert provider == "127.0.0.1"  # no known vendor at that host: the host itself
    before = scrape(app_server.client)
    assert before.value(DURATION + "_count", **genai(provider)) is None  # no call yet, no series
    assert before.value("atelier_articles_stored_total") == 0
    assert before.value("atelier_jobs_running") == 0

    artist_id = add_artist(app_server)
    _, events = stream_events(app_server.client, stream_path(artist_id))
    assert [e.event for e in events][-1] == "done"

    wait_until(
        lambda: scrape(app_server.client).value("atelier_jobs_total", state="done", error_type="") == 1,
        what="the job counted as done",
    )
    after = scrape(app_server.client)
    # one call, successful: error_type empty (Prometheus reads it as absent), duration and first chunk timed
    assert after.value(DURATION + "_count", **genai(provider)) == 1
    duration = after.value(DURATION + "_sum", **genai(provider))
    assert duration is not None and 0 < duration < 10
    assert (
        after.value(DURATION + "_bucket", **genai(provider), le="655.36") == 1
    )  # past a long call's minutes
    assert after.value(DURATION + "_bucket", **genai(provider), le="+Inf") == 1
    assert after.value(FIRST_CHUNK + "_count", **genai(provider)) == 1
    first = after.value(FIRST_CHUNK + "_sum", **genai(provider))
    assert first is not None and 0 < first <= duration
    # the fake's usage: 10 prompt tokens, one completion token per piece
    assert after.value(TOKENS + "_count", **tokens(provider, "input")) == 1
    assert after.value(TOKENS + "_sum", **tokens(provider, "input")) == 10
    assert after.value(TOKENS + "_sum", **tokens(provider, "output")) == 3
    assert after.value(TOKENS + "_bucket", **tokens(provider, "input"), le="16.0") == 1
    assert after.value(TOKENS + "_bucket", **tokens(provider, "input"), le="4.0") == 0
    # no series with an error for a call that succeeded
    assert all(labels.get("error_type") == "" for labels in after.label_sets(DURATION + "_count"))
    assert after.value("atelier_articles_stored_total") == 1
    assert after.value("atelier_jobs_running") == 0
    assert after.total("atelier_jobs_total") == 1
    assert after.value("atelier_continuations_total") == 0
    assert after.value("atelier_breaker_state", state="closed") == 1
    assert after.value("atelier_breaker_state", state="open") == 0
    assert after.value("atelier_breaker_failures") == 0
    assert after.value("atelier_open_streams", format="sse") == 0
    # the process collectors the default registry has
    assert after.value("process_cpu_seconds_total") is not None


def test_a_failed_call_carries_its_error_type_and_the_open_circuit_shows(
    make_app: MakeServer, upstream: FakeUpstream
) -> None:
    upstream.script(error_reply(401))
    provider = provider_name(upstream.base_url, "upstream")
    with make_app(breaker_fail_max=1) as server:
        artist_id = add_artist(server)
        _, events = stream_events(server.client, stream_path(artist_id))
        assert events[-1].event == "error" and events[-1].data["code"] == "upstream_auth"
        wait_until(
            lambda: (
                scrape(server.client).value("atelier_jobs_total", state="error", error_type="upstream_auth")
                == 1
            ),
            what="the job counted as failed",
        )
        after = scrape(server.client)
        assert after.value(DURATION + "_count", **genai(provider, "upstream_auth")) == 1
        assert after.value(DURATION + "_count", **genai(provider)) is None
        assert after.total(FIRST_CHUNK + "_count") == 0  # no chunk ever came
        assert after.total(TOKENS + "_count") == 0  # no usage reported
        assert after.value("atelier_articles_stored_total") == 0
        assert after.total("atelier_jobs_total") == 1
        # one counted failure opened the circuit (ATELIER_BREAKER_FAIL_MAX=1)
        assert after.value("atelier_breaker_state", state="open") == 1
        assert after.value("atelier_breaker_state", state="closed") == 0
        assert after.value("atelier_breaker_failures") == 1


def test_open_streams_count_each_format_while_it_runs(app_server: LiveServer, upstream: FakeUpstream) -> None:
    gate = threading.Event()
    usage = {"prompt_tokens": 12, "completion_tokens": 2}
    upstream.script(
        Reply(
            steps=[
                event(chunk("", role="assistant")),
                event(chunk("# Nina Simone\n\n")),
                wait(gate),
                event(chunk("Sang.\n", finish_reason="stop", usage=usage)),
                event("[DONE]"),
            ]
        )
    )
    artist_id = add_artist(app_server)
    client = app_server.client
    try:
        with (
            client.stream("GET", stream_path(artist_id)) as sse,
            client.stream("GET", stream_path(artist_id), params={"format": "markdown"}) as markdown,
        ):
            lines, pieces = sse.iter_lines(), markdown.iter_bytes()
            assert any(line == "event: text" for line in lines)  # the job runs, its first text sent
            assert next(pieces).startswith(b"# Nina Simone")  # joined the same job
            running = scrape(client)
            assert running.value("atelier_open_streams", format="sse") == 1
            assert running.value("atelier_open_streams", format="markdown") == 1
            assert running.value("atelier_jobs_running") == 1
            assert running.total("atelier_jobs_total") == 0
            gate.set()
            assert any(line == "event: done" for line in lines)
            assert b"".join(pieces) == b"Sang.\n"
    finally:
        gate.set()
    wait_until(
        lambda: scrape(client).value("atelier_jobs_total", state="done", error_type="") == 1,
        what="the job counted as done",
    )
    wait_until(lambda: scrape(client).total("atelier_open_streams") == 0, what="both streams closed")
    ended = scrape(client)
    assert ended.value("atelier_jobs_running") == 0
    assert ended.value(TOKENS + "_sum", **tokens("127.0.0.1", "input")) == 12
    assert ended.value(DURATION + "_count", **genai("127.0.0.1")) == 1  # two readers, one call


def test_the_demo_writer_shows_its_calls_and_continuations(make_server: MakeServer) -> None:
    """The embedded demo writer caps each call at 500 words: a short portrait (about 600) takes a seam, and
    every call shows in the histograms, its usage adding up to the portrait's."""
    with make_server(demo_tokens_per_second=100_000) as server:
        artist_id = add_artist(server)
        _, events = stream_events(server.client, stream_path(artist_id), params={"length": "short"})
        done = events[-1].data
        assert events[-1].event == "done"
        seams = done["continuations"]
        assert seams >= 1 and seams == sum(e.event == "continued" for e in events)
        wait_until(
            lambda: scrape(server.client).value("atelier_jobs_total", state="done", error_type="") == 1,
            what="the job counted as done",
        )
        after = scrape(server.client)
        assert after.value(DURATION + "_count", **genai("atelier_demo")) == seams + 1
        assert after.value(FIRST_CHUNK + "_count", **genai("atelier_demo")) == seams + 1
        assert (
            after.value(TOKENS + "_sum", **tokens("atelier_demo", "input")) == done["usage"]["prompt_tokens"]
        )
        assert (
            after.value(TOKENS + "_sum", **tokens("atelier_demo", "output"))
            == done["usage"]["completion_tokens"]
        )
        assert after.value("atelier_continuations_total") == seams
        assert after.value("atelier_articles_stored_total") == 1


def test_read_cache_hits_and_misses_count_cacheable_reads_only(server: LiveServer) -> None:
    artist_id = add_artist(server)
    path = f"{ARTISTS}/{artist_id}"
    first = server.client.get(path)
    second = server.client.get(path)
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert server.client.get(path, headers=AUTH).status_code == 200  # never cached: neither hit nor miss
    assert server.client.get("/health").status_code == 200  # not cacheable: neither
    counted = scrape(server.client)
    assert counted.value("atelier_read_cache_reads_total", result="miss") == 1
    assert counted.value("atelier_read_cache_reads_total", result="hit") == 1
    again = scrape(server.client)  # scrapes are not cached reads either
    assert again.value("atelier_read_cache_reads_total", result="miss") == 1
    assert again.value("atelier_read_cache_reads_total", result="hit") == 1


@pytest.mark.parametrize(
    ("base_url", "kind", "expected"),
    [
        ("https://api.mistral.ai/v1", "upstream", "mistral_ai"),
        ("https://api.openai.com/v1", "upstream", "openai"),
        ("https://api.infomaniak.com/1/ai/123/openai", "upstream", "infomaniak"),
        ("http://vllm.internal:8000/v1", "upstream", "vllm.internal"),
        ("http://127.0.0.1:41234/v1", "demo", "atelier_demo"),
    ],
)
def test_provider_name(base_url: str, kind: str, expected: str) -> None:
    assert provider_name(base_url, kind) == expected


def test_duration_buckets_reach_past_a_long_portrait() -> None:
    assert DURATION_BUCKETS[:14] == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    )  # fmt: skip
    assert DURATION_BUCKETS[-1] > 600  # ATELIER_LLM_TOTAL_TIMEOUT's default


# --- several processes ------------------------------------------------------------------------------------


@dataclass
class Served:
    process: Process
    client: httpx.Client


@contextmanager
def atelier_serving(directory: Path, metrics_dir: Path, **settings: str) -> Iterator[Served]:
    """`atelier serve` on its own migrated SQLite file, writing its metrics into `metrics_dir`."""
    directory.mkdir()
    env = clean_environment(
        ATELIER_DATABASE_URL=migrated_sqlite(directory),
        ATELIER_API_TOKENS=TOKEN,
        ATELIER_WRITER_PLAN="never",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        **settings,
    )
    port = free_tcp_port()
    with (
        process(directory.name, serve_command(port), env=env, cwd=directory) as running,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        wait_for_port(running, port)
        yield Served(running, client)


def live_gauge_files(metrics_dir: Path, pid: int) -> list[str]:
    return sorted(path.name for path in metrics_dir.glob(f"gauge_live*_{pid}.db"))


def test_processes_sharing_a_multiprocess_directory_are_scraped_as_one(tmp_path: Path) -> None:
    """Two servers write into one PROMETHEUS_MULTIPROC_DIR (as the workers of one `atelier serve` do): a scrape
    on either sums both. A worker killed without its shutdown leaves the live gauges at the next scrape and
    keeps its counts; one that stops cleanly takes its live gauges away itself."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with ExitStack() as stack:
        # slow: a job started there runs for minutes; fast: a portrait is written at once
        slow = stack.enter_context(
            atelier_serving(tmp_path / "slow", metrics_dir, ATELIER_DEMO_TOKENS_PER_SECOND="1")
        )
        fast = stack.enter_context(
            atelier_serving(tmp_path / "fast", metrics_dir, ATELIER_DEMO_TOKENS_PER_SECOND="100000")
        )
        for served in (slow, fast):  # one miss and one hit on each
            artist = served.client.post(ARTISTS, json={"name": "Nina Simone"}, headers=AUTH)
            assert artist.status_code == 201, artist.text
            for _ in range(2):
                assert served.client.get(f"{ARTISTS}/{artist.json()['id']}").status_code == 200
        stored = fast.client.post(f"{ARTISTS}/1/article", params={"length": "short"}, headers=AUTH)
        assert stored.status_code == 200, stored.text
        started = slow.client.post(f"{ARTISTS}/1/article/jobs", params={"length": "short"}, headers=AUTH)
        assert started.status_code == 202, started.text
        wait_until(
            lambda: scrape(fast.client).value("atelier_jobs_running") == 1, what="the slow job counted"
        )

        on_slow, on_fast = scrape(slow.client), scrape(fast.client)
        for both in (on_slow, on_fast):
            assert both.value("atelier_read_cache_reads_total", result="miss") == 2
            assert both.value("atelier_read_cache_reads_total", result="hit") == 2
            assert both.value("atelier_articles_stored_total") == 1  # the fast one's
            assert both.value("atelier_jobs_total", state="done", error_type="") == 1
            assert both.value("atelier_jobs_running") == 1  # the slow one's
            assert both.total(DURATION + "_count", gen_ai_provider_name="atelier_demo") >= 1
            # prometheus-client's per-process collectors do not work across processes: not shown
            assert both.value("process_cpu_seconds_total") is None
        assert on_slow.total(DURATION + "_count") == on_fast.total(DURATION + "_count")

        # the slow one dies without its shutdown: its running job leaves the sum, what it counted stays
        slow_pid = slow.process.popen.pid
        assert live_gauge_files(metrics_dir, slow_pid)
        slow.process.popen.send_signal(signal.SIGKILL)
        slow.process.popen.wait(timeout=10)
        after_kill = scrape(fast.client)
        assert after_kill.value("atelier_jobs_running") == 0
        assert after_kill.value("atelier_read_cache_reads_total", result="miss") == 2
        assert live_gauge_files(metrics_dir, slow_pid) == []

        # the fast one stops cleanly: it takes its own live gauges away, its counts stay on disk
        fast_pid = fast.process.popen.pid
        assert live_gauge_files(metrics_dir, fast_pid)
        fast.process.stop()  # SIGTERM: uvicorn shuts down, then ends by the signal
        assert fast.process.popen.returncode in (0, -signal.SIGTERM), fast.process.log()
        assert live_gauge_files(metrics_dir, fast_pid) == []
        assert (metrics_dir / f"counter_{fast_pid}.db").exists()
