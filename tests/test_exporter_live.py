"""``wkctl exporter`` against real Celery 5.7 workers on RabbitMQ and Redis.

Tasks with a known outcome (succeed, fail, retry, revoked before they
run) go through a real worker; every celery_* counter on /metrics must
equal what was done.  Then the worker is killed with SIGKILL
(``celery_worker_up`` drops to 0 within the heartbeat expiry) and started
again under the same name (back to 1, counted as rejoined).

The default run uses a few dozen tasks; ``--run-slow`` adds the
1,000-task version:
``.venv/bin/python -m pytest tests/test_exporter_live.py --run-slow -k thousand``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer
from prometheus_client.parser import text_string_to_metric_families

from support.brokerproc import free_port
from support.celeryapp import client_app
from support.cliproc import wait_for_text, wkctl_popen
from support.mutate import Mutator
from support.nodes import hosted_nodes, unique_name
from support.tcpproxy import TcpProxy, proxied_url, target_of
from support.tools import tools_python
from support.workers import CeleryWorker, WorkerPool
from wkctl.protocol.broker import BrokerSettings, event_exchange
from wkctl.protocol.client import Client
from wkctl.protocol.metrics import TASK_COUNTERS

pytestmark = [pytest.mark.broker, pytest.mark.celery]

COUNTERS = tuple(t.split("-", 1)[1] for t in TASK_COUNTERS)


def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(text: str, metric: str, **labels: str) -> float:
    return sum(
        v
        for lab, v in samples(text).get(metric, [])
        if all(lab.get(k) == want for k, want in labels.items())
    )


class Exporter:
    def __init__(self, url: str, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.log = tmp / f"exporter-{self.port}.log"
        self.proc = wkctl_popen(
            [
                "-b",
                url,
                "exporter",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--hostname-label",
                "node",
                "--queue-interval",
                "1",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "wb"),
        )
        wait_for_text(self.log, "exporter on", self.proc)

    def metrics(self) -> str:
        status, body = scrape(self.port)
        assert status == 200, body
        return body

    def wait(self, predicate: Any, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            body = self.metrics()
            if predicate(body):
                return body
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"timed out; last scrape:\n{body[-4000:]}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster(
    module_broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, WorkerPool, CeleryWorker, Exporter]]:
    tmp = tmp_path_factory.mktemp("exporter")
    pool = WorkerPool(logdir=tmp, record_dir=tmp)
    worker = pool.start(module_broker_url, prefix="exp")[0]
    exporter = Exporter(module_broker_url, tmp, "--hello-interval", "1")
    try:
        yield module_broker_url, pool, worker, exporter
    finally:
        exporter.stop()
        pool.stop_all()


def run_tasks(url: str, adds: int, fails: int, flaky: int, revoked: int) -> dict[str, int]:
    """Send the tasks; the counts every celery_task_*_total must reach."""
    client = client_app(url, task_send_sent_event=True)
    try:
        revoked_ids = [f"revoked-{uuid.uuid4()}" for _ in range(revoked)]
        if revoked_ids:
            client.control.revoke(revoked_ids)
            time.sleep(0.5)  # the worker takes the revoke before the tasks arrive
        for i in range(adds):
            client.send_task("tasks.add", args=(i, i))
        for _ in range(fails):
            client.send_task("tasks.fail", args=("expected",))
        for _ in range(flaky):
            client.send_task("tasks.flaky", args=(1,))
        for task_id in revoked_ids:
            client.send_task("tasks.add", args=(0, 0), task_id=task_id)
    finally:
        client.close()
    return {
        "sent": adds + fails + flaky + revoked,
        "received": adds + fails + 2 * flaky,
        "started": adds + fails + 2 * flaky,
        "succeeded": adds + flaky,
        "failed": fails,
        "rejected": 0,
        "revoked": revoked,
        "retried": flaky,
    }


def check_counts(exporter: Exporter, before: dict[str, float], expected: dict[str, int]) -> str:
    def done(body: str) -> bool:
        return all(
            total(body, f"celery_task_{c}_total") - before[c] >= expected[c]
            for c in ("succeeded", "failed", "revoked", "retried", "sent")
        )

    body = exporter.wait(done, timeout=60)
    time.sleep(1.0)  # anything late (a duplicate would show now)
    body = exporter.metrics()
    got = {c: total(body, f"celery_task_{c}_total") - before[c] for c in COUNTERS}
    assert got == {c: float(n) for c, n in expected.items()}
    return body


def counts_now(exporter: Exporter) -> dict[str, float]:
    body = exporter.metrics()
    return {c: total(body, f"celery_task_{c}_total") for c in COUNTERS}


def test_counters_equal_the_truth(cluster: tuple[str, WorkerPool, CeleryWorker, Exporter]) -> None:
    url, _pool, worker, exporter = cluster
    before = counts_now(exporter)
    body = exporter.metrics()
    before_runtime = total(body, "celery_task_runtime_count")
    before_waits = total(body, "celery_task_queue_wait_time_count")
    before_waited = total(body, "celery_task_queue_wait_time_sum")
    sending = time.time()
    expected = run_tasks(url, adds=20, fails=6, flaky=5, revoked=4)
    body = check_counts(exporter, before, expected)
    elapsed = time.time() - sending
    # the runtime histogram saw every success, on the worker's series
    assert total(body, "celery_task_runtime_count") - before_runtime == expected["succeeded"]
    # the queue-wait histogram saw every start (each task was sent with
    # task-sent events; a retry's start counts again), on the worker's series
    waits = total(body, "celery_task_queue_wait_time_count") - before_waits
    assert waits == expected["started"]
    assert (
        total(
            body, "celery_task_queue_wait_time_count", hostname=worker.hostname, queue_name="celery"
        )
        >= waits
    )
    # no wait is negative or longer than the whole run (no countdowns here)
    waited = total(body, "celery_task_queue_wait_time_sum") - before_waited
    assert 0 < waited <= waits * elapsed, (waited, waits, elapsed)
    wait_buckets = {lab["le"] for lab, _ in samples(body)["celery_task_queue_wait_time_bucket"]}
    assert {"0.05", "1800.0", "+Inf"} <= wait_buckets
    assert (
        total(body, "celery_task_runtime_count", hostname=worker.hostname, name="tasks.add") >= 20
    )
    # failures carry the exception class
    assert total(body, "celery_task_failed_total", exception="RuntimeError") >= 6
    # every counter of a label set is visible (at 0 when nothing happened)
    rejected = samples(body)["celery_task_rejected_total"]
    assert any(lab["hostname"] == worker.hostname and v == 0 for lab, v in rejected)
    assert total(body, "celery_worker_up", hostname=worker.hostname) == 1
    # queue figures from the broker and the worker's active_queues / stats
    body = exporter.wait(lambda b: "celery_active_worker_count{" in b, timeout=15)
    assert total(body, "celery_active_worker_count", queue_name="celery") == 1
    assert samples(body)["celery_queue_length"]
    assert total(body, "wkctl_broker_connected") == 1
    assert total(body, "wkctl_events_total", type="worker-heartbeat") >= 1
    # local workers: the latest event is well under a second old when taken
    assert 0 <= total(body, "wkctl_event_ingest_lag_seconds") < 5
    status, text = scrape(exporter.port, "/health")
    assert status == 200 and "Connected to the broker" in text
    # the opt-in hello: the worker's revoked set holds the 4 ids revoked above
    body = exporter.wait(
        lambda b: total(b, "wkctl_worker_revoked_ids", hostname=worker.hostname) == 4, 10
    )
    assert total(body, "wkctl_worker_clock", hostname=worker.hostname) > 0


#: Every metric name the celery-mixin Grafana dashboards and alerts of
#: danihodovic/celery-exporter query (facts read from that project's
#: ``celery-mixin/dashboards/celery-tasks-overview.libsonnet``,
#: ``celery-tasks-by-task.libsonnet``, ``util.libsonnet`` (template
#: variables), ``alerts/alerts.libsonnet`` and the generated
#: ``dashboards_out/*.json`` / ``prometheus_alerts.yaml`` on its master
#: branch; its Queue Wait Time panel (queueWaitTimeP50/P95/P99) and the
#: tasks table's P95 Queue Wait query ``celery_task_queue_wait_time_bucket``,
#: which 0.11.2 predates; the dashboards themselves are not part of this
#: repository).
MIXIN_METRICS = (
    "celery_task_failed_total",
    "celery_task_received_total",
    "celery_task_succeeded_total",
    "celery_task_sent_total",
    "celery_task_revoked_total",
    "celery_task_retried_total",
    "celery_task_rejected_total",
    "celery_task_runtime_bucket",
    "celery_task_runtime_sum",
    "celery_task_runtime_count",
    "celery_task_queue_wait_time_bucket",
    "celery_worker_up",
    "celery_worker_tasks_active",
    "celery_queue_length",
)

_INTROSPECT = """
import json
from src.exporter import Exporter
print(json.dumps(sorted(
    (c._name, c._type, list(c._labelnames)) for c in Exporter().registry._collector_to_names
)))
"""


def reference_metrics() -> list[tuple[str, str, list[str]]]:
    """(name, type, label names) of every metric prometheus-exporter-celery
    0.11.2 registers, read from the installed package at test time."""
    python = tools_python()
    if python is None:
        pytest.skip("no tools venv with prometheus-exporter-celery (WKCTL_TEST_TOOLS_PYTHON)")
    out = subprocess.run(
        [python, "-c", _INTROSPECT], capture_output=True, text=True, timeout=60, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    return [tuple(row) for row in json.loads(out.stdout)]  # type: ignore[misc]


def test_drop_in_for_prometheus_exporter_celery(
    cluster: tuple[str, WorkerPool, CeleryWorker, Exporter],
) -> None:
    """Every metric of prometheus-exporter-celery 0.11.2 is served with the
    same type and label names, and every metric the celery-mixin dashboards
    query has samples (runs after the counter test, which made tasks)."""
    url, _pool, _worker, exporter = cluster
    body = exporter.wait(lambda b: "celery_active_worker_count{" in b, timeout=15)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    reference = reference_metrics()
    assert len(reference) >= 15
    for name, type_, labels in reference:
        assert name in families, f"{name} not served"
        family = families[name]
        assert family.type == type_, (name, family.type, type_)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            got = set(sample.labels) - ({"le"} if sample.name.endswith("_bucket") else set())
            assert got == set(labels), (sample.name, sorted(got), labels)
    served = {s.name for f in families.values() for s in f.samples}
    missing = [m for m in MIXIN_METRICS if m not in served]
    assert not missing, f"celery-mixin queries metrics without samples: {missing}"


def test_worker_up_follows_sigkill_and_restart(
    cluster: tuple[str, WorkerPool, CeleryWorker, Exporter],
) -> None:
    url, pool, worker, exporter = cluster
    exporter.wait(lambda b: total(b, "celery_worker_up", hostname=worker.hostname) == 1)
    # The heartbeat a worker sends when asked (the exporter asks at start)
    # says freq=5, so it expires after 10 s; its own heartbeats say freq=2
    # (4 s). Let one of those come first.
    time.sleep(2.5)
    killed_at = time.monotonic()
    worker.kill()
    exporter.wait(lambda b: total(b, "celery_worker_up", hostname=worker.hostname) == 0, 15)
    down = time.monotonic() - killed_at
    print(f"\ncelery_worker_up 0 after {down:.1f} s (kill -9)")
    # Celery's heartbeat expiry: 2 s interval x 2 (expire window), plus one poll
    assert down < 8.0
    body = exporter.wait(lambda b: total(b, "wkctl_workers_lost_total") >= 1, 5)
    assert total(body, "wkctl_workers_lost_total", hostname=worker.hostname) == 1
    again = pool.start(url, prefix="exp", extra_args=("-n", worker.hostname))[0]
    assert again.hostname != worker.hostname  # the pool's name; the worker runs as -n says
    body = exporter.wait(lambda b: total(b, "celery_worker_up", hostname=worker.hostname) == 1)
    assert total(body, "wkctl_workers_rejoined_total", hostname=worker.hostname) == 1
    # and it still counts right after the restart
    before = counts_now(exporter)
    check_counts(exporter, before, run_tasks(url, adds=3, fails=1, flaky=1, revoked=1))


@pytest.mark.slow
def test_thousand_tasks_counters_equal_the_truth(
    cluster: tuple[str, WorkerPool, CeleryWorker, Exporter],
) -> None:
    url, _pool, _worker, exporter = cluster
    n = int(os.environ.get("WKCTL_EXPORTER_TASKS", "1000"))
    fails, flaky, revoked = n // 10, n // 20, n // 20
    before = counts_now(exporter)
    waits = total(exporter.metrics(), "celery_task_queue_wait_time_count")
    expected = run_tasks(url, n - fails - flaky - revoked, fails, flaky, revoked)
    body = check_counts(exporter, before, expected)
    assert total(body, "celery_task_queue_wait_time_count") - waits == expected["started"]


def _publish(url: str, messages: list[tuple[bytes, str | None, dict[str, Any], str]]) -> int:
    """Raw messages on the event exchange, as any process with broker access
    can; the number the broker took (RabbitMQ closes the connection on some
    hostile headers: a new one carries on with the next message)."""
    settings = BrokerSettings(url=url)
    exchange = event_exchange(settings.names, settings.transport)
    sent = 0
    conn = settings.connection()
    try:
        producer = Producer(conn.channel(), exchange=exchange)
        for body, ctype, headers, routing_key in messages:
            try:
                producer.publish(
                    body,
                    routing_key=routing_key,
                    content_type=ctype or "",
                    content_encoding="utf-8" if ctype == "application/json" else "binary",
                    headers=headers,
                    serializer=None,
                    declare=[exchange],
                )
                sent += 1
            except (struct.error, TypeError, ValueError, OverflowError):
                pass  # headers the client library cannot even encode
            except (*conn.connection_errors, *conn.channel_errors):
                conn.release()
                conn = settings.connection()
                producer = Producer(conn.channel(), exchange=exchange)
    finally:
        conn.release()
    return sent


def test_scrapes_answer_and_counts_stay_right_under_elections_and_hostile_input(
    broker_url: str, worker_pool: WorkerPool, tmp_path: Path
) -> None:
    """Elections (held by wkctl nodes), the heartbeat that kills Celery
    workers, and mutated captured traffic, all while a scrape loop runs:
    every scrape answers 200 and the real worker's task counts are exact.

    The Celery worker runs ``--without-gossip``: the malformed heartbeat
    would kill a gossiping one (shared/README), and it would take part in
    the elections.
    """
    exporter = Exporter(broker_url, tmp_path, "--election-timeout", "5")
    statuses: list[int] = []
    stop = threading.Event()

    def scrape_loop() -> None:
        while not stop.is_set():
            statuses.append(scrape(exporter.port)[0])
            time.sleep(0.05)

    loop = threading.Thread(target=scrape_loop, daemon=True)
    loop.start()
    try:
        names = [unique_name("el") for _ in range(3)]
        with hosted_nodes(broker_url, names):
            exporter.wait(
                lambda b: all(total(b, "celery_worker_up", hostname=n) == 1 for n in names)
            )
            with Connection(broker_url) as conn:
                client = Client(conn, BrokerSettings(url=broker_url).names)
                for i in range(2):
                    client.election(f"exp-{i}-{uuid.uuid4().hex[:6]}", "wkctl-test")
                    time.sleep(0.5)
            body = exporter.wait(lambda b: total(b, "wkctl_elections_decided_total") >= 2, 15)
            assert total(body, "wkctl_elections_held_total", topic="wkctl-test") == 2
            assert total(body, "wkctl_elections_decided_total", topic="wkctl-test") == 2
            assert total(body, "wkctl_elections_timed_out_total") == 0
            winner = [lab["hostname"] for lab, v in samples(body)["wkctl_election_winner"] if v]
            assert winner and winner[0] in names
            assert total(body, "wkctl_election_decision_seconds_count") == 2
        worker = worker_pool.start(broker_url, prefix="hx", extra_args=("--without-gossip",))[0]
        try:
            exporter.wait(lambda b: total(b, "celery_worker_up", hostname=worker.hostname) == 1)
            before = {
                c: total(exporter.metrics(), f"celery_task_{c}_total", hostname=worker.hostname)
                for c in COUNTERS
            }
            malformed = {
                "type": "worker-heartbeat",
                "hostname": "evil@wkctl-test",
                "timestamp": "now",
                "clock": 1,
                "freq": 2.0,
                "active": 0,
                "processed": 0,
                "loadavg": [0, 0, 0],
                "sw_ident": "py-celery",
                "sw_ver": "5.7.0",
                "sw_sys": "Linux",
                "utcoffset": 0,
                "pid": 1,
            }
            hostile = [(json.dumps(malformed).encode(), "application/json", {}, "worker.heartbeat")]
            mutator = Mutator(int(os.environ.get("WKCTL_FUZZ_SEED", "7")))
            for message in mutator.messages(150, kinds=("event",)):
                if len(message.body) > 1024 * 1024:
                    continue  # huge bodies are the limits tests' business; here they only slow the broker
                hostile.append(
                    (message.body, message.content_type, message.headers, message.routing_key)
                )
            sent = _publish(broker_url, hostile[:75])
            expected = run_tasks(broker_url, adds=10, fails=3, flaky=2, revoked=2)
            sent += _publish(broker_url, hostile[75:])
            assert sent >= 100
            expected.pop("sent")  # task-sent carries the client's hostname, not the worker's

            def done(b: str) -> bool:
                return all(
                    total(b, f"celery_task_{c}_total", hostname=worker.hostname) - before[c]
                    >= expected[c]
                    for c in expected
                )

            body = exporter.wait(done, 60)
            time.sleep(1.0)
            body = exporter.metrics()
            got = {
                c: total(body, f"celery_task_{c}_total", hostname=worker.hostname) - before[c]
                for c in expected
            }
            assert got == {c: float(n) for c, n in expected.items()}
            assert worker.alive()
            assert total(body, "wkctl_events_rejected_total", kind="worker-heartbeat") >= 1
            assert total(body, "wkctl_events_rejected_total") >= 10
        finally:
            worker_pool.stop([worker])
    finally:
        stop.set()
        loop.join(10)
        exporter.stop()
    assert len(statuses) >= 20
    assert set(statuses) == {200}


@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
def test_broker_cut_is_survived_and_visible(broker_url: str, tmp_path: Path) -> None:
    """The exporter's connection goes through a TCP proxy that is cut: the
    exporter stays up, says ``wkctl_broker_connected 0`` and ``/health``
    500 while the broker is unreachable, and counts events again after.
    (The stream's reconnection itself is tested on both brokers with
    ``tail``; this checks what the exporter makes of it, on RabbitMQ.)"""
    host, port = target_of(broker_url)
    with TcpProxy(host, port) as proxy, hosted_nodes(broker_url, [unique_name("cut")]) as nodes:
        exporter = Exporter(proxied_url(broker_url, proxy), tmp_path, "--queue-interval", "0")
        try:
            name = nodes[0].name
            exporter.wait(lambda b: total(b, "celery_worker_up", hostname=name) == 1)
            proxy.cut()
            body = exporter.wait(lambda b: total(b, "wkctl_broker_connected") == 0, 15)
            status, text = scrape(exporter.port, "/health")
            assert status == 500 and "Failed to connect" in text
            assert "guest:guest@" not in text
            before = total(body, "wkctl_events_total")
            proxy.restore()
            exporter.wait(lambda b: total(b, "wkctl_broker_connected") == 1, 30)
            exporter.wait(lambda b: total(b, "wkctl_events_total") > before, 15)
            assert scrape(exporter.port, "/health")[0] == 200
            assert "reconnected" in exporter.log.read_text()
        finally:
            exporter.stop()


@pytest.mark.parametrize("how", ["app", "config"])
def test_exporter_takes_the_broker_from_an_app_or_the_config_file(
    how: str, broker_pool: Any, tmp_path: Path
) -> None:
    """``-A proj`` and the config file work as for every command; the
    transport options of the config are merged with --broker-transport-option."""
    url = broker_pool.isolated("redis")
    try:
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL")
        }
        if how == "app":
            env["PYTHONPATH"] = str(Path(__file__).parent / "support")
            env["WKCTL_TEST_BROKER_URL"] = url
            args = ["-A", "celeryapp"]
        else:
            config = tmp_path / "wkctl.yaml"
            config.write_text(
                f"broker_url: {url}\nbroker_transport_options:\n  max_connections: 7\n"
            )
            args = ["--config", str(config)]
        log = tmp_path / "exporter.log"
        proc = wkctl_popen(
            [
                *args,
                "-vv",
                "exporter",
                "--listen",
                f"127.0.0.1:{port}",
                "--broker-transport-option",
                "visibility_timeout=1234",
                "--duration",
                "20",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
        )
        try:
            wait_for_text(log, "exporter on", proc)
            status, text = scrape(port, "/health")
            assert status == 200 and url.rsplit("/", 1)[1] in text.rsplit("/", 1)[1]
            assert scrape(port)[0] == 200
            options = [ln for ln in log.read_text().splitlines() if "transport options" in ln]
            assert options and "visibility_timeout" in options[0]
            if how == "config":
                assert "max_connections" in options[0]
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        broker_pool.release(url)
