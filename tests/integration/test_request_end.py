"""When a request without ``--expect`` ends ([PIDBOX-19], the fix of DEFECT-9).

The sans-IO rule first (:class:`ReplyCollector` fed explicit wall-clock
times), then the kombu client against a from-scratch responder on real
brokers (reply expiry), then ``wkctl hello``/``clock``/``revoke`` against
the session's three real Celery workers (5.7, 5.7, 5.4) on RabbitMQ and
Redis, with the known-nodes cache in a folder of the test's own.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Producer, Queue

from support.cluster import Cluster, run_cli, shared_cluster
from wkctl.protocol.broker import BrokerSettings, pidbox_exchange
from wkctl.protocol.client import KNOWN_GRACE, Client, ReplyCollector
from wkctl.protocol.wire import Names

T0 = 1_700_000_000.0  # a wall-clock publish time


# -- the rule, sans-IO ----------------------------------------------------------


def test_without_expect_collection_ends_once_replies_settled() -> None:
    c = ReplyCollector("clock", "T", published_at=T0, timeout=5.0, settle=0.1)
    assert c.end_at() == T0 + 5.0  # nothing yet: the timeout bounds the wait
    c.feed({"a@x": {"clock": 1}}, {"ticket": "T"}, T0 + 0.004)
    c.feed({"b@x": {"clock": 1}}, {"ticket": "T"}, T0 + 0.010)
    assert c.end_at() == pytest.approx(T0 + 0.110)
    assert not c.over(T0 + 0.05)
    assert c.over(T0 + 0.111) and c.result.ended == "settled"


def test_settle_window_grows_with_the_first_round_trip() -> None:
    c = ReplyCollector("clock", "T", published_at=T0, timeout=5.0, settle=0.1)
    c.feed({"far@x": 1}, {"ticket": "T"}, T0 + 0.8)  # a slow, distant cluster
    assert c.end_at() == pytest.approx(T0 + 1.6)


def test_known_nodes_answered_ends_after_the_grace_only() -> None:
    c = ReplyCollector("hello", "T", published_at=T0, timeout=5.0, settle=0.2, known={"a@x", "b@x"})
    c.feed({"a@x": {}}, {"ticket": "T"}, T0 + 0.003)
    assert c.end_at() == pytest.approx(T0 + 0.203)  # b@x still missing
    c.feed({"b@x": {}}, {"ticket": "T"}, T0 + 0.005)
    assert c.end_at() == pytest.approx(T0 + 0.005 + KNOWN_GRACE)
    assert c.over(T0 + 0.005 + KNOWN_GRACE) and c.result.ended == "known"


def test_expect_and_no_settle_keep_their_meaning() -> None:
    c = ReplyCollector("clock", "T", expect=2, published_at=T0, timeout=5.0, settle=0.1)
    c.feed({"a@x": 1}, {"ticket": "T"}, T0 + 0.01)
    assert c.end_at() == T0 + 5.0 and not c.over(T0 + 1.0)  # waits for the 2nd
    c.feed({"b@x": 1}, {"ticket": "T"}, T0 + 0.02)
    assert c.over(T0 + 0.02) and c.result.ended == "expect"
    celery_like = ReplyCollector("clock", "T", published_at=T0, timeout=1.0, settle=None)
    celery_like.feed({"a@x": 1}, {"ticket": "T"}, T0 + 0.01)
    assert not celery_like.over(T0 + 0.99)
    assert celery_like.over(T0 + 1.0) and celery_like.result.ended == "timeout"


# -- reply expiry through the real client (issue 17) ------------------------------


class ExpiringResponder:
    """A node written from scratch that answers every request twice: once
    with an ``expires`` header 60 s in the past, once without."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names = Names()
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with Connection(self.url) as conn:
            channel = conn.channel()
            producer = Producer(channel, auto_declare=False)
            queue = Queue(
                f"expiring-{uuid.uuid4().hex[:6]}.celery.pidbox",
                exchange=pidbox_exchange(self.names),
                routing_key="",
                durable=False,
                auto_delete=True,
            )

            def on_message(message: Any) -> None:
                body = json.loads(message.body)
                for name, extra in (("stale@x", {"expires": time.time() - 60}), ("fresh@x", {})):
                    producer.publish(
                        {name: {"ok": "pong"}},
                        exchange=body["reply_to"]["exchange"],
                        routing_key=body["reply_to"]["routing_key"],
                        headers={"ticket": body["ticket"], "clock": 1, **extra},
                        serializer="json",
                    )

            with Consumer(channel, [queue], no_ack=True, on_message=on_message, accept=["json"]):
                self.ready.set()
                while not self.stop.is_set():
                    try:
                        conn.drain_events(timeout=0.05)
                    except TimeoutError:
                        pass

    def __enter__(self) -> ExpiringResponder:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.mark.broker
