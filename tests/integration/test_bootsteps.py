"""``Mingle`` and ``Gossip``: Celery's bootstep surface over wkctl nodes.

Driven over real brokers (RabbitMQ and Redis) in a cluster with real Celery
5.7 workers, each method is checked against its documented behaviour,
including the places where wkctl deliberately differs from Celery (skipped
error replies, bounded clocks, acks counted per node, the lone node).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer

from support.celeryapp import client_app
from support.requires import require_celery
from support.workers import CeleryWorker, WorkerPool
from wkctl.protocol.binding import Binding
from wkctl.protocol.bootsteps import Events, Gossip, Mingle, driver_type
from wkctl.protocol.broker import BrokerSettings, embedded_settings, event_exchange
from wkctl.protocol.client import Client, EventStream
from wkctl.protocol.gossip import WorkerInfo, heartbeat_fields
from wkctl.protocol.host import local_event as event
from wkctl.protocol.wire import Names, event_routing_key


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@bootsteps-test"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


@dataclass
class Recorder:
    """Membership handlers that remember whom they were called with."""

    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def attach(self, gossip: Gossip) -> None:
        gossip.on.node_join.add(lambda w: self.joined.append(w.hostname))
        gossip.on.node_leave.add(lambda w: self.left.append(w.hostname))
        gossip.on.node_lost.add(lambda w: self.lost.append(w.hostname))


def isolated(url: str) -> BrokerSettings:
    """Settings with exchange names of this test's own (``control_exchange``,
    ``event_exchange``), so that nothing else on the broker hears it, even
    where test runs share a Redis database."""
    tag = uuid.uuid4().hex[:6]
    return BrokerSettings(
        url=url, names=Names(control_exchange=f"bs{tag}", event_exchange=f"bs{tag}ev")
    )


def publish_event(settings: BrokerSettings, body: dict[str, Any]) -> None:
    """Publish one event on the event exchange as any process with broker access can."""
    with settings.connection() as conn:
        producer = Producer(conn.channel())
        producer.publish(
            body,
            exchange=event_exchange(settings.names, settings.transport),
            declare=[event_exchange(settings.names, settings.transport)],
            routing_key=event_routing_key(body["type"]),
            headers={"hostname": body["hostname"]},
            serializer="json",
        )


# -- the surface, no broker needed ----------------------------------------------


def test_celery_names_and_attributes() -> None:
    assert Mingle.label == "Mingle"
    assert Mingle.requires == (Events,) and Events.label == "Events"
    assert {"amqp", "redis", "gcpubsub"} <= Mingle.compatible_transports
    assert "filesystem" in Mingle.compatible_transports  # wkctl's extension
    assert Gossip.label == "Gossip"
    assert Gossip.requires == (Mingle,)
    assert {"amqp", "redis"} <= Gossip.compatible_transports
    assert "gcpubsub" not in Gossip.compatible_transports
    for name in (
        "compatible_transport",
        "start",
        "sync",
        "send_hello",
        "on_node_reply",
        "sync_with_node",
        "on_clock_event",
        "on_revoked_received",
    ):
        assert callable(getattr(Mingle, name)), name
    for name in (
        "compatible_transport",
        "start",
        "election",
        "call_task",
        "on_elect",
        "on_elect_ack",
        "on_node_join",
        "on_node_leave",
        "on_node_lost",
        "register_timer",
        "periodic",
        "get_consumers",
        "on_message",
    ):
        assert callable(getattr(Gossip, name)), name


def test_transport_detection_as_celery_does_it() -> None:
    assert driver_type("pyamqp://guest@localhost//") == "amqp"
    assert driver_type("redis://localhost:6379/0") == "redis"
    assert driver_type("memory://") == "memory"
    assert driver_type(Connection("filesystem://")) == "filesystem"
    # A Celery app is asked through its connection_for_read(), as Celery does.
    assert driver_type(client_app("redis://127.0.0.1:6379/3")) == "redis"


def test_incompatible_transport_disables_both_steps_with_a_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wkctl.bootsteps")
    binding = Binding(BrokerSettings(url="memory://"))
    c = binding.add_node(unique("mem"))
    mingle, gossip = Mingle(c), Gossip(c)
    assert not mingle.enabled and not gossip.enabled
    assert not c.node.config.mingle and not c.node.config.gossip
    assert "Mingle disabled: transport 'memory' is not one of" in caplog.text
    assert "Gossip disabled: transport 'memory' is not one of" in caplog.text
    assert mingle.start(c) is None  # a disabled step does nothing
    assert c.gossip is gossip  # Celery's ``c.gossip``


def test_steps_run_on_the_embedded_filesystem_broker(tmp_path: Path) -> None:
    """wkctl's extension: Celery never enables Mingle or Gossip on the
    filesystem transport; wkctl's embedded broker routes fanout across
    processes, so both steps run there."""
    settings = embedded_settings(tmp_path / "broker")
    peer_binding = Binding(settings)
    peer = peer_binding.add_node(unique("fs-peer"), heartbeat=0.5)
    peer.revoke_local(["fs-revoked"])
    binding = Binding(settings)
    c = binding.add_node(unique("fs"), mingle=False)
    mingle, gossip = Mingle(c), Gossip(c)
    assert mingle.enabled and gossip.enabled
    seen = Recorder()
    seen.attach(gossip)
    peer_binding.start()
    binding.start()
    try:
        assert peer.wait_synced(10) and c.wait_synced(10)
        assert wait_until(lambda: peer.name in seen.joined, 5)
        result = mingle.sync(c)
        assert result.peers == [peer.name]
        assert "fs-revoked" in c.node.revoked
    finally:
        binding.shutdown()
        peer_binding.shutdown()


# -- a cluster of real Celery workers ----------------------------------------------


@dataclass
class Cluster:
    url: str
    workers: list[CeleryWorker]
    record_dir: Path
    queue: str
    settings: BrokerSettings

    @property
    def hostnames(self) -> set[str]:
        return {w.hostname for w in self.workers}


@pytest.fixture(scope="module")
def cluster(module_broker_url: str, worker_pool: WorkerPool) -> Iterator[Cluster]:
    require_celery("5.7")
    # A task queue of this module's own besides ``celery``: tasks sent there
    # reach these workers only, whoever else shares the broker.
    # Exchange names of this module's own too (the workers' app reads them
    # from the environment), so that other runs sharing the broker stay apart.
    queue = f"bootsteps-{uuid.uuid4().hex[:6]}"
    settings = isolated(module_broker_url)
    env = {
        "WKCTL_TEST_CONTROL_EXCHANGE": settings.names.control_exchange,
        "WKCTL_TEST_EVENT_EXCHANGE": settings.names.event_exchange,
    }
    workers = worker_pool.start(
        module_broker_url,
        n=2,
        version="5.7",
        prefix="bs",
        env=env,
        extra_args=("-Q", f"celery,{queue}"),
    )
    try:
        yield Cluster(module_broker_url, workers, worker_pool.record_dir, queue, settings)
    finally:
        worker_pool.stop(workers)


@pytest.fixture
def binding(cluster: Cluster) -> Iterator[Binding]:
    b = Binding(cluster.settings)
    yield b
    b.shutdown()


@contextmanager
def client(settings: BrokerSettings) -> Iterator[Client]:
    conn = settings.connection()
    try:
        with Client(conn, settings.names) as c:
            yield c
    finally:
        conn.release()


def cluster_revoked(cluster: Cluster) -> dict[str, list[str]]:
    with client(cluster.settings) as cl:
        collected = cl.revoked_ids(timeout=3.0, expect=len(cluster.workers))
    return {n: v for n, v in collected.replies.items() if n in cluster.hostnames}


@pytest.mark.broker
@pytest.mark.celery
def test_mingle_syncs_clock_and_revoked_ids_with_celery_workers(
    cluster: Cluster, binding: Binding, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wkctl.bootsteps")
    c = binding.add_node(unique("mingle"))
    mingle = Mingle(c)
    Gossip(c)
    assert mingle.enabled and mingle.compatible_transport(client_app(cluster.url))
    binding.start()
    assert c.wait_synced(10)
    # The step left Mingle on, so the node's own start-up round ran.
    assert cluster.hostnames <= set(c.syncs[0].peers)

    # An id only the Celery workers hold, and one only our node holds.
    theirs, ours = f"theirs-{uuid.uuid4()}", f"ours-{uuid.uuid4()}"
    with client(cluster.settings) as cl:
        cl.cast(
            "revoke",
            {"task_id": [theirs], "terminate": False, "signal": "SIGTERM"},
            destination=sorted(cluster.hostnames),
        )
    c.revoke_local([ours])
    assert wait_until(lambda: ours in c.node.revoked, 5)
    assert wait_until(lambda: all(theirs in ids for ids in cluster_revoked(cluster).values()), 5)
    assert theirs not in c.node.revoked

    replies = mingle.send_hello(c)
    assert c.name not in replies  # our own reply is removed
    assert cluster.hostnames <= set(replies)
    for hostname in cluster.hostnames:
        assert isinstance(replies[hostname]["clock"], int)
        assert theirs in replies[hostname]["revoked"]  # Celery 5.7: list form

    before = c.node.clock.value
    result = mingle.sync(c)
    assert cluster.hostnames <= set(result.peers)
    assert not result.failed
    assert theirs in c.node.revoked
    # Adjusted past every peer's clock of this round.
    assert result.clock > max(replies[h]["clock"] for h in cluster.hostnames)
    assert result.clock > before
    # The core's round logs Celery's lines (the node's log, as the binding keeps it).
    for line in ("mingle: searching for neighbors", "mingle: sync with", "mingle: sync complete"):
        assert line in c.log_text()
    # The workers merged the ids our hello carried, and logged the sync.
    assert wait_until(lambda: all(ours in ids for ids in cluster_revoked(cluster).values()), 5)
    for worker in cluster.workers:
        assert worker.wait_log(f"sync with {c.name}", 5)

    # start() is sync() for an enabled step.
    again = mingle.start(c)
    assert again is not None and cluster.hostnames <= set(again.peers)


@pytest.mark.broker
@pytest.mark.celery
def test_mingle_reply_handling_is_never_fatal_and_bounded(
    cluster: Cluster, binding: Binding, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wkctl.bootsteps")
    c = binding.add_node(unique("replies"))
    mingle = Mingle(c)
    binding.start()
    assert c.wait_synced(10)
    node = c.node

    # Unusable replies: logged and skipped (Celery would sync with an error reply).
    assert mingle.on_node_reply(c, "text@x", "not an object") is False
    assert mingle.on_node_reply(c, "err@x", {"error": "unknown command"}) is False
    assert mingle.on_node_reply(c, "none@x", None) is False
    assert "mingle: sync with text@x failed" in caplog.text
    assert "mingle: sync with err@x failed" in caplog.text

    # The node keeps receiving events (heartbeats) meanwhile, each moving its
    # clock by one, so clock checks allow a little slack (SLACK local events).
    SLACK = 50

    # A 5.4 reply: the mapping form, a clock far ahead of ours.
    clock = node.clock.value
    stamp_from_elsewhere = 12.5
    assert mingle.on_node_reply(
        c, "w54@x", {"clock": clock + 10**6, "revoked": {"m-id": [stamp_from_elsewhere, "m-id"]}}
    )
    assert clock + 10**6 + 1 <= node.clock.value <= clock + 10**6 + SLACK
    assert "m-id" in node.revoked
    # Stamped with the local time, not the peer's monotonic stamp.
    assert abs((node.revoked.stamp("m-id") or 0) - time.time()) < 60

    # A poisoned clock after the sync is not adopted: the clock moves by one.
    clock = node.clock.value
    assert mingle.sync_with_node(c, clock=2**62, revoked=["l-id"], extra="ignored") == 1
    assert clock + 1 <= node.clock.value <= clock + SLACK
    assert "l-id" in node.revoked
    assert "ignored clock" in caplog.text

    # No clock: forward, as Celery does; a lower clock: max(own, theirs) + 1.
    clock = node.clock.value
    forwarded = mingle.on_clock_event(c, None)
    assert clock + 1 <= forwarded <= clock + SLACK
    adjusted = mingle.on_clock_event(c, forwarded - 100)
    assert forwarded + 1 <= adjusted <= forwarded + SLACK

    # Revoked ids: bad entries skipped, empty is a no-op.
    assert mingle.on_revoked_received(c, []) == 0
    assert mingle.on_revoked_received(c, ["r-1", 5, "r-2"]) == 2
    assert "skipped 1 bad revoked ids" in caplog.text


@pytest.mark.broker
@pytest.mark.celery
def test_without_mingle_gossip_and_incompatible_transports_on_a_real_broker(
    cluster: Cluster, binding: Binding, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wkctl.bootsteps")

    class ElsewhereMingle(Mingle):
        compatible_transports = frozenset({"gcpubsub"})

    class ElsewhereGossip(Gossip):
        compatible_transports = frozenset({"sqs"})

    quiet = binding.add_node(unique("without"))
    m1, g1 = Mingle(quiet, without_mingle=True), Gossip(quiet, without_gossip=True)
    other = binding.add_node(unique("elsewhere"))
    m2, g2 = ElsewhereMingle(other), ElsewhereGossip(other)
    watcher = binding.add_node(unique("watcher"))
    g3 = Gossip(watcher)
    assert not (m1.enabled or g1.enabled or m2.enabled or g2.enabled) and g3.enabled
    assert "Mingle disabled: without_mingle is set" in caplog.text
    assert "Gossip disabled: without_gossip is set" in caplog.text
    transport = driver_type(cluster.url)
    assert f"Mingle disabled: transport {transport!r} is not one of gcpubsub" in caplog.text
    assert f"Gossip disabled: transport {transport!r} is not one of sqs" in caplog.text

    binding.start()
    for c in (quiet, other, watcher):
        assert c.wait_synced(10)
    with client(cluster.settings) as cl:
        cl.heartbeat()  # every gossiping node announces itself now
    # The watcher sees the Celery workers; the disabled nodes follow nobody,
    # and never announce themselves either.
    assert wait_until(lambda: cluster.hostnames <= set(watcher.alive_peers()), 6)
    assert quiet.alive_peers() == [] and other.alive_peers() == []
    assert quiet.name not in watcher.alive_peers() and other.name not in watcher.alive_peers()
    # No hello went out from the nodes without Mingle.
    assert quiet.node.last_sync is None and other.node.last_sync is None
    assert m1.start(quiet) is None
    for worker in cluster.workers:
        text = worker.log_text()
        assert f"sync with {quiet.name}" not in text
        assert f"sync with {other.name}" not in text


@pytest.mark.broker
@pytest.mark.celery
def test_gossip_join_leave_lost_handlers_and_the_sweep(
    cluster: Cluster, binding: Binding, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wkctl.bootsteps")
    c = binding.add_node(unique("gossip"), mingle=False)
    # A long interval: the core's own sweep stays out of the way, so that
    # periodic() and register_timer() are what finds lost peers here.
    gossip = Gossip(c, interval=60.0)
    seen = Recorder()
    seen.attach(gossip)

    def broken(worker: WorkerInfo) -> None:
        raise RuntimeError("handler bug")

    gossip.on.node_join.add(broken)
    peers = {
        name: binding.add_node(name, mingle=False, heartbeat=0.4)
        for name in (unique("leaver"), unique("lost"), unique("timed"))
    }
    leaver, lost, timed = peers.values()
    binding.start()
    with client(cluster.settings) as cl:
        cl.heartbeat()
    expected = cluster.hostnames | set(peers)
    assert wait_until(lambda: expected <= set(seen.joined), 8), seen.joined
    assert c.name not in seen.joined  # never joins itself
    assert "Ignored error from handler" in caplog.text  # and the others still ran

    leaver.stop()  # worker-offline
    assert wait_until(lambda: leaver.name in seen.left, 5)

    lost.kill()  # no worker-offline: only the heartbeats stop
    time.sleep(1.2)  # > 2 x 0.4 s: expired, but nobody swept yet
    assert lost.name not in seen.lost
    # periodic() finds it once it expired: on a loaded machine the last
    # heartbeat may have been received late, so sweep until then (bounded)
    assert wait_until(lambda: gossip.periodic() and lost.name in seen.lost, 5, 0.2), seen.lost
    assert any(ch.kind == "lost" and ch.worker.hostname == lost.name for ch in c.changes)
    assert lost.name not in c.alive_peers()
    assert not cluster.hostnames & set(seen.lost)  # live Celery workers are kept

    gossip.interval = 0.2
    gossip.register_timer()
    try:
        timed.kill()
        assert wait_until(lambda: timed.name in seen.lost, 5)
    finally:
        gossip.cancel_timer()
    assert seen.lost.count(lost.name) == 1


@pytest.mark.broker
@pytest.mark.celery
def test_call_task_applies_a_signature_on_celery_workers(
    cluster: Cluster, binding: Binding, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wkctl.bootsteps")
    c = binding.add_node(unique("task"), mingle=False)
    gossip = Gossip(c)
    binding.start()
    assert c.wait_synced(10)
    key = f"call-{uuid.uuid4().hex[:8]}"
    signature = {"task": "tasks.record", "args": [key], "options": {"queue": cluster.queue}}
    assert gossip.call_task(signature)
    assert wait_until(lambda: list(cluster.record_dir.glob(f"{key}.*")), 15), [
        (w.hostname, w.alive(), w.log_text()[-2000:]) for w in cluster.workers
    ]
    assert gossip.call_task({"args": [1]}) is False
    assert "Could not call task" in caplog.text


@pytest.mark.broker
@pytest.mark.celery
def test_election_in_a_mixed_cluster_runs_our_handler_only_if_we_win(
    cluster: Cluster, binding: Binding
) -> None:
    # Last of the cluster tests: Celery's own election bookkeeping may kill
    # a worker here (an IndexError in LamportClock.sort_heap when it decides
    # on a one-entry heap), which is the defect wkctl's core fixes.
    c = binding.add_node(unique("elect"))
    gossip = Gossip(c)
    actions: list[Any] = []
    gossip.election_handlers["wk-note"] = actions.append
    binding.start()
    assert c.wait_synced(10)
    with client(cluster.settings) as cl:
        cl.heartbeat()
    assert wait_until(lambda: cluster.hostnames <= set(c.alive_peers()), 6)
    election_id = f"e-{uuid.uuid4()}"
    with client(cluster.settings) as cl:
        cl.election(election_id, "wk-note", {"n": 1})  # the control command, to everyone
    decision = c.wait_decision(election_id, 15)
    assert decision is not None
    assert decision.reason == "complete"
    assert (cluster.hostnames | {c.name}) <= set(decision.participants)
    time.sleep(0.2)
    assert actions == ([{"n": 1}] if decision.won else [])


# -- elections driven method by method, on a broker of their own ---------------


@pytest.mark.broker
def test_election_methods_lone_node_ties_and_ack_counting(broker_url: str) -> None:
    settings = isolated(broker_url)
    binding = Binding(settings)
    c = binding.add_node(unique("solo"), mingle=False, election_timeout=30.0)
    gossip = Gossip(c, wait=5.0)
    actions: list[Any] = []
    gossip.election_handlers["wk-note"] = actions.append
    stream = EventStream(settings, routing_key="worker.#").open()
    binding.start()
    try:
        assert c.wait_synced(10)

        # A lone node elects itself (a lone gossiping Celery worker dies here).
        assert gossip.election("e1", "wk-note", {"n": 1})
        decision = c.wait_decision("e1", 5)
        assert decision is not None and decision.won and decision.reason == "complete"
        assert actions == [{"n": 1}]

        # A peer appears: its heartbeat travels the broker like any other.
        ghost = unique("ghost")
        publish_event(
            settings,
            event(
                "worker-heartbeat",
                hostname=ghost,
                clock=1,
                pid=7,
                **heartbeat_fields(30, "5.7.0", [0.0, 0.0, 0.0], "Linux"),
            ),
        )
        assert wait_until(lambda: ghost in c.alive_peers(), 5)

        assert gossip.election("e2", "wk-note", {"n": 2})  # expects us and the ghost
        own_ack = event("worker-elect-ack", hostname=c.name, clock=5, pid=1, id="e2")
        for _ in range(3):  # Celery would decide on this many acks
            assert gossip.on_elect_ack(own_ack)
        time.sleep(0.3)
        assert c.wait_decision("e2", 0.1) is None  # acks count once per node

        ghost_request = event(
            "worker-elect",
            hostname=ghost,
            clock=1,
            pid=7,
            id="e2",
            topic="wk-note",
            action={"n": 2},
            cver=1,
        )
        assert gossip.on_elect(ghost_request)
        assert gossip.on_elect(ghost_request)  # a duplicate is not acked again
        # every expected request is in: the winner is fixed, the ghost's ack
        # is not needed ([ELECT-5]) and, arriving late, changes nothing
        decision = c.wait_decision("e2", 5)
        assert gossip.on_elect_ack(
            event("worker-elect-ack", hostname=ghost, clock=2, pid=7, id="e2")
        )
        assert decision is not None and decision.reason == "complete"
        assert decision.winner.hostname == ghost and not decision.won  # lowest clock
        assert actions == [{"n": 1}]  # the loser runs nothing

        # A request lacking its topic is dropped, not acknowledged.
        broken = dict(ghost_request, id="e3")
        del broken["topic"]
        assert gossip.on_elect(broken)
        assert "rejected event worker-elect" in c.log_text()

        events = stream.poll(1.0)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            events += stream.poll(0.2)
        acks = [
            e for e in events if e.get("type") == "worker-elect-ack" and e["hostname"] == c.name
        ]
        # e1: our own request; e2: ours and the ghost's (the duplicate not again); e3: none
        assert sorted(e["id"] for e in acks) == ["e1", "e2", "e2"]
        elects = [e for e in events if e.get("type") == "worker-elect" and e["hostname"] == c.name]
        assert sorted(e["id"] for e in elects) == ["e1", "e2"]
        assert all(e["cver"] == 1 and e["topic"] == "wk-note" for e in elects)
    finally:
        binding.shutdown()
        stream.close()


@pytest.mark.broker
def test_get_consumers_feeds_on_message_and_skips_task_events(broker_url: str) -> None:
    settings = isolated(broker_url)
    binding = Binding(settings)
    c = binding.add_node(unique("consumer"), mingle=False, election_timeout=30.0)
    received: list[str] = []
    prepared: list[str] = []
    elects: list[dict[str, Any]] = []

    class Spy(Gossip):
        def on_message(self, prepare: Any, message: Any) -> None:
            received.append(message.delivery_info["routing_key"])

            def spy_prepare(msg: Any) -> Any:
                prepared.append(msg.delivery_info["routing_key"])
                return prepare(msg)

            super().on_message(spy_prepare, message)

        def on_elect(self, event: Any) -> bool:
            elects.append(dict(event))
            return super().on_elect(event)

    gossip = Spy(c, heartbeat_interval=3.0)
    binding.start()
    conn = Connection(broker_url)
    try:
        assert c.wait_synced(10)
        (consumer,) = gossip.get_consumers(conn.channel())
        (queue,) = consumer.queues
        assert queue.routing_key == "worker.#"
        assert queue.exchange.name == settings.names.event_exchange
        assert queue.message_ttl == 3.0
        assert queue.name.startswith(f"{settings.names.event_queue_prefix}.")
        assert gossip.timer is not None  # get_consumers() registers the timer, as in Celery
        consumer.consume()
        if driver_type(broker_url) == "redis":
            # PUB/SUB: subscribed at the first poll; let it happen before publishing.
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
        ghost = unique("ghost")
        publish_event(
            settings,
            event(
                "task-succeeded", hostname=ghost, clock=1, pid=7, uuid="t1", result="1", runtime=0.1
            ),
        )
        publish_event(
            settings,
            event(
                "worker-elect",
                hostname=ghost,
                clock=1,
                pid=7,
                id="g1",
                topic="wk-note",
                action=None,
                cver=1,
            ),
        )
        deadline = time.monotonic() + 5
        while not elects and time.monotonic() < deadline:
            try:
                conn.drain_events(timeout=0.2)
            except TimeoutError:
                pass
        assert [e["id"] for e in elects] == ["g1"]
        assert elects[0]["hostname"] == ghost
        assert "worker.elect" in prepared
        # Task events never reach prepare(): not routed to worker.# on AMQP,
        # and skipped by routing key where Redis delivers them anyway.
        assert not [rk for rk in prepared if rk.startswith("task")]
    finally:
        gossip.stop()
        conn.release()
        binding.shutdown()


def test_register_timer_replaces_the_previous_timer() -> None:
    binding = Binding(BrokerSettings(url="memory://"))
    c = binding.add_node(unique("timer"))
    gossip = Gossip(c, interval=0.05, wait=0.01)
    calls: list[float] = []
    gossip.periodic = lambda: calls.append(time.monotonic()) or True  # type: ignore[method-assign]
    gossip.register_timer()
    first = gossip.timer
    gossip.register_timer()
    assert gossip.timer is not first
    time.sleep(0.3)
    gossip.cancel_timer()
    count = len(calls)
    assert count >= 3
    assert first is not None and wait_until(lambda: not first.is_alive(), 1)
    time.sleep(0.15)
    assert len(calls) == count  # cancelled: no more sweeps


def test_gossip_start_runs_the_sweep_timer_and_stop_ends_it() -> None:
    binding = Binding(BrokerSettings(url="memory://"))
    c = binding.add_node(unique("start"))
    gossip = Gossip(c, interval=0.05, wait=0.01)
    calls: list[float] = []
    gossip.periodic = lambda: calls.append(time.monotonic()) or True  # type: ignore[method-assign]
    if not gossip.enabled:  # memory:// is not a gossip transport: start does nothing
        assert gossip.start(c) is False and gossip.timer is None
        gossip.enabled = True
    assert gossip.start(c) is True
    assert wait_until(lambda: len(calls) >= 2, 2)
    gossip.stop(c)
    count = len(calls)
    time.sleep(0.15)
    assert len(calls) == count
