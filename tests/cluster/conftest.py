"""Fixtures of the cluster tests: two real Atelier processes on one PostgreSQL database and one private
redis-server (tests/cluster/support.py), started once per module; and what they logged, shown under a test
that failed."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from tests.cluster.support import Cluster, cluster
from tests.fakes.upstream import FakeUpstream, fake_upstream

# The embedded demo writer's pace in the contract suite: a short portrait (~600 words, two calls: the demo
# caps a call at 500 words) takes about 1.5 s.
DEMO_TOKENS_PER_SECOND = "400"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under a failed test, what each process of its cluster wrote while it ran."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for value in funcargs.values():
            if isinstance(value, Cluster):
                report.sections.append(("cluster processes' logs", value.logs_since_mark()))
                break
    return report


def ready(running: Cluster) -> Iterator[Cluster]:
    """The cluster, both processes serving before and after each test (restarted if a test killed one)."""
    running.ensure_running()
    running.mark()
    yield running
    running.ensure_running()


@pytest.fixture(scope="module")
def demo_cluster_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A and B writing with their own embedded demo writers (no ATELIER_LLM_BASE_URL)."""
    with cluster(
        tmp_path_factory.mktemp("demo-cluster"), demo_tokens_per_second=DEMO_TOKENS_PER_SECOND, job_grace="2"
    ) as running:
        yield running


@pytest.fixture
def demo_cluster(demo_cluster_module: Cluster) -> Iterator[Cluster]:
    yield from ready(demo_cluster_module)


@pytest.fixture(scope="module")
def cluster_upstream_module() -> Iterator[FakeUpstream]:
    """The scriptable fake upstream (real HTTP, in this test process) both processes of a module write
    with: every upstream request of both is counted there."""
    with fake_upstream() as fake:
        yield fake


@pytest.fixture
def cluster_upstream(cluster_upstream_module: FakeUpstream) -> Iterator[FakeUpstream]:
    cluster_upstream_module.reset()
    yield cluster_upstream_module
    cluster_upstream_module.reset()


@pytest.fixture(scope="module")
def upstream_cluster_module(
    tmp_path_factory: pytest.TempPathFactory, cluster_upstream_module: FakeUpstream
) -> Iterator[Cluster]:
    """A and B writing with the fake upstream; their shared circuit opens after 2 failed generations and
    lets a trial through 3 s later."""
    with cluster(
        tmp_path_factory.mktemp("upstream-cluster"),
        llm_base_url=cluster_upstream_module.base_url,
        llm_api_key="upstream-key",
        breaker_fail_max="2",
        breaker_reset_timeout="3",
    ) as running:
        yield running


@pytest.fixture
def upstream_cluster(upstream_cluster_module: Cluster, cluster_upstream: FakeUpstream) -> Iterator[Cluster]:
    yield from ready(upstream_cluster_module)
