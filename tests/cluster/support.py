"""Two real Atelier processes sharing one PostgreSQL database and one Redis: the contract's "Several
processes", run for real on loopback. Nothing is mocked: each process is `python -m uvicorn app.main:app`
started as an operator starts it, on its own port, with the same settings.

    with cluster(directory, job_grace="1") as both:
        both.a.client.get("/health")        # process A only
        both.client.get("/health")          # round robin: each request goes to the next process
        both.a.kill(); both.a.start()       # SIGKILL, then A again on the same port
        both.redis.stop(); both.redis.start()

What a cluster is made of, in order: a private redis-server (tests/redis_server.py, never the shared one) and
a key prefix of its own; a new PostgreSQL database (tests.support.fresh_postgres_database); `atelier migrate`
run twice at once, as two processes starting together would; `atelier seed`; then processes A and B. Each
process writes its output to `<name>.log` in the cluster's directory (a restart appends to it); conftest.py
shows what they wrote during a test that failed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from tests.redis_server import RedisServer, free_port, redis_server, unique_prefix
from tests.support import ARTISTS, StreamedEvent, fresh_postgres_database, joined_text

BIN = Path(sys.executable).parent
ATELIER = str(BIN / "atelier")  # the console script, as an operator runs it
TOKEN = "cluster-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STARTUP_DEADLINE = 30.0  # two processes importing the app at once on a loaded 2-core machine
STOP_DEADLINE = 10.0
# The timings every cluster runs with: short, so that a takeover (lease + scan) and a grace are seen in a
# second or two, and long enough that a busy machine does not make a live process look dead.
LEASE = 1.5
SCAN = 0.3
GRACE = 1.0
# uvicorn waits this long for open streams at SIGTERM before it closes them and runs the lifespan's end (the
# handover): without it, a reader attached to the stopping process would keep it (and its jobs) alive.
GRACEFUL_SHUTDOWN = 2


def clean_environment(**settings: str) -> dict[str, str]:
    """The test run's environment without any ATELIER_* (or FORWARDED_ALLOW_IPS) of the developer's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ATELIER_") and key != "FORWARDED_ALLOW_IPS"
    }
    return {**env, **settings}


def atelier_settings(**settings: str) -> dict[str, str]:
    """ATELIER_* variables from keyword arguments without the prefix: `job_grace="1"`."""
    return {f"ATELIER_{name.upper()}": value for name, value in settings.items()}


