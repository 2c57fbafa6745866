# Two entry points: `make run` (everything to serve the demo on :8000) and `make test` (every check:
# ruff, the import layers, mypy, pytest). `make cluster`: the service as two processes behind nginx.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run cluster test install browser nginx redis lint typecheck pytest migrate seed bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/atelier migrate

seed: migrate
	$(BIN)/atelier seed

run: seed
	$(BIN)/atelier serve --host $(HOST) --port $(PORT)

# Several processes on this machine (docs/deploy.md): the local PostgreSQL (database `atelier` on 127.0.0.1:5432,
# created if missing) and Redis (127.0.0.1:6379), `atelier migrate` and `seed`, `atelier serve` on :8000 and
# :8001, and nginx with the shipped nginx.conf on http://127.0.0.1:8080 in front (rendered as tests/nginx renders
# it, its files in a temporary directory). Ctrl-C stops them all. Options: make cluster CLUSTER_ARGS="--help".
cluster: install nginx
	$(BIN)/python -m tests.cluster.local $(CLUSTER_ARGS)

# The browser tests drive Debian's Chromium with Playwright (Playwright's own browser download cannot work
# here). Installed once, when missing; needs root, as on CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# The proxy tests (tests/nginx) run Debian's nginx with the shipped nginx.conf. Installed once, when missing;
# needs root, as on CI. (The package's own service is not needed: the tests run nginx in the foreground.)
nginx:
	@test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }

# The Redis tests (tests/redis_server.py) run a private redis-server of their own on a free port, never the
# shared one. Installed once, when missing; needs root, as on CI.
redis:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/bin/redis-server || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

pytest: install browser nginx redis
	$(BIN)/pytest

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache atelier.db
