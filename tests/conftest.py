"""Fixtures: real brokers (RabbitMQ, Redis) and real Celery workers.

Broker order: ``WKCTL_TEST_AMQP_URL`` / ``WKCTL_TEST_REDIS_URL``; else the
local services on 127.0.0.1 if they answer; else, where a Docker engine
runs, ``docker/compose.yml`` through pytest-docker; else the broker tests
are skipped locally and fail under ``CI=true``: CI must never pass by not
testing.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.brokers import BrokerPool, answers, base_url, docker_engine_available
from support.workers import CeleryWorker, WorkerPool, celery_python

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands with SIGINT
    # ignored, and children inherit "ignored": the wkctl processes the
    # tests interrupt (Ctrl-C -> exit 130) would then never see the signal.
    # Restore a handler so every child starts with the default disposition.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # wkctl keeps state under $XDG_STATE_HOME (the embedded broker, the
    # cache of nodes known alive): the suite gets its own, so that neither
    # the user's state nor an earlier run changes what a test sees.  Tests
    # that need a private one still set their own.
    state = tempfile.mkdtemp(prefix="wkctl-test-state-")
    os.environ["XDG_STATE_HOME"] = state
    config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow", action="store_true", default=False, help="run long fuzz and soak tests"
    )
    parser.addoption(
        "--release-matrix",
        nargs="?",
        const="all",
        default=None,
        metavar="RELEASES",
        help="run tests/test_release_matrix.py for every Celery release (or the comma-separated "
        "ones given) from cached venvs in .venv-matrix/, instead of the CI subset",
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from support.releases import HARDENED_RESULTS, RESULTS, render_hardened, render_matrix

    if RESULTS:
        terminalreporter.section("release matrix")
        for line in render_matrix(RESULTS):
            terminalreporter.write_line(line)
    if HARDENED_RESULTS:
        terminalreporter.section("hardened workers per release")
        for line in render_hardened(HARDENED_RESULTS):
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long-running: opt in with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: broker and Celery tests must run)")
    pytest.skip(reason)


def _docker_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    if not docker_engine_available():
        return None
    docker_services = request.getfixturevalue("docker_services")
    ip = request.getfixturevalue("docker_ip")
    if kind == "amqp":
        port = docker_services.port_for("rabbitmq", 5672)
        url = f"amqp://guest:guest@{ip}:{port}//"
    else:
        port = docker_services.port_for("redis", 6379)
        url = f"redis://{ip}:{port}/0"
    docker_services.wait_until_responsive(timeout=60, pause=0.5, check=lambda: answers(url))
    return url


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(REPO / "docker" / "compose.yml")


@pytest.fixture(scope="session")
def broker_pool(request: pytest.FixtureRequest) -> Iterator[BrokerPool]:
    amqp = base_url("amqp") or _docker_url("amqp", request)
    redis = base_url("redis") or _docker_url("redis", request)
    pool = BrokerPool(amqp, redis)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def amqp_url(broker_pool: BrokerPool) -> str:
    if broker_pool.amqp_url is None:
        unavailable("no RabbitMQ: set WKCTL_TEST_AMQP_URL or start one on 127.0.0.1:5672")
    return broker_pool.amqp_url  # type: ignore[return-value]


@pytest.fixture(scope="session")
def redis_url(broker_pool: BrokerPool) -> str:
    if broker_pool.redis_url is None:
        unavailable("no Redis: set WKCTL_TEST_REDIS_URL or start one on 127.0.0.1:6379")
    return broker_pool.redis_url  # type: ignore[return-value]


def isolated_url(broker_pool: BrokerPool, kind: str) -> str:
    if (broker_pool.amqp_url if kind == "amqp" else broker_pool.redis_url) is None:
        unavailable(f"no {kind} broker for this test")
    return broker_pool.isolated(kind)


@pytest.fixture(params=["amqp", "redis"])
def broker_url(request: pytest.FixtureRequest, broker_pool: BrokerPool) -> Iterator[str]:
    """A URL on a real broker, in a namespace of this test's own."""
    url = isolated_url(broker_pool, request.param)
    yield url
    broker_pool.release(url)


@pytest.fixture(params=["amqp", "redis"], scope="module")
def module_broker_url(request: pytest.FixtureRequest, broker_pool: BrokerPool) -> Iterator[str]:
    """Like ``broker_url``, shared by the tests of one module (for shared workers)."""
    url = isolated_url(broker_pool, request.param)
    yield url
    broker_pool.release(url)


@pytest.fixture(scope="session")
def worker_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerPool]:
    pool = WorkerPool(
        logdir=tmp_path_factory.mktemp("celery-logs"), record_dir=tmp_path_factory.mktemp("records")
    )
    yield pool
    pool.stop_all()


def require_celery(version: str) -> None:
    if celery_python(version) is None:
        unavailable(
            f"no Celery {version} interpreter (set WKCTL_TEST_CELERY{version.replace('.', '')}_PYTHON or create .venv-celery{version.replace('.', '')})"
        )


StartWorkers = Callable[..., list[CeleryWorker]]


@pytest.fixture
def celery_workers(worker_pool: WorkerPool) -> Iterator[StartWorkers]:
    """``celery_workers(url, n=1, version="5.7", events=True)``: started, ready, stopped at teardown."""
    mine: list[CeleryWorker] = []

    def start(url: str, n: int = 1, version: str = "5.7", **kwargs: object) -> list[CeleryWorker]:
        require_celery(version)
        workers = worker_pool.start(url, n=n, version=version, **kwargs)  # type: ignore[arg-type]
        mine.extend(workers)
        return workers

    yield start
    worker_pool.stop(mine)
