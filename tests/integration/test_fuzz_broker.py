"""Hostile traffic over a real broker against running wkctl processes.

A ``wkctl node`` (with ``tail`` and ``dump`` watching) receives mutated
real messages on the pidbox and event exchanges, including non-JSON
content types, multi-megabyte bodies, deep nesting and node names with
control characters, right-to-left overrides and lone surrogates.  Then:
the node process is alive and still answers ``hello`` and ``ping``, its
memory stayed bounded, it logged the rejections with their reasons but at
most a few lines per sender (rate limit), ``tail`` is still running and
``dump`` printed valid JSON.  ``WKCTL_FUZZ_BROKER_CASES`` sets the number
of mutated messages (default 400).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from kombu import Connection, Producer

from support.cliproc import interrupt, start_dump, start_tail
from support.hostile import broker_safe, heartbeat
from support.mutate import HOSTILE_NAMES, Mutator
from support.nodes import NodeProcess, unique_name
from wkctl.protocol.broker import event_exchange, pidbox_exchange, transport_of
from wkctl.protocol.client import Client
from wkctl.protocol.wire import Names

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

CASES = int(os.environ.get("WKCTL_FUZZ_BROKER_CASES", "400"))
NAMES = Names()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_node_tail_dump_survive_hostile_traffic(broker_url: str, tmp_path: Path) -> None:
    transport = transport_of(broker_url)
    node = NodeProcess.start(broker_url, unique_name("fuzz"), "--heartbeat", "0.5", logdir=tmp_path)
    tail = dump = None
    try:
        tail = start_tail(["--broker", broker_url, "-v", "tail", "--json"], tmp_path)
        dump = start_dump(broker_url, tmp_path, 6)
        rss_before = rss_mib(node.process.pid)
        mutator = Mutator(int(os.environ.get("WKCTL_FUZZ_SEED", "3")))
        huge = 0
        senders: set[str] = set()
        started = time.monotonic()
        with Connection(broker_url) as conn:
            producer = Producer(conn.channel())
            pidbox = pidbox_exchange(NAMES)(producer.channel)
            events = event_exchange(NAMES, transport)(producer.channel)
            pidbox.declare()
            events.declare()
            for msg in mutator.messages(CASES):
                if len(msg.body) > 1_000_000:
                    huge += 1
                    if huge > 6:  # a few multi-megabyte bodies are enough
                        continue
                headers = broker_safe(msg.headers)
                target = pidbox if msg.kind.startswith("pidbox") else events
                rk = "" if target is pidbox else (msg.routing_key or "worker.heartbeat")
                host = headers.get("hostname")
                senders.add(str(host))
                producer.publish(
                    msg.body,
                    exchange=target,
                    routing_key=rk,
                    content_type=msg.content_type or "",
                    content_encoding=msg.content_encoding or "binary",
                    headers=headers,
                    serializer=None,
                )
            for name in HOSTILE_NAMES:
                # a lone surrogate can travel only escaped (it is not UTF-8)
                ascii_only = "\ud800" in name
                body = json.dumps(heartbeat(name), ensure_ascii=ascii_only).encode()
                producer.publish(
                    body,
                    exchange=events,
                    routing_key="worker.heartbeat",
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers={"hostname": "names@fuzz"},
                    serializer=None,
                )
        published_in = time.monotonic() - started

        # still serving, promptly
        deadline = time.monotonic() + 20
        while True:
            with Connection(broker_url) as conn, Client(conn) as client:
                pong = client.ping(timeout=1.0, expect=1).replies
                hello = client.hello(timeout=1.0).replies
            if node.name in pong and node.name in hello:
                break
            assert time.monotonic() < deadline and node.process.poll() is None, node.log_text()[
                -3000:
            ]
        assert pong[node.name] == {"ok": "pong"}
        rss_after = rss_mib(node.process.pid)
        log = node.log_text()
        rejected = [line for line in log.splitlines() if "rejected" in line]
        print(
            f"\n[{transport}] {CASES} mutated messages + {len(HOSTILE_NAMES)} hostile names published "
            f"in {published_in:.1f} s; node RSS {rss_before:.0f} -> {rss_after:.0f} MiB; "
            f"{len(rejected)} rejection lines logged"
        )
        assert rejected, log[-2000:]
        assert "Traceback" not in log and "internal error" not in log, log[-3000:]
        # rate-limited: a handful of lines per sender at most, not one per message
        assert len(rejected) <= 3 * (len(senders) + 10), (len(rejected), len(senders))
        assert rss_after < rss_before + 200, (rss_before, rss_after)
        assert dump is not None
        dump.wait(30)
        assert dump.returncode == 0, (tmp_path / "dump.err").read_text()[-2000:]
        doc = json.loads((tmp_path / "dump.out").read_text())
        assert node.name in doc["workers"]
        assert tail.poll() is None, (tmp_path / "tail.err").read_text()[-2000:]
    finally:
        if tail is not None:
            interrupt(tail)
        if dump is not None and dump.poll() is None:
            dump.kill()
        code = node.stop()
    assert code == 0, node.log_text()[-2000:]
    # The binding counts every exception out of the core (wkctl's own bugs,
    # whatever their message) and reports the count when it stops.
    counts = re.findall(r"binding stopped: (\d+) internal error", node.log_text())
    assert counts == ["0"], node.log_text()[-3000:]
    err = (tmp_path / "tail.err").read_text()
    assert "Traceback" not in err, err[-3000:]
    # tail printed valid NDJSON, whatever it was fed
    for line in (tmp_path / "tail.out").read_text().split("\n"):  # not splitlines: U+2028
        if line:
            json.loads(line)


def test_lone_surrogate_in_node_name(broker_url: str, tmp_path: Path) -> None:
    transport = transport_of(broker_url)
    tail = start_tail(["--broker", broker_url, "-v", "tail", "--json"], tmp_path)
    try:
        dump = start_dump(broker_url, tmp_path, 2)
        time.sleep(1.0)
        with Connection(broker_url) as conn:
            producer = Producer(conn.channel())
            events = event_exchange(NAMES, transport)(producer.channel)
            events.declare()
            producer.publish(
                json.dumps(heartbeat("\ud800@host")).encode(),  # ASCII JSON with an escape
                exchange=events,
                routing_key="worker.heartbeat",
                content_type="application/json",
                content_encoding="utf-8",
                headers={"hostname": "x@fuzz"},
                serializer=None,
            )
        dump.wait(30)
        time.sleep(0.5)
        dump_err = (tmp_path / "dump.err").read_text()
        assert "Traceback" not in dump_err, dump_err[-300:]
        assert dump.returncode == 0
        json.loads((tmp_path / "dump.out").read_text())
        assert tail.poll() is None, (tmp_path / "tail.err").read_text()[-300:]
    finally:
        interrupt(tail)
    assert "Traceback" not in (tmp_path / "tail.err").read_text()


def test_tail_validate_is_not_stalled_by_one_huge_batch(broker_url: str, tmp_path: Path) -> None:
    transport = transport_of(broker_url)
    tail = start_tail(["--broker", broker_url, "-v", "tail", "--json", "--validate"], tmp_path)
    try:
        with Connection(broker_url) as conn:
            producer = Producer(conn.channel())
            events = event_exchange(NAMES, transport)(producer.channel)
            events.declare()
            for body, rk in (
                (b"[" + b"1," * 200_000 + b"1]", "task.multi"),  # 600 kB, 200,001 invalid items
                (json.dumps(heartbeat("after@batch")).encode(), "worker.heartbeat"),
            ):
                producer.publish(
                    body,
                    exchange=events,
                    routing_key=rk,
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers={"hostname": "batch@fuzz"},
                    serializer=None,
                )
        deadline = time.monotonic() + 10
        while "after@batch" not in (tmp_path / "tail.out").read_text():
            assert time.monotonic() < deadline, "tail still busy with one message after 10 s"
            assert tail.poll() is None, (tmp_path / "tail.err").read_text()[-1000:]
            time.sleep(0.1)
    finally:
        interrupt(tail)
