"""``wkctl tail`` and ``wkctl dump`` against real Celery workers (5.7 + 5.4)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.cluster import REPO, Cluster, run_cli, run_wkctl, shared_cluster

pytestmark = [pytest.mark.broker, pytest.mark.celery]

LIFE_CYCLE = ["task-received", "task-started", "task-succeeded"]


@pytest.fixture(scope="module", params=["amqp", "redis"])
def cluster(request: pytest.FixtureRequest, broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster(request.param, broker_pool, worker_pool)


def wait_listening(proc: subprocess.Popen[str], timeout: float = 20.0) -> list[str]:
    """Read ``-v`` stderr lines until the command says it is subscribed."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "listening on queue" in line:
            return lines
    raise AssertionError(f"never subscribed: {lines}")


def start_wkctl(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wkctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )


def send_add(cluster: Cluster, delay: float = 0.0) -> str:
    time.sleep(delay)
    app = cluster.celery()
    try:
        return app.send_task("tasks.add", args=[2, 3], queue=cluster.queue).id
    finally:
        app.close()


class Reader:
    """Collects a subprocess's stdout lines as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, then the exit status and stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self.thread.join(10)
        return self.proc.returncode, err


def test_tail_sees_every_heartbeat_and_a_task_life_cycle(cluster: Cluster) -> None:
    everything = Reader(start_wkctl(*cluster.args, "tail", "--json"))
    filtered = Reader(
        start_wkctl(
            *cluster.args, "tail", "--type", "task-*", "--type", "worker-heart*", "--validate"
        )
    )
    # subscribed once a heartbeat came through (workers send one every 2 s)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (everything.lines and filtered.lines):
        time.sleep(0.05)
    task_id = send_add(cluster)

    def seen() -> tuple[set[str], list[str], bool]:
        events = [json.loads(line) for line in list(everything.lines)]
        heartbeats = {e["hostname"] for e in events if e["type"] == "worker-heartbeat"}
        mine = [e["type"] for e in events if e.get("uuid") == task_id]
        done = any(task_id in line and " task-succeeded " in line for line in filtered.lines)
        return heartbeats, mine, done

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        heartbeats, mine, done = seen()
        if set(cluster.hostnames) <= heartbeats and "task-succeeded" in mine and done:
            break
        time.sleep(0.1)
    code, err = everything.stop()
    assert code == 130, err
    heartbeats, mine, done = seen()
    assert set(cluster.hostnames) <= heartbeats
    assert [t for t in mine if t in LIFE_CYCLE] == LIFE_CYCLE, mine
    events = [json.loads(line) for line in everything.lines]
    succeeded = next(
        e for e in events if e.get("uuid") == task_id and e["type"] == "task-succeeded"
    )
    assert succeeded["result"] == "5" and succeeded["hostname"] in cluster.hostnames

    fcode, ferr = filtered.stop()
    assert fcode == 130, ferr
    lines = filtered.lines
    types = [line.split()[2] for line in lines]
    assert types and all(t.startswith("task-") or t == "worker-heartbeat" for t in types)
    assert done
    assert "\x1b[" not in "".join(lines)
    # (click prints an empty line on Ctrl-C, to end the "^C" line of a terminal)
    assert [line for line in ferr.splitlines() if line][-2:] == [
        f"wkctl: tail: {len(lines)} event(s), 0 invalid",
        "wkctl: interrupted",
    ]


def test_tail_count_stops_after_n_events(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli(
        [
            *cluster.args,
            "tail",
            "--json",
            "--count",
            "2",
            "--type",
            "worker-heartbeat",
            "--duration",
            "10",
        ],
        capsys,
    )
    assert code == 0, err
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["worker-heartbeat"] * 2


def test_tail_interrupted_exits_130_with_one_line(cluster: Cluster) -> None:
    proc = start_wkctl(*cluster.args, "-v", "tail")
    wait_listening(proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "wkctl: interrupted"


def test_tail_bad_pattern_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_wkctl("tail", "--type", "worker heartbeat", env={"XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("wkctl: error: --type: bad pattern 'worker heartbeat'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_dump_reports_every_worker_alive_and_the_task_success(cluster: Cluster, capsys) -> None:
    ids: list[str] = []

    def traffic() -> None:
        ids.append(send_add(cluster, delay=0.8))
        app = cluster.celery()
        try:  # an election too: Celery's own State crashes on its events, ours must not
            app.control.election(f"dump-{uuid.uuid4().hex[:6]}", "task", None)
        finally:
            app.close()

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        code, out, err = run_cli([*cluster.args, "dump", "--duration", "3", "--json"], capsys)
    finally:
        thread.join()
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"workers", "tasks", "event_count", "task_count"}
    for name in cluster.hostnames:
        worker = doc["workers"][name]
        assert worker["alive"] is True, worker
        assert worker["sw_ident"] == "py-celery" and isinstance(worker["clock"], int)
    (task_id,) = ids
    task = doc["tasks"][task_id]
    assert task["state"] == "SUCCESS" and task["name"] == "tasks.add"
    assert task["worker"] in cluster.hostnames and task["result"] == "5"
    assert task["received"] <= task["started"] <= task["succeeded"]
    assert doc["event_count"] >= 3 + 3 and doc["task_count"] >= 1


def test_dump_yaml_and_human_output(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli([*cluster.args, "dump", "--duration", "1", "--yaml"], capsys)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert set(cluster.hostnames) <= set(doc["workers"])
    code, out, err = run_cli([*cluster.args, "dump", "--duration", "1"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Workers (")
    assert lines[1].split()[:3] == ["WORKER", "STATUS", "CLOCK"]
    assert err == ""  # no progress indicator when stderr is not a terminal


# -- hostile and odd input, on a namespace without Celery workers ----------


@pytest.fixture
def empty_namespace(broker_url: str, tmp_path: Path) -> tuple[str, list[str], Any]:
    """A broker namespace with private exchange names and nobody on it."""
    from wkctl.protocol.broker import BrokerSettings
    from wkctl.protocol.wire import Names

    tag = uuid.uuid4().hex[:6]
    config = tmp_path / "wkctl.yaml"
    config.write_text(json.dumps({"broker_url": broker_url, "event_exchange": f"ev{tag}"}))
    settings = BrokerSettings(url=broker_url, names=Names(event_exchange=f"ev{tag}"))
    return broker_url, ["--config", str(config)], settings


def publish_raw(settings: Any, body: bytes, content_type: str, routing_key: str) -> None:
    from kombu import Producer

    from wkctl.protocol.broker import event_exchange

    exchange = event_exchange(settings.names, settings.transport)
    with settings.connection() as conn:
        Producer(conn.channel()).publish(
            body,
            exchange=exchange,
            declare=[exchange],
            routing_key=routing_key,
            content_type=content_type,
            content_encoding="utf-8" if content_type.endswith("json") else "binary",
        )


def test_tail_validate_flags_invalid_and_refuses_non_json(empty_namespace) -> None:
    _, args, settings = empty_namespace
    proc = start_wkctl(*args, "-v", "tail", "--json", "--validate", "--duration", "3")
    wait_listening(proc)
    good = {
        "type": "worker-heartbeat",
        "hostname": "good@x",
        "pid": 1,
        "clock": 3,
        "timestamp": time.time(),
        "utcoffset": 0,
        "freq": 2.0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.0, 0.0, 0.0],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
    }
    bad = dict(good, hostname="bad@x", timestamp="now")
    batch = [
        {
            "type": "task-started",
            "uuid": "u1",
            "hostname": "good@x",
            "pid": 1,
            "clock": 4,
            "timestamp": time.time(),
            "utcoffset": 0,
        }
    ]
    publish_raw(settings, json.dumps(good).encode(), "application/json", "worker.heartbeat")
    publish_raw(settings, json.dumps(bad).encode(), "application/json", "worker.heartbeat")
    publish_raw(settings, json.dumps(batch).encode(), "application/json", "task.multi")
    publish_raw(
        settings,
        b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00N.",
        "application/x-python-serialize",
        "worker.heartbeat",
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["hostname"] for e in events] == ["good@x", "bad@x", "good@x"]
    assert events[2]["type"] == "task-started"  # the batch, expanded
    assert "wkctl: invalid event #2 (worker-heartbeat from bad@x): /timestamp" in err
    assert "wkctl: refused message: content type refused" in err
    assert "wkctl: tail: 3 event(s), 1 invalid, 1 message(s) refused" in err
    assert "Traceback" not in err


def test_tail_reconnects_when_the_broker_connection_is_cut(empty_namespace, tmp_path: Path) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from support.reconnect import Proxy, publish_heartbeat

    url, _, settings = empty_namespace
    parts = urlsplit(url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    userinfo = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit(
        parts._replace(netloc=f"{userinfo[0]}@{host}" if len(userinfo) == 2 else host)
    )
    config = tmp_path / "proxied.yaml"
    config.write_text(
        json.dumps({"broker_url": proxied, "event_exchange": settings.names.event_exchange})
    )
    try:
        proc = start_wkctl("--config", str(config), "-v", "tail", "--json", "--duration", "6")
        wait_listening(proc)
        proxy.cut()
        time.sleep(2.5)
        for _ in range(5):
            publish_heartbeat(settings, "after-cut@x")
            time.sleep(0.3)
        out, err = proc.communicate(timeout=30)
    finally:
        proxy.close()
    assert proc.returncode == 0, err
    assert "lost" in err and "reconnected to broker" in err, err
    assert "guest:guest" not in err
    assert any(json.loads(line)["hostname"] == "after-cut@x" for line in out.splitlines())
