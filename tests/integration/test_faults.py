"""Broker faults: connections cut and restored, brokers restarted.

Two kinds of fault, on RabbitMQ and on Redis:

* a TCP proxy (``support.tcpproxy``) between the wkctl processes and the
  shared broker is cut (every connection reset, new ones refused) and
  restored, while two ``wkctl node``\\ s, a ``wkctl tail`` and a
  ``wkctl dump`` run through it;
* a private broker instance this test started on its own port
  (``support.brokerproc``) is killed and started again.

Each process must say it lost the connection, reconnect with backoff, say
so, and resume: nodes Mingle again and re-announce themselves
(``worker-online``) and answer ``ping``; ``tail`` prints events published
after the restore; ``dump`` finishes with the state.  Nobody exits or
hangs.  Recovery times (restore -> node answers ``ping``, restore -> tail
prints a new event) are printed (``-s``) and bounded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kombu import Connection, Producer

from support.brokerproc import RabbitProc, RedisProc, rabbitmq_available, redis_available
from support.cliproc import wkctl_popen
from support.nodes import NodeProcess, unique_name
from support.tcpproxy import TcpProxy, proxied_url, target_of
from wkctl.protocol.broker import event_exchange, transport_of
from wkctl.protocol.client import Client
from wkctl.protocol.wire import Names

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
#: restore -> every node answers ping again: backoff (0.1 s doubling, so the
#: next attempt is at most ~2x the outage away) + Mingle (1 s) + margin.
MAX_RECOVERY = 15.0


def ping_replies(url: str, timeout: float = 0.5) -> set[str]:
    try:
        with Connection(url, connect_timeout=2) as conn, Client(conn) as client:
            return set(client.ping(timeout=timeout).replies)
    except Exception:
        return set()


def wait_ping(url: str, names: set[str], timeout: float) -> float | None:
    """Seconds until every node in ``names`` answers ping, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if names <= ping_replies(url):
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def publish_marker(url: str, marker: str) -> None:
    """A custom event on the event exchange (tail prints every event)."""
    with Connection(url, connect_timeout=2) as conn:
        exchange = event_exchange(Names(), transport_of(url))
        producer = Producer(conn.channel(), exchange=exchange, auto_declare=True)
        producer.publish(
            {"type": "worker-marker", "hostname": "faults@test", "marker": marker, "clock": 1},
            routing_key="worker.marker",
            serializer="json",
            headers={"hostname": "faults@test"},
        )


