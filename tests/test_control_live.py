"""The control vocabulary against the real Celery ecosystem (spec section 16).

One module-scoped stack per broker: a Celery 5.7 and a Celery 5.4 worker,
three ``wkctl node`` processes, Flower 2.2.0, prometheus-exporter-celery
0.11.2 and celery-prometheus-exporter 1.7.0 (from the tools venv), shared
by every test of the module.  The tests that shut nodes down run last, on
nodes of their own.

The 5-minute Flower soak is opt-in:
``.venv/bin/python -m pytest tests/test_control_live.py --run-slow -m slow``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import isolated_url, require_celery, unavailable
from kombu import Connection

from support.nodes import NodeProcess
from support.tools import (
    ToolProcess,
    start_celery_exporter,
    start_celery_prometheus_exporter,
    start_flower,
    tools_python,
)
from support.workers import CeleryWorker, WorkerPool
from wkctl.protocol.client import Client
from wkctl.protocol.validation import validate
from wkctl.protocol.vocab import CELERY_METHODS, reply_kind

HERE = Path(__file__).resolve().parent

#: What ``celery inspect`` / ``celery control`` are run with against a node
#: (every method of Celery's CLI but hello, election and shutdown: hello is
#: Mingle's, ``celery control election`` always fails in Celery's own CLI,
#: shutdown has a test of its own).
CELERY_CLI = [
    ["inspect", "stats"],
    ["inspect", "conf"],
    ["inspect", "report"],
    ["inspect", "active"],
    ["inspect", "reserved"],
    ["inspect", "scheduled"],
    ["inspect", "registered"],
    ["inspect", "active_queues"],
    ["inspect", "query_task", "no-such-task"],
    ["inspect", "revoked"],
    ["inspect", "clock"],
    ["inspect", "ping"],
    ["inspect", "memsample"],
    ["inspect", "memdump"],
    ["inspect", "objgraph"],
    ["control", "enable_events"],
    ["control", "disable_events"],
    ["control", "heartbeat"],
    ["control", "revoke", "live-revoke-1"],
    ["control", "terminate", "TERM", "live-revoke-2"],
    ["control", "revoke_by_stamped_headers", "stamp=value"],
    ["control", "rate_limit", "tasks.add", "10/s"],
    ["control", "time_limit", "tasks.add", "10", "20"],
    ["control", "pool_grow", "1"],
    ["control", "pool_shrink", "1"],
    ["control", "pool_restart"],
    ["control", "autoscale", "4", "1"],
    ["control", "add_consumer", "live-queue"],
    ["control", "cancel_consumer", "live-queue"],
]
#: Methods read from the Celery workers themselves (harmless to them).
CELERY_READS: dict[str, dict[str, Any]] = {
    "stats": {},
    "conf": {},
    "dump_conf": {},
    "report": {},
    "active": {"safe": True},
    "dump_active": {},
    "reserved": {},
    "scheduled": {},
    "registered": {},
    "dump_tasks": {},
    "active_queues": {},
    "query_task": {"ids": ["no-such-task"]},
    "revoked": {},
    "clock": {},
    "ping": {},
    "memsample": {},
    "memdump": {},
    "objgraph": {},
    "enable_events": {},
    "heartbeat": {},
    "rate_limit": {"task_name": "no.such.task", "rate_limit": "1/s"},
    "time_limit": {"task_name": "no.such.task", "soft": 1.0, "hard": 2.0},
    "autoscale": {},
}


@dataclass
class Stack:
    url: str
    workers: list[CeleryWorker]
    #: polled for the whole module; never shut down
    node: NodeProcess
    #: shut down by Flower's button, and by ``celery control shutdown``
    node_flower_stop: NodeProcess
    node_celery_stop: NodeProcess
    flower: ToolProcess
    exporter: ToolProcess
    legacy_exporter: ToolProcess

    @property
    def nodes(self) -> list[NodeProcess]:
        return [self.node, self.node_flower_stop, self.node_celery_stop]


def _name(prefix: str) -> str:
    # prometheus-exporter-celery labels a worker by the part after '@'
    return f"{prefix}@i15-{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def stack(
    module_broker_url: str, worker_pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    if tools_python() is None:
        unavailable("no tools venv with Flower and the exporters (.venv-tools)")
    require_celery("5.4")
    url = module_broker_url
    if url.startswith("redis"):
        python = tools_python()
        assert python is not None
        probe = subprocess.run(
            [python, "-c", "import kombu.transport.redis"], capture_output=True, text=True
        )
        if probe.returncode:
            unavailable(
                "the tools venv cannot use Redis (README's command installs redis-py 6.4 and "
                "packaging into it): " + (probe.stderr.strip().splitlines() or ["?"])[-1]
            )
    logdir = tmp_path_factory.mktemp("control-live")
    workers = worker_pool.start(url, 1, "5.7", wait=False) + worker_pool.start(
        url, 1, "5.4", wait=False
    )
    started: list[Any] = []
    try:
        # Everything starts at once; the monitors then see the nodes come up.
        flower = start_flower(url, logdir, wait=False)
        exporter = start_celery_exporter(url, logdir, wait=False)
        started += [flower, exporter]
        nodes = [
            NodeProcess.start(url, _name(p), "--heartbeat", "1", logdir=logdir, wait=False)
            for p in ("wk1", "wk2", "wk3")
        ]
        started += nodes
        for worker in workers:
            worker.wait_ready()
        for node in nodes:
            node.wait_ready()
        # celery-prometheus-exporter reads `registered` once, at start: after
        # every worker and node is up.
        legacy = start_celery_prometheus_exporter(url, logdir, wait=False)
        started.append(legacy)
        for tool in (flower, exporter, legacy):
            tool.wait_http(tool.ready_path)
        yield Stack(url, workers, nodes[0], nodes[1], nodes[2], flower, exporter, legacy)
    finally:
        for item in reversed(started):
            item.stop() if isinstance(item, ToolProcess) else item.stop()
        worker_pool.stop(workers)


def _call(url: str, method: str, arguments: dict[str, Any], destination: list[str]) -> Any:
    with Connection(url) as conn, Client(conn) as client:
        return client.call(method, arguments, timeout=3.0, destination=destination)


def _celery_cli(stack: Stack, node: str, commands: list[list[str]]) -> list[dict[str, Any]]:
    python = tools_python()
    assert python is not None
    out = subprocess.run(
        [python, str(HERE / "support" / "celery_cli.py"), stack.url, node, "3"],
        input=json.dumps(commands),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _reply_issues(method: str, node: str, value: Any) -> list[str]:
    kind = reply_kind(method)
    assert kind is not None, method
    return [str(i) for i in validate({node: value}, kind)]


def _host(node: str) -> str:
    return node.split("@", 1)[1]


# -- Celery's replies are what the schemas say --------------------------------------


def test_real_celery_replies_validate(stack: Stack) -> None:
    """Replies captured now from Celery 5.7 and 5.4 workers validate against
    the reply schemas of their methods (every method harmless to them)."""
    names = [w.hostname for w in stack.workers]
    seen: dict[str, set[str]] = {}
    for method, arguments in CELERY_READS.items():
        result = _call(stack.url, method, arguments, names)
        assert sorted(result.replies) == sorted(names), (method, result.replies)
        for node, value in result.replies.items():
            assert _reply_issues(method, node, value) == [], (method, node, value)
            seen.setdefault(method, set()).add(node)
    assert set(seen) == set(CELERY_READS)
    stats = _call(stack.url, "stats", {}, names).replies
    for node, value in stats.items():
        assert value["pool"]["processes"], node  # a real pool, checked by the same schema


def test_every_method_of_the_node_answers_valid(stack: Stack) -> None:
    node = stack.node.name
    needs = {"revoke": {"task_id": "live-1"}, "terminate": {"task_id": "live-2", "signal": "TERM"}}
    for method in sorted(CELERY_METHODS - {"shutdown", "election", "hello"}):
        result = _call(stack.url, method, needs.get(method, {}), [node])
        assert node in result.replies, method
        value = result.replies[node]
        assert _reply_issues(method, node, value) == [], (method, value)
        if isinstance(value, dict) and "error" in value:
            assert "unknown" not in value["error"] or value["error"] == "unknown task", value


# -- celery inspect / celery control -------------------------------------------------


def test_celery_inspect_and_control_every_method_against_a_node(stack: Stack) -> None:
    node = stack.node.name
    results = _celery_cli(stack, node, CELERY_CLI)
    assert [r["args"] for r in results] == CELERY_CLI
    for r in results:
        text = r["stdout"] + r["stderr"]
        assert "unknown command" not in text.lower(), r
        assert r["code"] == 0, r
        body = json.loads(r["stdout"])
        # inspect prints {node: value}; control a list of {node: value}
        replies = body if isinstance(body, dict) else {k: v for b in body for k, v in b.items()}
        assert list(replies) == [node], r
        method = r["args"][1]
        assert _reply_issues(method, node, replies[node]) == [], r
    assert "WARNING" not in stack.node.log_text()


# -- Flower ----------------------------------------------------------------------------


def test_flower_worker_pages_and_api(stack: Stack) -> None:
    status, body = stack.flower.get("/api/workers?refresh=1")
    assert status == 200, body
    workers = json.loads(body)
    for node in stack.nodes:
        assert node.name in workers, sorted(workers)
        info = workers[node.name]
        for method in ("stats", "active_queues", "registered", "conf"):
            value = info.get(method)
            assert value is not None, (node.name, method)
            assert not (isinstance(value, dict) and "error" in value), (node.name, method, value)
        status, page = stack.flower.get(f"/worker/{node.name}")
        assert status == 200, page[-2000:]
        assert node.name in page
    for worker in stack.workers:  # the real ones, on the same page
        status, _ = stack.flower.get(f"/worker/{worker.hostname}")
        assert status == 200
    assert "Traceback" not in stack.flower.log_text()


def _poll_flower(stack: Stack, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        status, body = stack.flower.get("/api/workers?refresh=1")
        assert status == 200, body
        status, _ = stack.flower.get(f"/worker/{stack.node.name}")
        assert status == 200
        polls += 1
        time.sleep(0.5)
    return polls


def test_no_warning_while_flower_polls(stack: Stack) -> None:
    """Flower sends enable_events every 5 s and inspects on each refresh:
    over 6 s the node logs no WARNING (the 5-minute run is opt-in)."""
    assert _poll_flower(stack, 6.0) >= 3
    for node in stack.nodes:
        assert "WARNING" not in node.log_text(), node.log_text()[-2000:]
    assert "Traceback" not in stack.flower.log_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_no_warning_over_five_minutes_of_flower_polling(stack: Stack) -> None:
    polls = _poll_flower(stack, 300.0)
    print(f"{polls} Flower refreshes over 300 s; node logs: no WARNING")
    assert polls >= 100
    for node in stack.nodes:
        assert "WARNING" not in node.log_text(), node.log_text()[-2000:]
    assert "Traceback" not in stack.flower.log_text()


# -- the exporters -----------------------------------------------------------------------


def _metric(text: str, name: str, hostname: str) -> float | None:
    match = re.search(
        rf'^{name}\{{[^}}]*hostname="{re.escape(hostname)}"[^}}]*\}} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else None


def test_prometheus_exporter_celery_scrapes(stack: Stack) -> None:
    deadline = time.monotonic() + 15.0
    text = ""
    while time.monotonic() < deadline:
        status, text = stack.exporter.get("/metrics")
        assert status == 200, text[-2000:]
        if all(_metric(text, "celery_worker_up", _host(n.name)) == 1.0 for n in stack.nodes):
            break
        time.sleep(0.5)
    for node in stack.nodes:
        assert _metric(text, "celery_worker_up", _host(node.name)) == 1.0, node.name
    # each scrape asks stats and active_queues of every node (about 2 s:
    # Celery's client waits its whole timeout); one more must succeed too
    status, text = stack.exporter.get("/metrics")
    assert status == 200, text[-2000:]
    assert "Traceback" not in stack.exporter.log_text()


def test_celery_prometheus_exporter_has_no_error_task(stack: Stack) -> None:
    status, text = stack.legacy_exporter.get("/metrics")
    assert status == 200
    assert "celery_tasks_by_name" in text
    assert 'name="error"' not in text
    assert 'name="tasks.add"' in text  # the real workers' registered tasks were read


# -- shutdown (last: these stop their nodes) ------------------------------------------


def test_flower_shutdown_stops_a_node_cleanly(stack: Stack) -> None:
    node = stack.node_flower_stop
    status, body = stack.flower.post(f"/api/worker/shutdown/{node.name}")
    assert status == 200, body
    node.process.wait(15)
    assert node.process.returncode == 0, node.log_text()[-2000:]
    assert "shutdown requested" in node.log_text()
    # worker-offline reached the exporter: it marks the worker down
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        _, text = stack.exporter.get("/metrics")
        if _metric(text, "celery_worker_up", _host(node.name)) == 0.0:
            break
        time.sleep(0.3)
    assert _metric(text, "celery_worker_up", _host(node.name)) == 0.0
    # the others keep answering
    assert stack.node.name in _call(stack.url, "ping", {}, [stack.node.name]).replies


def test_celery_control_shutdown_stops_a_node_cleanly(stack: Stack) -> None:
    node = stack.node_celery_stop
    [result] = _celery_cli(stack, node.name, [["control", "shutdown"]])
    assert "unknown command" not in result["stdout"].lower(), result
    node.process.wait(15)
    assert node.process.returncode == 0, node.log_text()[-2000:]
    assert "stopped" in node.log_text()
    assert all(w.alive() for w in stack.workers)


@pytest.fixture
def own_amqp_url(broker_pool: Any) -> Iterator[str]:
    url = isolated_url(broker_pool, "amqp")
    yield url
    broker_pool.release(url)


def test_celery_stats_sends_transport_option_secrets(
    own_amqp_url: str, celery_workers: Any
) -> None:
    """DEFECT-18: Celery's stats carries broker_transport_options verbatim;
    the kit reports it as a known deviation (a wkctl node masks them:
    test_control_core)."""
    from click.testing import CliRunner

    from wkctl.cli.main import cli

    secret = f"S3cret-{uuid.uuid4().hex[:8]}"
    options = json.dumps({"sentinel_kwargs": {"password": secret}})
    amqp_url = own_amqp_url
    [worker] = celery_workers(amqp_url, env={"WKCTL_TEST_TRANSPORT_OPTIONS": options})
    stats = _call(amqp_url, "stats", {}, [worker.hostname]).replies[worker.hostname]
    assert stats["broker"]["transport_options"]["sentinel_kwargs"]["password"] == secret
    result = CliRunner().invoke(
        cli,
        ["-b", amqp_url, "conform", "--node", worker.hostname, "--only", "control.no-secret"],
    )
    assert "known Celery defect DEFECT-18" in result.output, result.output
    assert result.exit_code == 0, result.output
