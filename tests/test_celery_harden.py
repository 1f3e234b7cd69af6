"""``wkctl.celery.install(app)``: real ``celery worker`` processes (5.4 and
5.7, RabbitMQ and Redis) running wkctl's Mingle and Gossip, next to stock
workers in the same cluster.

Per broker, one module-scoped cluster is shared by the tests (they run in
file order; the malformed-heartbeat test, which kills the stock workers,
and then the hostile messages of the security suite run last): a hardened
and a stock worker of each release, plus one lone hardened worker of each
release on exchanges of its own.  The 20-election run of the acceptance
(3 hardened + 2 stock) and the long hostile run are opt-in::

    .venv/bin/python -m pytest tests/test_celery_harden.py --run-slow -k many_elections
    .venv/bin/python -m pytest tests/test_celery_harden.py --run-slow -k long_security_suite
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import require_celery
from kombu import Connection

from support.capture import Capture, exchanges
from support.celeryapp import client_app
from support.hardened import (
    build_overlay,
    hardened_env,
    lone_election,
    malformed_heartbeat,
    pings,
    records,
    runs_a_task,
    wait_until,
)
from support.hostile import hostile_groups, hostile_payloads, publish_raw, send_hostile
from support.workers import CeleryWorker, WorkerPool

pytestmark = [pytest.mark.broker, pytest.mark.celery]

#: CI runs 5.7 (the test venv) and 5.4; more releases opt in, each with
#: an interpreter of its own: WKCTL_TEST_HARDEN_VERSIONS=5.0,5.3 and
#: WKCTL_TEST_CELERY50_PYTHON=..., WKCTL_TEST_CELERY53_PYTHON=...
VERSIONS = ("5.7", "5.4") + tuple(
    v for v in os.environ.get("WKCTL_TEST_HARDEN_VERSIONS", "").split(",") if v.strip()
)


@pytest.fixture(scope="session")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_overlay(tmp_path_factory.mktemp("wkctl-overlay"))


@dataclass
class Cluster:
    url: str
    hardened: dict[str, CeleryWorker]  # version -> worker
    stock: dict[str, CeleryWorker]
    queues: dict[str, str]  # version -> the hardened worker's own task queue
    lone: dict[str, tuple[CeleryWorker, str]]  # version -> (worker, control exchange)
    record_dir: Path


def _start(
    pool: WorkerPool,
    url: str,
    version: str,
    overlay: Path,
    hardened: bool,
    prefix: str,
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> CeleryWorker:
    child_env = dict(hardened_env(version, overlay) if hardened else {})
    child_env.update(env or {})
    [worker] = pool.start(
        url,
        version=version,
        prefix=prefix,
        env=child_env,
        extra_args=extra_args,
        wait=False,
    )
    return worker


@pytest.fixture(scope="module")
def cluster(module_broker_url: str, worker_pool: WorkerPool, overlay: Path) -> Iterator[Cluster]:
    for version in VERSIONS:
        require_celery(version)
    url = module_broker_url
    tag = uuid.uuid4().hex[:6]
    queues = {v: f"hq{v.replace('.', '')}-{tag}" for v in VERSIONS}
    started: list[CeleryWorker] = []
    lone: dict[str, tuple[CeleryWorker, str]] = {}
    for version in VERSIONS:
        exchange = f"lone{version.replace('.', '')}-{tag}"
        worker = _start(
            worker_pool,
            url,
            version,
            overlay,
            True,
            "lone",
            env={"WKCTL_TEST_CONTROL_EXCHANGE": exchange, "WKCTL_TEST_EVENT_EXCHANGE": exchange},
        )
        lone[version] = (worker, exchange)
        started.append(worker)
    hardened = {
        v: _start(worker_pool, url, v, overlay, True, "h", extra_args=("-Q", f"celery,{queues[v]}"))
        for v in VERSIONS
    }
    stock = {v: _start(worker_pool, url, v, overlay, False, "s") for v in VERSIONS}
    started += [*hardened.values(), *stock.values()]
    try:
        for worker in started:
            worker.wait_ready()
        yield Cluster(url, hardened, stock, queues, lone, worker_pool.record_dir)
    finally:
        worker_pool.stop([w for w in worker_pool.workers if w.broker_url == url])


_records = records
_wait = wait_until


# -- in-process: install() and the steps' decisions ----------------------------


def test_install_refuses_an_unsupported_celery_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import celery

    import wkctl.celery as harden

    monkeypatch.setattr(celery, "__version__", "4.4.7")
    with pytest.raises(harden.UnsupportedCelery) as info:
        harden.install(celery.Celery("x", set_as_current=False))
    assert str(info.value) == "wkctl.celery supports Celery 5.0 to 5.7; this is Celery 4.4.7"


def test_unsupported_transport_disables_the_steps_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import celery

    import wkctl.celery as harden

    app = celery.Celery("x", broker="memory://", set_as_current=False)
    harden.install(app)
    assert app.conf.worker_consumer == "wkctl.celery:Consumer"
    c = SimpleNamespace(app=app, hostname="m@h", pid=1, timer=None)
    with caplog.at_level("WARNING", logger="wkctl.celery"):
        mingle = harden.Mingle(c)
        gossip = harden.Gossip(c)
    assert not mingle.enabled and not gossip.enabled
    lines = [r.getMessage() for r in caplog.records if r.name == "wkctl.celery"]
    assert len(lines) == 2 and all("transport 'memory'" in line for line in lines)
    assert c.gossip is gossip and not c.wkctl.node.config.mingle


def test_a_failing_step_is_logged_once_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    import celery

    import wkctl.celery as harden

    app = celery.Celery("x", broker="memory://", set_as_current=False)
    host = harden.WorkerNode(SimpleNamespace(app=app, hostname="m@h", pid=1, timer=None))

    def bug(node: Any, now: float) -> None:
        raise RuntimeError("injected")

    with caplog.at_level("ERROR", logger="wkctl.celery"):
        assert host.run("Gossip", bug) is None
        assert host.run("Gossip", bug) is None  # stopped: not run again
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "wkctl Gossip step stopped after an internal error"
    ]
    assert host.run("Mingle", lambda node, now: []) == []  # the other step runs on


def test_the_app_clock_is_bounded() -> None:
    import celery

    import wkctl.celery as harden

    app = celery.Celery("x", broker="memory://", set_as_current=False)
    app.clock.forward()
    harden.install(app)
    assert app.clock.value == 1
    app.clock.anchor()
    assert app.clock.adjust(2**70) == 2  # not a clock value: forward only
    assert app.clock.adjust("7") == 3
    assert app.clock.adjust(10) == 11  # Celery's rule for a sane value


@pytest.mark.parametrize(
    "body, reason",
    [
        (["not", "a", "request"], "not a pidbox request object"),
        (b'{"method": "ping"}', "not a pidbox request object"),  # no content type: undecoded
        ({"arguments": {}}, "not a pidbox request object"),
        ({"method": "ping", "arguments": ["x"]}, "arguments is not an object"),
        ({"method": "ping", "self": 1}, "field 'self'"),
        (
            {
                "method": "ping",
                "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "r"},
                "ticket": 5,
            },
            "reply_to/ticket malformed",
        ),
        ({"method": "ping", "destination": 5}, "destination is not a list"),
        ({"method": "ping", "pattern": "*", "matcher": "nosuch"}, "is not usable"),
        ({"method": "ping", "pattern": "(", "matcher": "pcre"}, "not a regular expression"),
        ({"method": "ping", "reply_to": "x", "ticket": "t"}, "reply_to malformed"),
        (
            {
                "method": "ping",
                "reply_to": {"exchange": "amq.direct", "routing_key": "r"},
                "ticket": "t",
            },
            "is not ours",
        ),
        ({"method": "ping", "destination": ["a@b"], "arguments": {}}, ""),
        ({"method": "nosuch", "pattern": "w*", "matcher": "glob", "whatever": 1}, ""),
    ],
)
def test_control_requests_kombu_cannot_dispatch_are_rejected(body: Any, reason: str) -> None:
    """[PIDBOX-21]: what a hardened worker's pidbox hands to Celery."""
    from wkctl.protocol.node import Log, Node

    admitted, actions = Node().admit_request(body, time.time())
    logged = " ".join(a.message for a in actions if isinstance(a, Log))
    assert admitted is (reason == "")
    assert reason in logged if reason else not logged


