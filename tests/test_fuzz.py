"""A fuzzer (issue 9): Schemathesis makes requests from the app's own OpenAPI schema (`/openapi.json`) and
sends them to a real uvicorn server on loopback, on SQLite and on PostgreSQL, one test per route group.

Every answer is checked twice:
- for bugs, which fail the test: `not_a_server_error` (no 5xx) and `contract_error_shape` (an API error is
  JSON, `{"error": {"code": snake_case, "message": a non-empty sentence, ...}}`: docs/contract "Errors");
- against the schema: `status_code_conformance`, `content_type_conformance`, `response_schema_conformance`.
  A mismatch there means `/openapi.json` does not describe what the route does (a gap, not a bug).
Each distinct finding (operation, check, status, content type) is kept with the shortest request that
showed it, and all of them are reported at the end of the test (`pytest -s` prints the report even when the
test does not fail), which fails on any: a bug and a gap in the schema alike.

How the cases are made: for each operation, MAX_EXAMPLES positive and MAX_EXAMPLES negative cases
(schemathesis' generation modes; an operation with nothing to make invalid gets positive cases only), by
Hypothesis, derandomized so CI sends the same requests each run. Random ids would only ever meet 404s and
random text rarely holds a NUL, so each case is then steered by draws Hypothesis also shrinks (`_steer`):
about half carry the write token; ids point at seeded artists, stored versions or started jobs (or at the
edges of 32- and 64-bit integers); `language` is often one the server allows; strings are sometimes swapped
for edge values; GETs ask for JSON, markdown or nothing in particular. Schemathesis reads an SSE answer
with a bound (20 events or the request timeout); a `format=markdown` stream ends with its portrait, which
the fast demo writer finishes at once.

The pages are not in `/openapi.json` (their router says `include_in_schema=False`: HTML, not API); they are
fuzzed from a schema built from that router's own routes, for no 5xx, JSON errors in the contract's shape,
and HTML (or a redirect) otherwise. `test_every_route_is_fuzzed` proves no route is left out.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

from app import migrations
from app.catalog.seed import seed_catalog
from app.catalog.seed_data import SAMPLE_ARTISTS
from app.db import create_engine, create_sessionmaker
from app.main import create_app
from app.web.router import router as web_router
from tests.conftest import make_settings
from tests.support import ARTISTS, AUTH, TOKEN, LiveServer, live_server

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = 25  # per operation and generation mode: about 1,000 requests per database
REQUEST_TIMEOUT = 10.0

# The server: a fast demo writer (a portrait takes milliseconds), short waits, no rate limit in the way.
SERVER_SETTINGS: dict[str, Any] = {
    "demo_tokens_per_second": 100_000,
    "sync_wait": 5,
    "job_grace": 0.2,
    "generation_rate": "100000/minute",
}

# Route group -> the OpenAPI tags it fuzzes (the pages, outside /openapi.json, go with "pages_health").
GROUPS: dict[str, tuple[str, ...]] = {
    "catalog": ("catalog",),
    "articles": ("articles",),
    "generation": ("generation",),
    "pages_health": ("health",),
}

# Reproducers show the (throwaway) test token rather than "[Filtered]", so they can be pasted as they are.
CONFIG = schemathesis.Config.from_dict({"output": {"sanitization": {"enabled": False}}})

# Values random generation rarely reaches: NULs, accents (folded by search), LIKE wildcards, quotes, a seeded
# name in another case and without its accent (a duplicate: 409); ids at the edges of 32- and 64-bit integers.
EDGE_STRINGS = ["\x00", "a\x00b", "%", "_", "'", "\\", "Édith", "EDITH PIAF"]
EDGE_IDS = [0, 2**31 - 1, 2**31, 2**63 - 1, 2**63]
STORED_ARTIST = 1  # its portrait is stored in every length before the run (see `_prepare`)

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


# --- checks ---------------------------------------------------------------------------------------------


def _content_type(response: schemathesis.Response) -> str:
    values = response.headers.get("content-type") or [""]
    return values[0].split(";")[0].strip().lower()


@schemathesis.check
def contract_error_shape(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    """A 4xx/5xx answer of the API is JSON in the contract's shape (docs/contract "Errors"); so is a page's
    JSON error (a page may also answer its errors in HTML). A HEAD's answer is only read for its headers."""
    if response.status_code < 400:
        return
    if _content_type(response) != "application/json":
        assert not case.path.startswith("/api/"), f"an API error answered as {_content_type(response)!r}"
        return
    if case.method.upper() == "HEAD":  # the GET's headers and no body: the GET's cases check the body's shape
        assert not response.content, "a HEAD answered with a body"
        return
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise AssertionError(f"a JSON error answer that is not JSON: {exc}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f'no "error" object in {body!r:.300}'
    code, message = error.get("code"), error.get("message")
    assert isinstance(code, str) and SNAKE_CASE.match(code), f"error.code is not snake_case: {code!r}"
    assert isinstance(message, str) and message.strip(), f"error.message is empty: {message!r}"
    assert "Traceback" not in response.text, "a traceback in an error answer"


@schemathesis.check
def page_is_html(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    """A page answers HTML, a redirect, or (its own parameters refused) a JSON error."""
    kind = _content_type(response)
    if 300 <= response.status_code < 400:
        assert response.headers.get("location"), "a redirect without a Location"
    elif response.status_code < 400 or kind != "application/json":
        assert kind == "text/html", f"a page answered {kind!r}"


BUG_CHECKS: list[Callable[..., Any]] = [not_a_server_error, contract_error_shape]
SCHEMA_CHECKS: list[Callable[..., Any]] = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


# --- the server, seeded -----------------------------------------------------------------------------------


@dataclass
class Target:
    server: LiveServer
    artists: int  # ids 1..artists were seeded
    jobs: list[str]  # jobs started before the run (kept for ATELIER_JOB_RETENTION after they end)


Key = tuple[str, str, int, str]  # operation, what failed, status, content type


@dataclass
class Findings:
    """Everything the fuzzer saw go wrong, each with the shortest request that showed it."""

    bugs: dict[Key, str] = field(default_factory=dict)
    gaps: dict[Key, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # no answer at all, or the fuzzer itself failing

    @staticmethod
    def keep(found: dict[Key, str], case: Any, response: schemathesis.Response, failure: Failure) -> None:
        key = (case.operation.label, failure.title, response.status_code, _content_type(response))
        body = response.content[:300].decode("utf-8", "replace").replace("\n", "\\n")
        why = "; ".join(line.strip() for line in failure.message.splitlines() if line.strip())
        answer = f"-> {response.status_code} {_content_type(response)} {body}"
        reproducer = f"{why}\n    {case.as_curl_command()}\n    {answer}"
        if key not in found or len(reproducer) < len(found[key]):
            found[key] = reproducer

    def report(self) -> str:
        lines = [f"ERROR {error}" for error in self.errors]
        for kind, found in (("BUG", self.bugs), ("SCHEMA", self.gaps)):
            for (label, title, status, content_type), reproducer in sorted(found.items()):
                lines.append(f"{kind} {label}: {title} ({status} {content_type})\n    {reproducer}")
        return "\n".join(lines)


async def _seed(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        await seed_catalog(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    return len(SAMPLE_ARTISTS)


def _prepare(server: LiveServer) -> list[str]:
    """A stored portrait of STORED_ARTIST in every length (reads and replays answer 200), and two jobs."""
    for length in ("short", "medium", "long"):
        stored = server.client.post(
            f"{ARTISTS}/{STORED_ARTIST}/article", params={"length": length}, headers=AUTH
        )
        assert stored.status_code == 200, stored.text
    jobs = []
    for artist_id, length in ((2, "short"), (3, "long")):
        started = server.client.post(
            f"{ARTISTS}/{artist_id}/article/jobs", params={"length": length}, headers=AUTH
        )
        assert started.status_code == 202, started.text
        jobs.append(started.json()["job_id"])
    return jobs


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """A seeded server on the database the test names (sqlite or postgres)."""
    if request.param == "sqlite":
        database_url = request.getfixturevalue("sqlite_database")
    else:
        database_url = request.getfixturevalue("postgres_database")  # fails, not skips, with CI=true
        migrations.upgrade(database_url)
    artists = asyncio.run(_seed(database_url))
    with live_server(make_settings(database_url, **SERVER_SETTINGS)) as server:
        yield Target(server=server, artists=artists, jobs=_prepare(server))


# --- the fuzzing ------------------------------------------------------------------------------------------


def _steer(case: Any, data: st.DataObject, target: Target) -> None:
    """Point cases at things that exist, send the token with about half, put edge values in some."""
    path = case.path_parameters
    if path:
        if "artist_id" in path:
            artist_ids = {
                "generated": st.just(path["artist_id"]),
                "stored": st.just(STORED_ARTIST),
                "seeded": st.integers(1, target.artists + 1),  # and one past the last
                "edge": st.sampled_from(EDGE_IDS),
            }
            where = data.draw(st.sampled_from(sorted(artist_ids)), label="artist_id from")
            path["artist_id"] = data.draw(artist_ids[where], label="artist_id")
        if "version" in path and data.draw(st.booleans(), label="a stored version"):
            path["version"] = data.draw(st.integers(1, 2), label="version")
        if "job_id" in path and data.draw(st.booleans(), label="a started job"):
            path["job_id"] = data.draw(st.sampled_from(target.jobs), label="job_id")
    if case.query and "language" in case.query and data.draw(st.booleans(), label="an allowed language"):
        case.query["language"] = data.draw(st.sampled_from(["en", "fr"]), label="language")
    for fields in (case.query, case.body):
        if not isinstance(fields, dict):
            continue  # no query; no body (schemathesis' NotSet), or one that is not an object
        strings = sorted(key for key, value in fields.items() if isinstance(value, str))
        if strings and data.draw(st.booleans(), label="an edge string"):
            fields[data.draw(st.sampled_from(strings), label="in")] = data.draw(st.sampled_from(EDGE_STRINGS))
    headers = dict(case.headers or {})
    if data.draw(st.booleans(), label="with the token"):
        headers["Authorization"] = f"Bearer {TOKEN}"
    if case.method.upper() == "GET":
        accept = data.draw(st.sampled_from([None, "application/json", "text/markdown"]), label="Accept")
        if accept is not None:
            headers["Accept"] = accept
    case.headers = headers


def _fuzz_operation(
    operation: Any,
    target: Target,
    findings: Findings,
    bug_checks: list[Callable[..., Any]],
    schema_checks: list[Callable[..., Any]],
) -> None:
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            verbosity=Verbosity.quiet,
        )
        @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
        def run(case: Any, data: st.DataObject) -> None:
            _steer(case, data, target)
            try:
                response = case.call(base_url=target.server.url, timeout=REQUEST_TIMEOUT)
            except requests.RequestException as exc:
                raise AssertionError(
                    f"no answer ({type(exc).__name__}: {exc}): {case.as_curl_command()}"
                ) from None
            try:
                case.validate_response(response, checks=bug_checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    findings.keep(findings.bugs, case, response, failure)
                raise  # Hypothesis shrinks it; each attempt that fails too is kept if shorter
            if not schema_checks:
                return  # (an empty list would mean every default check)
            try:
                case.validate_response(response, checks=schema_checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    findings.keep(findings.gaps, case, response, failure)

        try:
            run()
        except Unsatisfiable:
            # Nothing in this operation can be made invalid (no parameters, no body).
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request could be made"
        except (Exception, BaseExceptionGroup) as exc:
            findings.errors.extend(f"{operation.label} ({mode.value}): {error}" for error in _unkept(exc))


def _unkept(exc: BaseException) -> list[str]:
    """What Hypothesis raised, less the check failures already kept in Findings."""
    if isinstance(exc, FailureGroup):
        return []
    if isinstance(exc, BaseExceptionGroup):
        return [error for inner in exc.exceptions for error in _unkept(inner)]
    return [f"{type(exc).__name__}: {exc}"]


def _pages_schema() -> Any:
    """The pages' own routes as an OpenAPI document (left out of /openapi.json on purpose)."""
    routes = []
    for route in web_router.routes:
        assert isinstance(route, APIRoute)
        visible = copy.copy(route)
        visible.include_in_schema = True
        routes.append(visible)
    document = get_openapi(title="Atelier pages", version="0", routes=routes)
    return schemathesis.openapi.from_dict(document, config=CONFIG)


def _conclude(findings: Findings) -> None:
    """Fail on anything found; print the report either way."""
    print(findings.report())
    if findings.errors or findings.bugs or findings.gaps:
        pytest.fail(f"the fuzzer found:\n{findings.report()}", pytrace=False)


CASES = [
    pytest.param(group, database, id=f"{group}-{database}")
    for group in GROUPS
    for database in ("sqlite", "postgres")
]


@pytest.mark.parametrize(("group", "target"), CASES, indirect=["target"])
def test_fuzz(group: str, target: Target) -> None:
    findings = Findings()
    schema = schemathesis.openapi.from_url(f"{target.server.url}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.include(tag=list(GROUPS[group])).get_all_operations()]
    assert operations, f"no operation is tagged {GROUPS[group]}"
    for operation in operations:
        _fuzz_operation(operation, target, findings, BUG_CHECKS, SCHEMA_CHECKS)
    if group == "pages_health":
        for result in _pages_schema().get_all_operations():
            _fuzz_operation(result.ok(), target, findings, [*BUG_CHECKS, page_is_html], [])
    _conclude(findings)


def test_every_route_is_fuzzed(sqlite_database: str) -> None:
    """Every operation of /openapi.json is in a fuzzed group, and every route left out of it is a page."""
    app = create_app(make_settings(sqlite_database))
    fuzzed = {tag for tags in GROUPS.values() for tag in tags}
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            assert set(operation.get("tags", [])) & fuzzed, f"{method.upper()} {path} is in no fuzzed group"
    pages = {route.path for route in web_router.routes if isinstance(route, APIRoute)}
    for route in app.routes:
        if isinstance(route, APIRoute) and not route.include_in_schema:
            assert route.path in pages, f"{route.path} is left out of the schema and is not a page"
