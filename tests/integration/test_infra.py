"""The test infrastructure itself: real brokers, real workers, no strays."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.celeryapp import client_app
from support.requires import isolated_url
from support.workers import celery_python

pytestmark = [pytest.mark.broker, pytest.mark.celery]


def _ping(url: str, timeout: float = 2.0) -> dict[str, object]:
    client = client_app(url)
    try:
        return client.control.inspect(timeout=timeout).ping() or {}
    finally:
        client.close()


@pytest.mark.parametrize("version", ["5.7", "5.4"])
def test_workers_answer_on_both_brokers(broker_url: str, celery_workers, version: str) -> None:
    (worker,) = celery_workers(broker_url, n=1, version=version)
    replies = _ping(broker_url)
    assert replies == {worker.hostname: {"ok": "pong"}}


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_isolated_namespaces_do_not_see_each_other(broker_pool, celery_workers, kind) -> None:
    if kind == "amqp" and not broker_pool.can_make_vhosts:
        pytest.skip("RabbitMQ is not local: the pool cannot make vhosts, so nothing to isolate")
    first = isolated_url(broker_pool, kind)
    second = isolated_url(broker_pool, kind)
    assert first != second
    try:
        (worker,) = celery_workers(first, n=1)
        assert worker.hostname in _ping(first)
        assert _ping(second, timeout=0.5) == {}
    finally:
        broker_pool.release(first)
        broker_pool.release(second)


def test_vhosts_made_in_batches_are_usable_and_all_go_at_close(amqp_url: str) -> None:
    """RabbitMQ vhosts come a batch per rabbitmqctl call; each is usable by
    guest, and close() deletes every one, handed out or not."""
    from kombu import Connection, Queue

    from support.brokers import VHOST_BATCH, BrokerPool

    def ours(pool: BrokerPool) -> set[str]:
        out = subprocess.run(
            ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, timeout=60
        ).stdout
        return {line.strip() for line in out.splitlines() if pool.run_id in line}

    pool = BrokerPool(amqp_url, None)
    if not pool.can_make_vhosts:
        pytest.skip("RabbitMQ is not local: the pool cannot make vhosts")
    urls = [pool.isolated("amqp") for _ in range(VHOST_BATCH + 1)]
    try:
        assert len(set(urls)) == len(urls)
        assert len(ours(pool)) == 2 * VHOST_BATCH  # two batches, one of them barely used
        for url in (urls[0], urls[-1]):
            with Connection(url, connect_timeout=5) as conn:
                Queue("wkctl-infra-probe", channel=conn.channel(), auto_delete=True).declare()
    finally:
        pool.close()
    assert ours(pool) == set()


def test_killed_test_process_leaves_no_worker_behind(
    tmp_path: Path, redis_url: str, broker_pool
) -> None:
    """A test run killed with SIGKILL (no teardown at all) takes its workers with it."""
    url = broker_pool.isolated("redis")
    script = tmp_path / "victim.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from bench.harness.workers import WorkerPool
        pool = WorkerPool(logdir=Path({str(tmp_path)!r}), record_dir=Path({str(tmp_path)!r}))
        (w,) = pool.start({url!r}, n=1)
        print(w.pid, w.hostname, flush=True)
        time.sleep(600)
    """)
    )
    victim = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline().split()  # type: ignore[union-attr]
        assert line, "the victim did not start its worker"
        worker_pid = int(line[0])
        os.kill(worker_pid, 0)  # the worker is running
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker_pid, 0)
            except ProcessLookupError:
                break
            # reap it if it became our zombie (it is not our child, so this is a no-op)
            time.sleep(0.1)
        else:
            pytest.fail(f"worker {line[1]} (pid {worker_pid}) outlived the killed test process")
    finally:
        if victim.poll() is None:
            victim.kill()
        broker_pool.release(url)


def test_celery_interpreters_are_what_they_claim() -> None:
    for version in ("5.7", "5.4"):
        python = celery_python(version)
        if python is None:
            continue
        out = subprocess.run(
            [python, "-c", "import celery; print(celery.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip().startswith(version), (version, out.stdout)
