"""wkctl nodes and real Celery workers (newest 5.x and 5.4) in one cluster.

One cluster per broker (RabbitMQ, Redis), shared by the tests of this
module: a ``wkctl node`` process started first (holding revoked ids no one
else has), then a Celery 5.7 and a Celery 5.4 worker.  The tests check the
Mingle sync in both directions and an election in the mixed cluster.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from support.nodes import NodeProcess, hosted_nodes, unique_name
from support.requires import require_celery
from support.workers import CeleryWorker, WorkerPool
from wkctl.protocol.binding import Binding, NodeHandle
from wkctl.protocol.broker import BrokerSettings
from wkctl.protocol.election import Decision

pytestmark = [pytest.mark.broker, pytest.mark.celery]


@dataclass
class Cluster:
    url: str
    node: NodeProcess
    only_ours: str
    w57: CeleryWorker
    w54: CeleryWorker
    app: Celery
    record_dir: Path

    @property
    def workers(self) -> list[CeleryWorker]:
        return [self.w57, self.w54]


@pytest.fixture(scope="module")
def cluster(
    module_broker_url: str, worker_pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    require_celery("5.7")
    require_celery("5.4")
    only_ours = f"only-ours-{uuid.uuid4()}"
    logdir = tmp_path_factory.mktemp("wkctl-nodes")
    node = NodeProcess.start(
        module_broker_url,
        unique_name("wka"),
        "--heartbeat",
        "1",
        "--revoked",
        only_ours,
        logdir=logdir,
    )
    workers: list[CeleryWorker] = []
    app = Celery("interop-client", broker=module_broker_url, set_as_current=False)
    try:
        workers += worker_pool.start(module_broker_url, n=1, version="5.7", prefix="c")
        workers += worker_pool.start(module_broker_url, n=1, version="5.4", prefix="c")
        yield Cluster(
            module_broker_url, node, only_ours, workers[0], workers[1], app, worker_pool.record_dir
        )
    finally:
        worker_pool.stop(workers)
        node.stop()
        app.close()


def _inspect(
    app: Celery, method: str, destination: list[str], timeout: float = 2.0
) -> dict[str, Any]:
    inspect = app.control.inspect(destination=destination, timeout=timeout)
    return getattr(inspect, method)() or {}


def test_celery_workers_started_after_a_wkctl_node_sync_from_it(cluster: Cluster) -> None:
    for worker in cluster.workers:
        # the worker's Mingle got our reply ...
        assert worker.wait_log("mingle: sync with", 5), worker.log_text()[-2000:]
        assert "mingle: all alone" not in worker.log_text()
        # ... our node answered its hello (and merged its ids) ...
        assert cluster.node.wait_log(f"sync with {worker.hostname}", 5), cluster.node.log_text()
        # ... and the ids only our node held are now the worker's too
        revoked = _inspect(cluster.app, "revoked", [worker.hostname])
        assert cluster.only_ours in revoked.get(worker.hostname, []), (worker.version, revoked)


def test_a_wkctl_node_started_after_celery_workers_gets_their_clock_and_revoked_ids(
    cluster: Cluster,
) -> None:
    on_57, on_54 = f"w57-only-{uuid.uuid4()}", f"w54-only-{uuid.uuid4()}"
    cluster.app.control.revoke(on_57, destination=[cluster.w57.hostname], reply=True, timeout=2)
    cluster.app.control.revoke(on_54, destination=[cluster.w54.hostname], reply=True, timeout=2)
    clocks = _inspect(cluster.app, "clock", [w.hostname for w in cluster.workers])
    highest = max(v["clock"] for v in clocks.values())
    with Binding(BrokerSettings(url=cluster.url)) as binding:
        handle = binding.add_node(unique_name("wkc"))
        assert handle.wait_synced(10), handle.log_text()
        sync = handle.syncs[0]
        assert {w.hostname for w in cluster.workers} <= set(sync.peers), sync
        assert cluster.node.name in sync.peers
        revoked = set(handle.node.revoked)
        assert {on_57, on_54, cluster.only_ours} <= revoked  # 5.4's mapping form merged too
        assert sync.clock > highest


def _celery_outcome(worker: CeleryWorker, election_id: str) -> str | None:
    """The leader a Celery worker logged for an election ("hostname.pid")."""
    for line in worker.log_text().splitlines():
        if f"I won the election '{election_id}'" in line:
            return f"{worker.hostname}.{worker.pid}"
        marker = " elected for "
        if marker in line and f"'{election_id}'" in line:
            return line.split("node ", 1)[1].split(marker, 1)[0]
    return None


def _wait_all_known(handles: list[NodeHandle], names: set[str], timeout: float = 15.0) -> None:
    for handle in handles:
        others = names - {handle.name}
        assert handle.wait_for(
            lambda h, o=others: o <= set(h.node.membership.alive(time.time())), timeout
        ), (
            handle.name,
            handle.alive_peers(),
        )


def _hold_election(
    cluster: Cluster, handles: list[NodeHandle], topic: str, action: Any
) -> tuple[str, dict[str, str], Decision]:
    """Hold one election; returns its id, every participant's leader
    ("hostname.pid") and one of our nodes' decisions."""
    election_id = f"interop-{uuid.uuid4().hex[:8]}"
    cluster.app.control.election(election_id, topic, action)
    outcomes: dict[str, str] = {}
    decisions: list[Decision] = []
    for handle in handles:
        decision = handle.wait_decision(election_id, 15)
        assert decision is not None, handle.log_text()
        # every expected request arrived: no timeout in a healthy cluster
        assert decision.reason == "complete", decision
        outcomes[handle.name] = decision.winner.node_id
        decisions.append(decision)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for worker in cluster.workers:
            leader = _celery_outcome(worker, election_id)
            if leader:
                outcomes[worker.hostname] = leader
        if all(w.hostname in outcomes for w in cluster.workers):
            break
        time.sleep(0.1)
    assert set(outcomes) >= {w.hostname for w in cluster.workers}, outcomes
    # our nodes: one winner, the spec's lowest (clock, "hostname.pid") over
    # every request, identical at every node
    first = decisions[0]
    assert {d.winner for d in decisions} == {first.winner}
    assert {d.requests for d in decisions} == {first.requests}
    assert first.winner == first.requests[0]
    expected = (
        {h.name for h in handles} | {w.hostname for w in cluster.workers} | {cluster.node.name}
    )
    assert expected <= {r.hostname for r in first.requests}
    return election_id, outcomes, first