@dataclass
class CliProcess:
    """A wkctl command running in the background, output in files."""

    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(cls, url: str, *args: str, tmp: Path) -> CliProcess:
        tag = uuid.uuid4().hex[:6]
        out, err = tmp / f"cli-{tag}.out", tmp / f"cli-{tag}.err"
        env = dict(os.environ)
        env.pop("WKCTL_BROKER_URL", None)
        proc = wkctl_popen(
            ["--broker", url, *args],
            stdout=open(out, "wb"),
            stderr=open(err, "wb"),
            env=env,
            cwd=str(REPO),
        )
        return cls(proc, out, err)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_out(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout():
                return True
            if self.process.poll() is not None:
                return text in self.stdout()
            time.sleep(0.05)
        return False

    def wait_err(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def tail_recovery(direct_url: str, tail: CliProcess, timeout: float) -> float | None:
    """Seconds until ``tail`` prints an event published after now, or None."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        marker = uuid.uuid4().hex
        try:
            publish_marker(direct_url, marker)
        except Exception:
            pass
        if tail.wait_out(marker, 0.3):
            return time.monotonic() - started
    return None


@pytest.fixture
def proxy(broker_url: str) -> Iterator[TcpProxy]:
    host, port = target_of(broker_url)
    with TcpProxy(host, port) as p:
        yield p


def _start_nodes(url: str, tmp: Path, n: int = 2) -> list[NodeProcess]:
    nodes = [
        NodeProcess.start(url, unique_name("fault"), "--heartbeat", "0.5", logdir=tmp, wait=False)
        for _ in range(n)
    ]
    for node in nodes:
        node.wait_ready()
    return nodes


def _count(text: str, needle: str) -> int:
    return text.count(needle)


def test_cut_and_restore_connections(
    broker_url: str, proxy: TcpProxy, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kind = transport_of(broker_url)
    url = proxied_url(broker_url, proxy)
    # a direct observer (not through the proxy) sees what the nodes announce
    observer = CliProcess.start(
        broker_url, "-v", "tail", "--json", "--type", "worker-online", tmp=tmp_path
    )
    assert observer.wait_err("listening on queue", 15), observer.stderr()
    nodes = _start_nodes(url, tmp_path)
    names = {n.name for n in nodes}
    tail = CliProcess.start(url, "-v", "tail", "--json", tmp=tmp_path)
    dump = None
    try:
        assert wait_ping(broker_url, names, 10) is not None, "nodes never answered"
        assert tail_recovery(broker_url, tail, 10) is not None, tail.stderr()
        dump = CliProcess.start(url, "dump", "--json", "--duration", "7", tmp=tmp_path)
        time.sleep(1.5)
        mingles_before = [_count(n.log_text(), "mingle: searching") for n in nodes]

        proxy.cut()
        down_started = time.monotonic()
        time.sleep(1.5)
        assert not (names & ping_replies(broker_url)), "nodes answered through a cut proxy"
        proxy.restore()
        restored = time.monotonic()

        node_recovery = wait_ping(broker_url, names, MAX_RECOVERY)
        tail_rec = tail_recovery(broker_url, tail, MAX_RECOVERY)
        print(
            f"\n[{kind}] proxy cut {restored - down_started:.1f} s: nodes answer ping "
            f"{node_recovery if node_recovery is None else round(node_recovery, 2)} s after restore, "
            f"tail prints new events {tail_rec if tail_rec is None else round(tail_rec, 2)} s after restore"
        )
        assert node_recovery is not None, [n.log_text()[-2000:] for n in nodes]
        assert tail_rec is not None, tail.stderr()[-2000:]

        for node in nodes:
            log = node.log_text()
            assert node.process.poll() is None, log[-2000:]
            assert "lost" in log and "reconnecting in" in log, log[-2000:]
            assert "reconnected" in log, log[-2000:]
            # said it with the password masked
            assert "guest:guest@" not in log
        for node, before in zip(nodes, mingles_before, strict=True):
            assert _count(node.log_text(), "mingle: searching") > before, (
                "no Mingle after reconnect"
            )
        # re-announced: a worker-online after the restore reaches a direct observer
        online = [
            json.loads(line)
            for line in observer.stdout().splitlines()
            if line.startswith("{") and '"worker-online"' in line
        ]
        per_node = {name: sum(1 for e in online if e.get("hostname") == name) for name in names}
        assert all(count >= 2 for count in per_node.values()), per_node
        err = tail.stderr()
        assert "lost" in err and "reconnected" in err, err[-2000:]
        assert tail.process.poll() is None

        assert dump is not None
        dump.process.wait(30)
        assert dump.process.returncode == 0, dump.stderr()[-2000:]
        doc = json.loads(dump.stdout())
        assert names <= set(doc["workers"]), (sorted(doc["workers"]), dump.stderr()[-1000:])
        assert "reconnected" in dump.stderr(), dump.stderr()[-1000:]
    finally:
        for proc in (tail, dump, observer):
            if proc is not None:
                proc.stop()
        codes = [n.stop() for n in nodes]
    assert codes == [0] * len(nodes), [n.log_text()[-1500:] for n in nodes]
    assert "guest:guest@" not in tail.stderr() + (dump.stderr() if dump else "")


def _restart_broker(broker: RedisProc | RabbitProc, tmp_path: Path, down_for: float) -> None:
    url = broker.url
    nodes = _start_nodes(url, tmp_path)
    names = {n.name for n in nodes}
    tail = CliProcess.start(url, "-v", "tail", "--json", tmp=tmp_path)
    kind = transport_of(url)
    try:
        assert wait_ping(url, names, 10) is not None
        assert tail_recovery(url, tail, 10) is not None, tail.stderr()
        stopped = time.monotonic()
        broker.stop()
        time.sleep(down_for)
        broker.start()
        restarted = time.monotonic()
        node_recovery = wait_ping(url, names, MAX_RECOVERY + 10)
        tail_rec = tail_recovery(url, tail, MAX_RECOVERY + 10)
        print(
            f"\n[{kind}] private broker down {restarted - stopped:.1f} s (incl. boot): nodes answer "
            f"ping {node_recovery if node_recovery is None else round(node_recovery, 2)} s after it "
            f"is up, tail {tail_rec if tail_rec is None else round(tail_rec, 2)} s"
        )
        assert node_recovery is not None, [n.log_text()[-2000:] for n in nodes]
        assert tail_rec is not None, tail.stderr()[-2000:]
        for node in nodes:
            log = node.log_text()
            assert "reconnected" in log and "reconnect to" in log or "reconnected" in log, log[
                -2000:
            ]
            assert node.process.poll() is None
        assert "reconnected" in tail.stderr()
    finally:
        tail.stop()
        codes = [n.stop() for n in nodes]
    assert codes == [0, 0]


@pytest.mark.skipif(bool(redis_available()), reason=redis_available() or "ok")
def test_private_redis_restart(tmp_path: Path) -> None:
    broker = RedisProc().start()
    try:
        _restart_broker(broker, tmp_path, down_for=1.5)
    finally:
        broker.close()


@pytest.mark.skipif(bool(rabbitmq_available()), reason=rabbitmq_available() or "ok")
def test_private_rabbitmq_restart(tmp_path: Path) -> None:
    broker = RabbitProc()
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.skip(f"a private RabbitMQ node cannot run here: {str(exc)[:300]}")
    try:
        _restart_broker(broker, tmp_path, down_for=0.5)
    finally:
        broker.close()