# -- real workers -----------------------------------------------------------------


def test_hardened_workers_run_wkctls_steps_and_mark_their_heartbeats(cluster: Cluster) -> None:
    for worker in cluster.hardened.values():
        assert "(wkctl's steps)" in worker.log_text()
    for worker in cluster.stock.values():
        assert "(wkctl's steps)" not in worker.log_text()
    with Capture(cluster.url) as cap:
        names = {w.hostname for w in [*cluster.hardened.values(), *cluster.stock.values()]}

        def beats(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {
                r["body"]["hostname"]: r["body"]
                for r in records
                if r["kind"] == "event:worker-heartbeat" and isinstance(r["body"], dict)
            }

        assert cap.wait_for(lambda records: names <= set(beats(records)), timeout=8)
        seen = beats(cap.snapshot())
    for worker in cluster.hardened.values():
        assert seen[worker.hostname]["sw_ident"] == "py-celery"
        assert seen[worker.hostname].get("wkctl_ver")
    for worker in cluster.stock.values():
        assert "wkctl_ver" not in seen[worker.hostname]


def test_wkctl_hello_sees_hardened_workers_like_any_other(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    from wkctl.cli.main import main

    everyone = {w.hostname for w in [*cluster.hardened.values(), *cluster.stock.values()]}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["-b", cluster.url, "hello", "--expect", str(len(everyone)), "--json"])
    assert exc.value.code == 0
    replies = json.loads(capsys.readouterr().out)
    assert everyone <= set(replies)
    for worker in cluster.hardened.values():
        assert isinstance(replies[worker.hostname]["revoked"], list)  # [REVOKED-5]
        assert isinstance(replies[worker.hostname]["clock"], int)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_lone_hardened_worker_survives_an_election_and_runs_the_action_once(
    cluster: Cluster, version: str
) -> None:
    worker, exchange = cluster.lone[version]
    election = lone_election(cluster.url, exchange, cluster.record_dir)
    assert worker.alive(), worker.log_text()[-2000:]
    assert f"I won the election {election!r}" in worker.log_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_conform_reports_no_failure_on_a_hardened_worker(cluster: Cluster, version: str) -> None:
    """``wkctl conform --node <hardened worker>``: 0 failures; the known
    deviations left are the pidbox's (Celery's and kombu's, DEFECT-12/13/15)."""
    from wkctl.conform import run, select
    from wkctl.conform.runner import HARDENED_DEVIATIONS
    from wkctl.protocol.broker import BrokerSettings
    from wkctl.protocol.wire import Names

    worker, exchange = cluster.lone[version]
    names = Names(control_exchange=exchange, event_exchange=exchange)
    outcome = run(BrokerSettings(url=cluster.url, names=names), worker.hostname, select())
    failed = [(r.id, r.detail) for r in outcome.results if r.status == "fail"]
    assert failed == []
    deviations = {r.deviation for r in outcome.results if r.status == "deviation"}
    assert deviations <= HARDENED_DEVIATIONS
    assert worker.alive()


def test_revoked_ids_survive_a_rolling_restart_and_stop_the_task(
    cluster: Cluster, worker_pool: WorkerPool, overlay: Path
) -> None:
    """1,000 ids revoked on the stock workers only, 5 on the hardened ones
    only; every member restarted in turn (hardened first) learns them all by
    Mingle, holds them in Celery's own revoked set (``inspect revoked``),
    and a hardened worker discards a task sent with one."""
    ids = [str(uuid.uuid4()) for _ in range(1000)]
    ours = [f"hardened-only-{uuid.uuid4()}" for _ in range(5)]
    app = client_app(cluster.url)
    stock = [w.hostname for w in cluster.stock.values()]
    app.control.revoke(ids, destination=stock)
    app.control.revoke(ours, destination=[w.hostname for w in cluster.hardened.values()])
    assert _wait(
        lambda: all(
            set(ids) <= set(v or [])
            for v in (app.control.inspect(destination=stock, timeout=1).revoked() or {}).values()
        ),
        10,
    )
    for version in VERSIONS:
        old = cluster.hardened[version]
        worker_pool.stop([old])
        new = _start(
            worker_pool,
            cluster.url,
            version,
            overlay,
            True,
            "h",
            extra_args=("-Q", f"celery,{cluster.queues[version]}"),
        )
        new.wait_ready()
        cluster.hardened[version] = new
    # The other way: restarted stock workers learn the hardened workers' ids
    # from their hello replies (list form, read by 5.4 and 5.7 alike).
    for version in VERSIONS:
        worker_pool.stop([cluster.stock[version]])
        new = _start(worker_pool, cluster.url, version, overlay, False, "s")
        new.wait_ready()
        cluster.stock[version] = new
    for worker in [*cluster.hardened.values(), *cluster.stock.values()]:
        held = app.control.inspect(destination=[worker.hostname], timeout=2).revoked() or {}
        assert set(ids) | set(ours) <= set(held.get(worker.hostname) or []), worker.hostname
    for version, worker in cluster.hardened.items():
        key = f"revoked-{uuid.uuid4().hex[:8]}"
        app.send_task("tasks.record", args=[key], task_id=ids[0], queue=cluster.queues[version])
        control = f"control-{uuid.uuid4().hex[:8]}"
        app.send_task("tasks.record", args=[control], queue=cluster.queues[version])
        assert _wait(lambda c=control: _records(cluster.record_dir, c), 10), worker.log_text()[
            -2000:
        ]
        assert _records(cluster.record_dir, key) == []
        assert ids[0] in worker.log_text()  # "Discarding revoked task" / revoked


def _requests(records: list[dict[str, Any]], election: str) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in records
        if r["kind"] == "event:worker-elect"
        and isinstance(r["body"], dict)
        and r["body"].get("id") == election
    ]