def _celery_agrees(outcomes: dict[str, str], decision: Decision) -> bool:
    """Whether every Celery worker named our winner.

    Celery decides once it counted as many ``worker-elect-ack`` messages as
    it knows other workers, which its own acks reach as soon as it has seen
    all requests but one: when that last one is the winner, the worker names
    another leader.  That leader then ranks *after* our winner in the total
    order (a worker never sees a request we did not); anything else would
    be our error."""
    ranks = {r.node_id: i for i, r in enumerate(decision.requests)}
    agree = True
    for leader in outcomes.values():
        if leader != decision.winner.node_id:
            assert ranks.get(leader, 0) > 0, (leader, outcomes, decision.requests)
            agree = False
    return agree


def test_mixed_cluster_election_has_one_winner_everyone_agrees_on(cluster: Cluster) -> None:
    ran: list[tuple[str, str, Any]] = []
    with Binding(BrokerSettings(url=cluster.url)) as binding:
        handles = [binding.add_node(unique_name(p), heartbeat=1.0) for p in ("wkx", "wky")]
        for handle in handles:
            assert handle.wait_synced(10)
            handle.set_election_handler(
                "interop",
                lambda action, decision, name=handle.name: ran.append((name, decision.id, action)),
            )
        everyone = (
            {h.name for h in handles} | {w.hostname for w in cluster.workers} | {cluster.node.name}
        )
        _wait_all_known(handles, everyone)
        time.sleep(2.5)  # the Celery workers hear at least one heartbeat of each node
        ours = {f"{h.name}.{h.node.config.pid}": h.name for h in handles}

        # A custom topic: only the winner acts, and only if it is one of ours
        # (Celery workers log "Unknown election topic").  Celery's early
        # decision can make a Celery worker name another leader; hold a few
        # elections until one where every participant agrees.
        agreed = None
        for _ in range(4):
            election_id, outcomes, decision = _hold_election(cluster, handles, "interop", {"n": 1})
            runs = [r for r in ran if r[1] == election_id]
            winner = decision.winner.node_id
            assert runs == ([(ours[winner], election_id, {"n": 1})] if winner in ours else [])
            if _celery_agrees(outcomes, decision):
                agreed = election_id
                break
        assert agreed is not None, "Celery workers never agreed in 4 elections"

        # Topic "task": the winner, Celery worker or wkctl node, applies the
        # signature; when everyone agrees, the task runs exactly once.
        for _ in range(4):
            key = f"elected-{uuid.uuid4().hex[:8]}"
            signature = {
                "task": "tasks.record",
                "args": [key],
                "kwargs": {},
                "options": {},
                "subtask_type": None,
                "immutable": False,
            }
            _, outcomes, decision = _hold_election(cluster, handles, "task", signature)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not list(cluster.record_dir.glob(f"{key}.*")):
                time.sleep(0.1)
            if _celery_agrees(outcomes, decision):
                time.sleep(1.0)
                assert len(list(cluster.record_dir.glob(f"{key}.*"))) == 1, outcomes
                break
        else:
            pytest.fail("Celery workers never agreed in 4 elections")