def test_client_call_drops_a_reply_whose_expires_header_passed(broker_url: str) -> None:
    with ExpiringResponder(broker_url):
        settings = BrokerSettings(broker_url)
        with settings.connection() as conn, Client(conn) as client:
            result = client.call("ping", {}, timeout=3.0, expect=1, settle=None)
    assert list(result.replies) == ["fresh@x"], result.replies
    assert [reason for reason, _ in result.rejected] == ["expired"]


# -- the CLI against real Celery workers --------------------------------------------


@pytest.fixture(scope="module", params=["amqp", "redis"])
def cluster(request: pytest.FixtureRequest, broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster(request.param, broker_pool, worker_pool)


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path


def _stats(err: str) -> dict[str, Any]:
    return json.loads(next(line for line in err.splitlines() if line.startswith("{")))


@pytest.mark.broker
@pytest.mark.celery
def test_hello_without_expect_ends_when_the_cluster_answered(
    cluster: Cluster, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*cluster.args, "hello", "--json", "--timeout", "8", "--stats"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert sorted(json.loads(out)) == cluster.hostnames
    first = _stats(err)
    assert first["ended"] == "settled", first  # nothing known yet: the settle window ended it
    assert first["waited_ms"] < 4000, first  # far from the 8 s timeout
    cache = json.loads((state_home / "wkctl" / "known-nodes.json").read_text())
    assert sorted(next(iter(cache.values()))["nodes"]) == cluster.hostnames
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert sorted(json.loads(out)) == cluster.hostnames
    assert _stats(err)["ended"] == "known"  # every known node answered: no settle wait


@pytest.mark.broker
@pytest.mark.celery
def test_a_known_node_that_is_gone_costs_one_settle_window_then_drops_out(
    cluster: Cluster, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*cluster.args, "clock", "--json", "--timeout", "8", "--stats"]
    assert run_cli(argv, capsys)[0] == 0
    path = state_home / "wkctl" / "known-nodes.json"
    cache = json.loads(path.read_text())
    key = next(iter(cache))
    cache[key]["nodes"]["gone@nowhere"] = time.time()
    path.write_text(json.dumps(cache))
    code, out, err = run_cli(argv, capsys)
    assert code == 0 and sorted(json.loads(out)) == cluster.hostnames
    assert _stats(err)["ended"] == "settled"
    assert "gone@nowhere" not in json.loads(path.read_text())[key]["nodes"]


@pytest.mark.broker
@pytest.mark.celery
def test_dump_lists_every_live_node_however_short_the_duration(
    cluster: Cluster, state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli([*cluster.args, "dump", "--duration", "0.1", "--json"], capsys)
    assert code == 0, err
    workers = json.loads(out)["workers"]
    assert sorted(workers) == cluster.hostnames  # 0.1 s: far shorter than a heartbeat
    assert all(w["answered_ping"] and w["alive"] for w in workers.values()), workers


def test_dump_shows_its_countdown_only_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "c"))
    env.pop("WKCTL_BROKER_URL", None)
    command = [sys.executable, "-m", "wkctl", "dump", "--duration", "0.6"]
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(command, stderr=slave, stdout=subprocess.PIPE, env=env, timeout=60)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"listening [" in seen and b"s left" in seen
    piped = subprocess.run(command, capture_output=True, env=env, timeout=60)
    assert b"listening [" not in piped.stderr
    assert b"on the embedded broker at" in piped.stderr  # nothing answered, nothing configured