def _spec_winner(records: list[dict[str, Any]], election: str) -> str:
    """[ELECT-3]: the lowest ``(clock, "hostname.pid")`` of the requests."""
    requests = _requests(records, election)
    clock, node_id = min((b["clock"], f"{b['hostname']}.{b['pid']}") for b in requests)
    return node_id


def _elections(
    cluster_url: str,
    hardened: list[CeleryWorker],
    count: int,
    record_dir: Path,
    everyone: list[CeleryWorker],
) -> None:
    """``count`` elections; every hardened worker must survive and name the
    spec's winner ([ELECT-3]); the action runs at most once.

    First every hardened worker must know every other worker alive (a
    heartbeat seen, [ELECT-4]): a worker that just started expects only the
    peers it has heard of, like Celery's ``alive_workers()``."""
    for worker in hardened:
        for other in everyone:
            if other is not worker and other.alive():
                assert worker.wait_log(f"{other.hostname} joined the party", 15), other.hostname
    app = client_app(cluster_url)
    keys: list[str] = []
    winners: list[str] = []
    with Capture(cluster_url) as cap:
        # Redis fanout is PUB/SUB: nothing published before the capture's
        # subscription is live reaches it; a heartbeat of everyone proves it is.
        names = {w.hostname for w in everyone if w.alive()}
        assert cap.wait_for(
            lambda rs: (
                names
                <= {r["body"]["hostname"] for r in rs if r["kind"] == "event:worker-heartbeat"}
            ),
            10,
        )
        for _ in range(count):
            election, key = str(uuid.uuid4()), f"elect-{uuid.uuid4().hex[:8]}"
            # A whole signature: stock winners apply it too (Celery's
            # call_task fails on a dict without "options").
            action = {"task": "tasks.record", "args": [key], "kwargs": {}, "options": {}}
            app.control.election(election, "task", action)
            decided = [f"I won the election {election!r}", f"elected for {election!r}"]
            for worker in hardened:
                assert _wait(lambda w=worker, ds=decided: any(d in w.log_text() for d in ds), 15), (
                    worker.log_text()[-2000:]
                )
            # Every worker still alive stood (a stock one may die of it, DEFECT-2).
            assert cap.wait_for(
                lambda rs, e=election: (
                    len(_requests(rs, e)) >= sum(1 for w in everyone if w.alive())
                ),
                10,
            ), (
                sorted(b["hostname"] for b in _requests(cap.snapshot(), election)),
                sorted(w.hostname for w in everyone if w.alive()),
            )
            winner = _spec_winner(cap.snapshot(), election)
            for worker in hardened:
                assert worker.alive(), worker.log_text()[-2000:]
                text = worker.log_text()
                if winner == f"{worker.hostname}.{worker.pid}":
                    assert f"I won the election {election!r}" in text
                else:
                    assert f"node {winner} elected for {election!r}" in text
            keys.append(key)
            winners.append(winner)
    time.sleep(3.0)  # the last task messages reach a worker
    runs = [len(_records(record_dir, key)) for key in keys]
    assert max(runs) <= 1, runs
    ours = {f"{w.hostname}.{w.pid}" for w in hardened}
    print(
        f"\n{count} elections: action ran once {sum(runs)} times, never {runs.count(0)} times; "
        f"spec winner hardened {sum(1 for w in winners if w in ours)} times; "
        f"stock workers alive {sum(1 for w in everyone if w.alive() and w not in hardened)}"
        f"/{sum(1 for w in everyone if w not in hardened)}"
    )