def test_task_messages_from_a_wkctl_node_run_on_celery_workers(cluster: Cluster) -> None:
    """The ``task`` topic handler's message is a valid Celery protocol-2
    message for both Celery releases (whoever consumes it runs it)."""
    with Binding(BrokerSettings(url=cluster.url)) as binding:
        handle = binding.add_node(unique_name("wkt"), mingle=False)
        assert handle.wait_synced(10)
        keys = [f"direct-{uuid.uuid4().hex[:8]}" for _ in range(4)]
        for key in keys:
            handle.submit(
                lambda node, now, key=key: node.call_task({"task": "tasks.record", "args": [key]})
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(list(cluster.record_dir.glob(f"{k}.*")) for k in keys):
                break
            time.sleep(0.1)
        missing = [k for k in keys if not list(cluster.record_dir.glob(f"{k}.*"))]
        assert not missing, [(w.hostname, w.alive(), w.log_text()[-1500:]) for w in cluster.workers]


def test_wkctl_node_stops_cleanly_with_worker_offline(cluster: Cluster, tmp_path: Path) -> None:
    node = NodeProcess.start(cluster.url, unique_name("wks"), "--without-mingle", logdir=tmp_path)
    with Binding(BrokerSettings(url=cluster.url)) as binding:
        watcher = binding.add_node(unique_name("wkw"), mingle=False)
        assert watcher.wait_for(lambda h: node.name in h.node.membership.alive(time.time()), 10)
        assert node.stop() == 0
        assert watcher.wait_for(
            lambda h: any(c.kind == "leave" and c.worker.hostname == node.name for c in h.changes),
            5,
        )
    assert "stopped" in node.log_text()


def test_a_second_node_with_the_same_name_is_refused_on_rabbitmq(
    cluster: Cluster, tmp_path: Path
) -> None:
    if not cluster.url.startswith("amqp"):
        pytest.skip("only RabbitMQ enforces exclusive pidbox queues")
    twin = NodeProcess.start(cluster.url, cluster.node.name, logdir=tmp_path, wait=False)
    assert twin.process.wait(20) == 1
    text = twin.log_text()
    assert f"a node named {cluster.node.name} is already running" in text
    assert "Traceback" not in text and "guest:guest" not in text


def test_binding_reconnects_with_backoff_then_mingles_and_announces_again(
    broker_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from support.tcpproxy import TcpProxy, proxied_url, target_of

    caplog.set_level(logging.INFO, logger="wkctl.node")
    with TcpProxy(*target_of(broker_url)) as proxy:
        cut_url = proxied_url(broker_url, proxy)
        with hosted_nodes(broker_url, [unique_name("wkd")], mingle=False, heartbeat=0.5) as [
            direct
        ]:
            with Binding(BrokerSettings(url=cut_url)) as binding:
                node = binding.add_node(unique_name("wkp"), heartbeat=0.5)
                assert node.wait_synced(10)
                onlines = lambda: sum(  # noqa: E731
                    1 for r in caplog.records if f"{node.name}: ready." in r.getMessage()
                )
                assert onlines() == 1
                proxy.cut()
                time.sleep(0.6)  # two failed attempts: 0.1 s, then 0.2 s, 0.4 s...
                proxy.restore()
                assert node.wait_for(lambda h: len(h.syncs) >= 2, 15), node.log_text()
                assert binding.reconnects == 1
                assert direct.name in node.syncs[-1].peers  # Mingled again
                assert onlines() == 2  # and announced itself again (worker-online)
                text = caplog.text
                assert "lost:" in text and "reconnecting in 0.1 s" in text
                assert "reconnected to" in text
                assert ":**@" in text or "redis://" in text  # the URL is masked
                # the others still see it alive
                assert direct.wait_for(
                    lambda h: node.name in h.node.membership.alive(time.time()), 5
                )