# What each process logs (to its log file): uvicorn's lines, and Atelier's own from INFO (jobs started, taken
# over, handed over), which the default configuration would drop.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    },
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "atelier": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "app": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def uvicorn_command(port: int, log_config: Path) -> list[str]:
    """One process of the service, as the contract's "Running it" starts one (and its logging)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        str(GRACEFUL_SHUTDOWN),
        "--log-config",
        str(log_config),
    ]


# --- one process ----------------------------------------------------------------------------------------


@dataclass
class Node:
    """One Atelier process (A or B): always on the same port, so it can be killed and started again."""

    name: str
    port: int
    env: dict[str, str]
    directory: Path
    popen: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # SIGSTOP'd and not yet SIGCONT'd
    starts: int = 0
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as file:
            file.seek(since)
            return file.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    # starting and stopping

    def spawn(self) -> None:
        """Start the process (not waiting for it: see `wait_ready`)."""
        assert not self.alive, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"----- {self.name}: start #{self.starts} on port {self.port} -----\n".encode())
            log.flush()
            log_config = self.directory / "logging.json"
            if not log_config.exists():
                log_config.write_text(json.dumps(LOG_CONFIG))
            self.popen = subprocess.Popen(
                uvicorn_command(self.port, log_config),
                env=self.env,
                cwd=self.directory,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.stopped = False

    def wait_ready(self, deadline: float = STARTUP_DEADLINE) -> None:
        """Until /ready answers 200 (the database and Redis reached), or fail showing the log."""
        until = time.monotonic() + deadline
        last = "no answer"
        while time.monotonic() < until:
            if not self.alive:
                code = None if self.popen is None else self.popen.returncode
                raise AssertionError(f"process {self.name} exited ({code}) while starting:\n{self.log()}")
            try:
                response = self.client.get("/ready", timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.05)
        raise AssertionError(f"process {self.name} not ready within {deadline} s ({last}):\n{self.log()}")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def kill(self) -> None:
        """SIGKILL: the process dies at once, without a word to anyone (its leases simply stop)."""
        assert self.popen is not None and self.alive, f"{self.name} is not running"
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(STOP_DEADLINE)
        self.stopped = False
        self.client.close()  # its kept-alive connections are dead
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process is frozen (a long GC pause, a VM migrated), its sockets still open."""
        assert self.popen is not None and self.alive, f"{self.name} is not running"
        self.popen.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        """SIGCONT."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)
        self.stopped = False

    def terminate(self, deadline: float = STOP_DEADLINE) -> int:
        """SIGTERM, as a rolling restart stops a process; waits for it to exit and returns its code."""
        assert self.popen is not None and self.alive, f"{self.name} is not running"
        if self.stopped:
            self.resume()
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(deadline)
        except subprocess.TimeoutExpired:
            self.popen.kill()  # reaped, so that the next test gets a new process on this port
            self.popen.wait(STOP_DEADLINE)
            raise AssertionError(
                f"process {self.name} still running {deadline} s after SIGTERM (killed):\n{self.log()}"
            ) from None

    def ensure_running(self) -> None:
        """Back to a serving process, whatever a test did to it."""
        if self.stopped:
            self.resume()
        if not self.alive:
            self.start()

    def shutdown(self) -> None:
        """At teardown: SIGTERM, then SIGKILL if it will not go; always reaped."""
        self.client.close()
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        if self.stopped:
            self.resume()
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(STOP_DEADLINE)


# --- the round robin --------------------------------------------------------------------------------------


class RoundRobin(httpx.BaseTransport):
    """An httpx transport that sends each request to the next process in turn, whatever the URL's host:
    a client using it never chooses where a request lands, as behind a load balancer. Each response says
    which process answered (`X-Test-Node`, added here, never sent by Atelier)."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = list(nodes)
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._transport = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            node = self.nodes[next(self._turn) % len(self.nodes)]
        request.url = request.url.copy_with(host="127.0.0.1", port=node.port)
        request.headers["Host"] = f"127.0.0.1:{node.port}"
        response = self._transport.handle_request(request)
        response.headers["X-Test-Node"] = node.name
        return response

    def close(self) -> None:
        self._transport.close()


def round_robin_client(nodes: Sequence[Node]) -> httpx.Client:
    return httpx.Client(base_url="http://atelier.cluster", transport=RoundRobin(nodes), timeout=10)


def served_by(response: httpx.Response) -> str:
    return response.headers["X-Test-Node"]


# --- the cluster -----------------------------------------------------------------------------------------


@dataclass
class Cluster:
    a: Node
    b: Node
    redis: RedisServer
    prefix: str
    database_url: str
    directory: Path
    client: httpx.Client  # the round robin over A and B
    migration_failures: list[str]  # what `atelier migrate` run twice at once printed when it failed
    _marks: dict[str, int] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[Node, Node]:
        return (self.a, self.b)

    def ensure_running(self) -> None:
        """Redis up and both processes serving, whatever the last test did to them (a process that is alive
        but does not serve, such as one stuck in its shutdown, is killed and started again)."""
        if self.redis.process is None:
            self.redis.start()
        for node in self.nodes:
            if node.stopped:
                node.resume()
            if not node.alive:
                node.spawn()
        for node in self.nodes:
            try:
                node.wait_ready(STARTUP_DEADLINE / 2)
            except AssertionError:
                if node.alive:
                    node.kill()
                node.start()

    def mark(self) -> None:
        """Remember where each log is now: `logs_since_mark` shows what a test made them write."""
        self._marks = {node.name: node.log_size() for node in self.nodes}

    def logs_since_mark(self) -> str:
        return "\n".join(
            f"===== process {node.name} ({node.url}) =====\n{node.log(self._marks.get(node.name, 0))}"
            for node in self.nodes
        )

    def sql(self, query: str, *arguments: Any) -> list[tuple[Any, ...]]:
        """Ask the shared database directly (what was stored, and how many times)."""
        return run_sql(self.database_url, query, *arguments)

    def articles(self, artist_id: int) -> list[tuple[Any, ...]]:
        """(version, job_id, markdown) of every stored article of the artist, oldest first."""
        return self.sql(
            "SELECT version, job_id, markdown FROM articles WHERE artist_id = $1 ORDER BY id", artist_id
        )