def test_elections_in_a_mixed_cluster_name_the_specs_winner(cluster: Cluster) -> None:
    everyone = [*cluster.hardened.values(), *cluster.stock.values()]
    _elections(cluster.url, list(cluster.hardened.values()), 3, cluster.record_dir, everyone)


def test_hardened_workers_never_deserialize_anything_but_json(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Pickle, YAML and msgpack worker events (a pickle that would create a
    file) reach the Gossip consumer and are refused unread ([MSG-1])."""
    payloads = hostile_payloads(tmp_path)
    with Connection(cluster.url) as conn:
        _, _, events = exchanges(conn.transport.driver_type)
        for body, content_type in payloads.values():
            publish_raw(
                conn, events, "worker.heartbeat", body, content_type, {"hostname": "pickler@x"}
            )
    for worker in cluster.hardened.values():
        assert worker.wait_log("rejected event from pickler@x", 10), worker.log_text()[-2000:]
        assert worker.alive()
    time.sleep(0.5)
    assert not list(tmp_path.glob("*-ran"))


def _survive_the_security_suite(
    url: str,
    workers: dict[str, CeleryWorker],
    queues: dict[str, str],
    record_dir: Path,
    folder: Path,
    cases: int,
    seed: int = 3,
) -> list[str]:
    """Every group of the security suite's hostile messages
    (``support.hostile.hostile_groups``) at the hardened ``workers``; after
    each group every one of them is alive, logged no internal error (its wkctl
    steps still run), answers Celery's ``ping`` (within 20 s) and runs a task
    from its own queue, and after the bad clocks its clock stayed bounded.
    Returns one line per group."""
    names = [w.hostname for w in workers.values()]
    app = client_app(url)

    def clocks() -> dict[str, int]:
        got = app.control.inspect(destination=names, timeout=2).clock() or {}
        return {name: int(reply["clock"]) for name, reply in got.items()}

    lines = []
    try:
        for group, messages in hostile_groups(folder, cases, seed).items():
            before = clocks()
            begun = time.monotonic()
            send_hostile(url, messages)
            for worker in workers.values():
                log = worker.log_text()
                assert worker.alive(), (group, log[-2000:])
                assert "internal error" not in log, (group, log[-3000:])
            # a worker busy with a 9 MiB body may miss the first ping
            answered = wait_until(lambda: pings(url, names) == set(names), 20)
            assert answered, (group, pings(url, names))
            for version, worker in workers.items():
                assert runs_a_task(url, queues[version], record_dir), (group, worker.hostname)
            if group == "bad clocks":
                after = clocks()
                for name in names:
                    assert after[name] < before[name] + 10_000, (name, before, after)
            lines.append(f"{group}: {len(messages)} sent, {time.monotonic() - begun:.1f} s")
    finally:
        app.close()
    assert not list(folder.glob("*-ran")), "a payload was deserialized"
    return lines


def test_the_malformed_heartbeat_kills_stock_workers_not_hardened_ones(cluster: Cluster) -> None:
    """DEFECT-6 in the same run: ``"timestamp": "now"`` (runs last: it kills
    the stock workers of the shared cluster)."""
    stock_alive = [w for w in cluster.stock.values() if w.alive()]
    hardened = [*cluster.hardened.values(), *(w for w, _ in cluster.lone.values())]
    malformed_heartbeat(cluster.url)
    # Celery 5.7 dies of it (ValueError); 5.4 localizes the timestamp first
    # and logs the TypeError of that instead.
    victim = cluster.stock["5.7"]
    if victim in stock_alive:
        assert _wait(lambda: not victim.alive(), 15), "the stock 5.7 worker survived"
        assert "ValueError" in victim.log_text()
    for worker in cluster.hardened.values():
        assert worker.alive(), worker.log_text()[-2000:]
        assert _wait(
            lambda w=worker: "rejected event worker-heartbeat from evil@x" in w.log_text(), 5
        )
    names = [w.hostname for w in hardened[:2]]
    assert pings(cluster.url, names) == set(names)


def test_hardened_workers_survive_the_security_suites_hostile_messages(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The short run (40 mutated messages) on the shared cluster, after the
    malformed heartbeat (the hostile names keep a stock worker's Gossip busy
    logging, and that test needs the stock 5.7 worker as it started); the
    long one is ``test_hardened_workers_survive_the_long_security_suite``."""
    lines = _survive_the_security_suite(
        cluster.url, cluster.hardened, cluster.queues, cluster.record_dir, tmp_path, 40
    )
    print("\n" + "\n".join(lines))


@pytest.mark.slow
def test_many_elections_three_hardened_two_stock(
    broker_url: str, worker_pool: WorkerPool, overlay: Path
) -> None:
    """The acceptance run: 20 elections, 3 hardened + 2 stock workers."""
    for version in VERSIONS:
        require_celery(version)
    url = broker_url
    hardened = [_start(worker_pool, url, v, overlay, True, "mh") for v in ("5.7", "5.4", "5.7")]
    stock = [_start(worker_pool, url, v, overlay, False, "ms") for v in VERSIONS]
    try:
        for worker in hardened + stock:
            worker.wait_ready()
        _elections(url, hardened, 20, worker_pool.record_dir, hardened + stock)
    finally:
        worker_pool.stop(hardened + stock)


@pytest.mark.slow
def test_hardened_workers_survive_the_long_security_suite(
    broker_url: str, worker_pool: WorkerPool, overlay: Path, tmp_path: Path
) -> None:
    """Every hostile message of the security suite with 400 mutated messages
    (``WKCTL_FUZZ_BROKER_CASES``, seed ``WKCTL_FUZZ_SEED``) at hardened 5.4
    and 5.7 workers."""
    for version in VERSIONS:
        require_celery(version)
    tag = uuid.uuid4().hex[:6]
    queues = {v: f"hq{v.replace('.', '')}-{tag}" for v in VERSIONS}
    workers = {
        v: _start(worker_pool, broker_url, v, overlay, True, "fh", extra_args=("-Q", queues[v]))
        for v in VERSIONS
    }
    try:
        for worker in workers.values():
            worker.wait_ready()
        cases = int(os.environ.get("WKCTL_FUZZ_BROKER_CASES", "400"))
        seed = int(os.environ.get("WKCTL_FUZZ_SEED", "3"))
        lines = _survive_the_security_suite(
            broker_url, workers, queues, worker_pool.record_dir, tmp_path, cases, seed
        )
        print("\n" + "\n".join(lines))
    finally:
        worker_pool.stop(list(workers.values()))
