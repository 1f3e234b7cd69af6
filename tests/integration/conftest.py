"""Fixtures: real brokers (RabbitMQ, Redis) and real Celery workers.

Broker order: ``WKCTL_TEST_AMQP_URL`` / ``WKCTL_TEST_REDIS_URL``; else the
local services on 127.0.0.1 if they answer; else, where a Docker engine
runs, ``docker/compose.yml`` through pytest-docker; else the broker tests
are skipped locally and fail under ``CI=true``: CI must never pass by not
testing (``support.requires``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.brokers import BrokerPool, answers, base_url, docker_engine_available
from support.requires import isolated_url, require_celery, unavailable
from support.workers import REPO, CeleryWorker, WorkerPool


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
def docker_setup() -> list[str]:
    """Only the two brokers of the compose file: its Celery workers and
    wkctl node are for users, and would answer every test's broadcasts."""
    return ["up --build --wait rabbitmq redis"]


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
