"""`make cluster`: Atelier as several processes on this machine, as docs/deploy.md describes it, in the
foreground until Ctrl-C:

- the local PostgreSQL (database `atelier` on 127.0.0.1:5432, created if missing) and the local Redis
  (127.0.0.1:6379; keys under `atelier:`);
- `atelier migrate` and `atelier seed`;
- two processes, `atelier serve` on 127.0.0.1:8000 and 127.0.0.1:8001, with the same settings (and any
  ATELIER_* of your environment or `.env`, such as an upstream's key);
- nginx with the shipped nginx.conf on http://127.0.0.1:8080, rendered as the tests render it
  (tests/nginx/servers.py: only its listen address, paths and temporary directories changed, these in a
  temporary directory), answering `localhost` and `127.0.0.1` besides the shipped `atelier.example.com`.

Ctrl-C (or SIGTERM) stops nginx and both processes (SIGTERM, then SIGKILL after 10 s). So does any of them
exiting on its own.

    python -m tests.cluster.local [--database-url URL] [--redis-url URL] [--ports 8000 8001] [--nginx-port 8080]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NGINX = "/usr/sbin/nginx"
STOP_DEADLINE = 10.0
READY_DEADLINE = 30.0
SERVER_NAME = "atelier.example.com"


def say(message: str) -> None:
    print(f"cluster: {message}", flush=True)


def ensure_database(url: str) -> None:
    """Create the database of `url` if it is missing (connecting to the server's `postgres` database)."""
    import asyncpg  # type: ignore[import-untyped]

    base, _, name = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")

    async def create() -> bool:
        connection = await asyncpg.connect(f"{base}/postgres", timeout=5)
        try:
            if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            await connection.execute(f'CREATE DATABASE "{name}"')
            return True
        finally:
            await connection.close()

    try:
        created = asyncio.run(create())
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"cluster: PostgreSQL at {base} cannot be used ({exc}); start it (.ci/run shows how)"
        ) from None
    say(f"database {name!r} {'created' if created else 'already there'}")


def ensure_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise SystemExit(f"cluster: Redis at {url} does not answer ({exc}); start redis-server") from None
    say(f"Redis at {url} answers")


def run(args: Sequence[str], env: dict[str, str]) -> None:
    say(" ".join(args))
    subprocess.run([str(BIN / "atelier"), *args], env=env, cwd=ROOT, check=True)


def relay_output(name: str, stream: IO[bytes]) -> None:
    """Each line a child writes, prefixed with its name."""
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def spawn(name: str, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(
        list(command),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert popen.stdout is not None
    threading.Thread(target=relay_output, args=(name, popen.stdout), daemon=True).start()
    return popen


def render_nginx(directory: Path, port: int, upstream_ports: tuple[int, int]) -> Path:
    from tests.nginx.servers import render_nginx_conf

    directory.mkdir(parents=True, exist_ok=True)
    conf = render_nginx_conf(
        directory,
        port=port,
        upstream_port=upstream_ports[0],
        second_upstream_port=upstream_ports[1],
        static_dir=ROOT / "static",
        overrides={},
    )
    text = conf.read_text()
    names = f"server_name {SERVER_NAME};"
    assert names in text, f"nginx.conf no longer serves {SERVER_NAME}"
    conf.write_text(text.replace(names, f"server_name {SERVER_NAME} localhost 127.0.0.1;"))
    return conf


def wait_ready(url: str, popen: subprocess.Popen[bytes], headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"cluster: {url} exited with {popen.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"cluster: {url} not ready within {READY_DEADLINE} s")


def stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for popen in children.values():
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_DEADLINE
    for name, popen in children.items():
        try:
            popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} still running {STOP_DEADLINE:g} s after SIGTERM: killed")
            popen.kill()
            popen.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make cluster",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/atelier",
        help="the PostgreSQL database of both processes (created if missing)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the Redis both share")
    parser.add_argument(
        "--ports", type=int, nargs=2, default=[8000, 8001], metavar="PORT", help="the two processes' ports"
    )
    parser.add_argument("--nginx-port", type=int, default=8080, help="nginx's port, on 127.0.0.1")
    parser.add_argument(
        "--directory", type=Path, help="for nginx's files and cache (default: a new temporary one)"
    )
    args = parser.parse_args(argv)

    ensure_database(args.database_url)
    ensure_redis(args.redis_url)
    env = {**os.environ, "ATELIER_DATABASE_URL": args.database_url, "ATELIER_REDIS_URL": args.redis_url}
    run(["migrate"], env)
    run(["seed"], env)
    if not os.access(NGINX, os.X_OK):
        raise SystemExit(f"cluster: {NGINX} is missing (`make nginx` installs Debian's nginx)")
    directory = args.directory or Path(tempfile.mkdtemp(prefix="atelier-cluster-"))
    conf = render_nginx(directory / "nginx", args.nginx_port, (args.ports[0], args.ports[1]))
    nginx_dir = conf.parent
    nginx_args = ["-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")]
    subprocess.run([NGINX, "-t", "-q", *nginx_args, "-g", f"pid {nginx_dir}/nginx.pid;"], check=True)

    stopping = threading.Event()

    def on_signal(_number: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for port in args.ports:
            command = [str(BIN / "atelier"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            children[f":{port}"] = spawn(f":{port}", command, env)
        daemon = ["-g", f"daemon off; pid {nginx_dir}/nginx.pid;"]
        children["nginx"] = spawn("nginx", [NGINX, *nginx_args, *daemon], dict(os.environ))
        for port in args.ports:
            wait_ready(f"http://127.0.0.1:{port}/ready", children[f":{port}"])
        front = f"http://127.0.0.1:{args.nginx_port}"
        wait_ready(f"{front}/health", children["nginx"], headers={"Host": SERVER_NAME})
        say(f"ready: {front} (nginx) in front of " + ", ".join(f"127.0.0.1:{port}" for port in args.ports))
        say(f"try: curl -N '{front}/api/v1/collection/artists/1/article/stream?length=short'")
        say("Ctrl-C stops them all")
        while not stopping.wait(0.5):
            ended = [name for name, popen in children.items() if popen.poll() is not None]
            if ended:
                say(f"{', '.join(ended)} exited: stopping the others")
                break
    finally:
        say("stopping")
        stop(children)
    return 0


if __name__ == "__main__":
    sys.exit(main())