def run_sql(database_url: str, query: str, *arguments: Any) -> list[tuple[Any, ...]]:
    import asyncpg  # type: ignore[import-untyped]

    async def fetch() -> list[tuple[Any, ...]]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn, timeout=5)
        try:
            return [tuple(row) for row in await connection.fetch(query, *arguments)]
        finally:
            await connection.close()

    return asyncio.run(fetch())


def run_command(args: Sequence[str], *, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ATELIER, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def migrate_at_once(env: dict[str, str], cwd: Path, processes: int = 2) -> list[str]:
    """`atelier migrate` run by `processes` processes at the same moment, as processes that migrate at start
    would. Returns what each failed one printed (with its exit code); if any failed, the schema is then
    built by one more run alone, so that the rest of the suite still runs (test_contract.py checks that
    nothing failed)."""
    running = [run_command(["migrate"], env=env, cwd=cwd) for _ in range(processes)]
    outputs = [process.communicate(timeout=120)[0] for process in running]
    failures = [
        f"exit {process.returncode}:\n{output}"
        for process, output in zip(running, outputs, strict=True)
        if process.returncode != 0
    ]
    if failures:
        alone = run_command(["migrate"], env=env, cwd=cwd)
        output = alone.communicate(timeout=120)[0]
        assert alone.returncode == 0, f"atelier migrate failed even alone:\n{output}"
    return failures


def seed(env: dict[str, str], cwd: Path) -> None:
    process = run_command(["seed"], env=env, cwd=cwd)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, f"atelier seed failed:\n{output}"


@contextmanager
def cluster(directory: Path, **settings: str) -> Iterator[Cluster]:
    """Redis, PostgreSQL, migrations, the sample catalog and processes A and B, for the block's length;
    `settings` are ATELIER_* variables without the prefix, given to both processes (they override the
    defaults below). Skipped (or failed, with CI=true) without PostgreSQL or redis-server."""
    directory.mkdir(parents=True, exist_ok=True)
    with redis_server() as redis, fresh_postgres_database() as database_url:
        prefix = unique_prefix()
        values = {
            "database_url": database_url,
            "redis_url": redis.url,
            "redis_prefix": prefix,
            "api_tokens": TOKEN,
            "job_lease": f"{LEASE:g}",
            "job_scan": f"{SCAN:g}",
            "job_grace": f"{GRACE:g}",
            "generation_rate": "100000/minute",
            "writer_plan": "never",
            **settings,
        }
        env = clean_environment(**atelier_settings(**values))
        migration_failures = migrate_at_once(env, directory)
        a = Node("A", free_port(), env, directory)
        b = Node("B", free_port(), env, directory)
        client = round_robin_client([a, b])
        try:
            a.spawn()
            b.spawn()
            seed(env, directory)  # while they start
            a.wait_ready()
            b.wait_ready()
            yield Cluster(
                a=a,
                b=b,
                redis=redis,
                prefix=prefix,
                database_url=database_url,
                directory=directory,
                client=client,
                migration_failures=migration_failures,
            )
        finally:
            client.close()
            with ExitStack() as stack:  # both stopped, even if one fails to
                stack.callback(b.shutdown)
                stack.callback(a.shutdown)


# --- the API ---------------------------------------------------------------------------------------------


def unique(name: str) -> str:
    """A name no other test uses (the tests of a module share one database)."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def new_artist(client: httpx.Client, name: str = "Nina Simone", **fields: Any) -> dict[str, Any]:
    """Create an artist with a unique name (with the token); its JSON."""
    response = client.post(ARTISTS, json={"name": unique(name), **fields}, headers=AUTH)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- reading streams ---------------------------------------------------------------------------------------


def stream_path(artist_id: int) -> str:
    return f"{ARTISTS}/{artist_id}/article/stream"


def seq(event: StreamedEvent) -> int:
    return int(event.id.rpartition(":")[2])


def stream_of(event: StreamedEvent) -> str:
    return event.id.rpartition(":")[0]


class Reader:
    """One SSE stream, read event by event, so a test can act between two events (kill the process the
    stream comes from, open another reader ...). `events` is everything read so far; `broken` the transport
    error if the connection died before the stream's end."""

    def __init__(
        self,
        client: httpx.Client,
        path: str,
        *,
        last_event_id: str | None = None,
        params: dict[str, Any] | None = None,
        timeout: float = 10,
    ) -> None:
        self._stack = ExitStack()
        headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
        self.response = self._stack.enter_context(
            client.stream("GET", path, headers=headers, params=params, timeout=timeout)
        )
        self.events: list[StreamedEvent] = []
        self.broken: httpx.TransportError | None = None
        self.finished = False
        self._sse: Iterator[ServerSentEvent] | None = None
        if self.response.status_code == 200:
            self._sse = EventSource(self.response).iter_sse()
        else:
            self.response.read()
            self.finished = True

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def node(self) -> str | None:
        node: str | None = self.response.headers.get("X-Test-Node")
        return node

    @property
    def last_id(self) -> str:
        assert self.events, "nothing read yet"
        return self.events[-1].id

    @property
    def job_id(self) -> str:
        metadata = next(event for event in self.events if event.event == "metadata")
        job_id: str = metadata.data["job_id"]
        return job_id

    def next(self) -> StreamedEvent | None:
        """The next event; None once the stream ended (or the connection died: see `broken`)."""
        if self._sse is None or self.finished:
            return None
        try:
            for sse in self._sse:
                if not sse.data:
                    continue  # `retry:` alone
                data = json.loads(sse.data)
                assert data["type"] == sse.event, sse
                event = StreamedEvent(id=sse.id, event=sse.event, data=data)
                self.events.append(event)
                return event
        except httpx.TransportError as exc:
            self.broken = exc
        self.finished = True
        return None

    def until(self, predicate: Callable[[StreamedEvent], bool], what: str = "an event") -> StreamedEvent:
        """Read until an event satisfies `predicate`; fail if the stream ends first."""
        while (event := self.next()) is not None:
            if predicate(event):
                return event
        raise AssertionError(f"the stream ended before {what} (broken: {self.broken!r}): {self.events}")

    def text(self, expected: str) -> None:
        """Read until the text so far is `expected` (however it was cut into events)."""
        while (so_far := joined_text(self.events)) != expected:
            assert expected.startswith(so_far), f"{so_far!r} is not the start of {expected!r}"
            if self.next() is None:
                raise AssertionError(f"the stream ended at {so_far!r}, before {expected!r}: {self.events}")

    def texts(self, count: int) -> None:
        """Read until `count` text events (in all) have been read."""
        while sum(event.event == "text" for event in self.events) < count:
            if self.next() is None:
                raise AssertionError(f"the stream ended before {count} texts: {self.events}")

    def rest(self) -> list[StreamedEvent]:
        """Read to the end; the events read by this call."""
        start = len(self.events)
        while self.next() is not None:
            pass
        return self.events[start:]

    def close(self) -> None:
        self._stack.close()


def terminal(events: Sequence[StreamedEvent]) -> list[StreamedEvent]:
    return [event for event in events if event.event in ("done", "error")]


def assert_seamless(events: Sequence[StreamedEvent], job_id: str, markdown: str) -> None:
    """One job's events as one reader got them, across its reconnects: all of that job, from `metadata` to
    one `done` at the end; no event twice (ids strictly increasing) and none missing: consecutive ids
    (a reader that fell behind gets a run of text merged into one event carrying the run's last id, so a
    jump is allowed onto a `text` only), and the text joined is the stored markdown, byte for byte."""
    assert events, "no events"
    assert {stream_of(event) for event in events} == {job_id}, [event.id for event in events]
    assert events[0].event == "metadata" and seq(events[0]) == 1, events[0]
    for before, after in itertools.pairwise(events):
        assert seq(after) > seq(before), f"repeated or out of order: {before.id} then {after.id}"
        assert seq(after) == seq(before) + 1 or after.event == "text", f"gap: {before.id} then {after.id}"
    assert [event.event for event in terminal(events)] == ["done"], terminal(events)
    assert events[-1].event == "done"
    assert joined_text(list(events)) == markdown
