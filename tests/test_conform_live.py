"""``wkctl conform`` against real nodes on real brokers.

* real Celery workers (5.7 and 5.4) on RabbitMQ and Redis pass every MUST
  check; what they fail by design is reported as known deviations citing
  the spec's defects, and they are still alive afterwards;
* ``wkctl node`` passes every check, ``--strict`` included;
* each broken target (``support.broken_nodes``) fails exactly the checks
  of the rule it breaks, with expected and actual in the report;
* a node that does not exist, never answers or answers garbage: the run
  ends within its timeout with ONE failure giving the reason, the checks
  that need replies reported as not run, and (for a node that emits
  events) the event checks run.

Workers are shared by the tests of this module (one cluster per broker).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from support.broken_nodes import ProbeTarget
from support.brokers import BrokerPool
from support.celeryapp import client_app
from support.nodes import NodeProcess, unique_name
from support.workers import CeleryWorker, WorkerPool, celery_python
from wkctl.cli.main import cli
from wkctl.conform import CHECKS, run, select
from wkctl.conform.runner import EVENT_WAIT
from wkctl.protocol.broker import BrokerSettings

pytestmark = [pytest.mark.broker]

#: What a Celery worker fails by design, and the defect each one cites.
CELERY_DEVIATIONS = {
    "clock.not-a-clock": "DEFECT-8",
    "clock.poison": "DEFECT-8",
    "events.malformed-heartbeat": "DEFECT-6",
    "election.ack-once": "DEFECT-2",
    "election.alone": "DEFECT-1",
    "election.winner-runs": "DEFECT-1",
    "mingle.bad-entry": "DEFECT-10",  # 5.4 only: a malformed mapping entry fails the sync
    "clock.single": "DEFECT-11",  # --strict
    "pidbox.expired": "DEFECT-12",  # --strict: expired requests are answered
    "sec.schema-invalid": "DEFECT-13",  # no schema validation
    "sec.too-deep": "DEFECT-13",  # no nesting limit
    "sec.too-large": "DEFECT-13",  # no size limit
    "mingle.list-form": "DEFECT-14",  # 5.4 only: hello replies in the mapping form
    "launch.initial-bound": "DEFECT-8",  # --launch: adopts 2**53+5 from a hello reply
    "launch.error-reply": "DEFECT-25",  # --launch: takes clock and ids of an error reply
}

#: Checks that only run when the kit launched the node itself.
LAUNCH_ONLY = {
    "events.online",
    "events.offline",
    "launch.hello",
    "launch.sync",
    "launch.error-reply",
    "launch.initial-bound",
}

#: rule broken -> the checks that must fail (all others pass or skip)
BROKEN: dict[str, set[str]] = {
    "clock-type": {"pidbox.reply-clock", "clock.forward", "clock.adjust-header"},
    "no-ticket": {"pidbox.ticket"},
    "no-acks": {
        "election.ack-peer",
        "election.ack-own",
        "election.ack-once",
        "election.winner-runs",
        "election.alone",
    },
    "ignores-revoke": {"revoke.adds"},
    "other-destinations": {"pidbox.destination", "pidbox.unknown-matcher"},
    "no-heartbeats": {
        "events.heartbeat",
        "events.heartbeat-now",
        "events.freq",
        "events.malformed-heartbeat",
    },
    "stale-clock": {"clock.adjust-event", "clock.adjust-header", "clock.single"},
    "drops-hello-revoked": {"mingle.merge-list", "mingle.merge-mapping"},
    "list-form-only": {"mingle.merge-mapping"},
    "hello-no-revoked": {"mingle.own-revoked"},
    "no-elect": {"election.elect", "election.alone"},
    "no-expiry": {"pidbox.expired"},
    "freq-lie": {"events.freq"},
    "acks-twice": {"election.ack-once"},
    "stats-no-pool": {"control.vocabulary", "control.stats"},
    "conf-secret": {"control.no-secret"},
    "tasks-error": {"control.vocabulary", "control.aliases", "control.task-lists"},
}


def conform(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-b", url, "conform", *args], catch_exceptions=False)
    return result.exit_code, result.stdout  # stderr: --launch progress


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in doc["checks"]}


def require(version: str) -> None:
    if celery_python(version) is None:
        pytest.skip(f"no Celery {version} interpreter")


@pytest.fixture(scope="module")
def cluster(module_broker_url: str, worker_pool: WorkerPool) -> Iterator[dict[str, CeleryWorker]]:
    """One Celery 5.7 and one Celery 5.4 worker on this module's broker."""
    workers: dict[str, CeleryWorker] = {}
    for version in ("5.7", "5.4"):
        if celery_python(version) is not None:
            workers[version] = worker_pool.start(module_broker_url, n=1, version=version)[0]
    yield workers
    worker_pool.stop(list(workers.values()))


@pytest.fixture(scope="module")
def quiet_url(broker_pool: BrokerPool) -> Iterator[str]:
    """A RabbitMQ namespace without Celery workers (hostile probes are sent)."""
    if broker_pool.amqp_url is None:
        pytest.skip("no RabbitMQ")
    url = broker_pool.isolated("amqp")
    yield url
    broker_pool.release(url)


# -- real Celery workers ------------------------------------------------------------


@pytest.mark.celery
@pytest.mark.parametrize("version", ["5.7", "5.4"])
def test_celery_worker_passes_every_must_check(
    module_broker_url: str,
    cluster: dict[str, CeleryWorker],
    version: str,
    tmp_path: Path,
) -> None:
    require(version)
    worker = cluster[version]
    junit = tmp_path / "report.xml"
    started = time.monotonic()
    code, output = conform(
        module_broker_url, "--node", worker.hostname, "--json", "--junit", str(junit)
    )
    took = time.monotonic() - started
    doc = json.loads(output)
    checks = by_id(doc)
    failed = {i: c["detail"] for i, c in checks.items() if c["result"] == "fail"}
    assert code == 0 and not failed, failed
    assert doc["passed"] is True
    assert doc["identity"]["sw_ident"] == "py-celery"
    assert doc["identity"]["sw_ver"].startswith(version)
    deviations = {i: c["known_deviation"] for i, c in checks.items() if c["result"] == "deviation"}
    assert deviations, "a Celery worker shows its documented defects"
    for check_id, defect in deviations.items():
        assert CELERY_DEVIATIONS.get(check_id) == defect, (check_id, defect)
        assert defect in checks[check_id]["detail"]
    assert {"clock.poison", "election.alone", "election.ack-once"} <= set(deviations)
    if version == "5.4":
        assert deviations.get("mingle.bad-entry") == "DEFECT-10"
        assert deviations.get("mingle.list-form") == "DEFECT-14"
    else:
        assert checks["mingle.list-form"]["result"] == "pass"
    for check_id in ("sec.schema-invalid", "sec.too-deep", "sec.too-large"):
        assert deviations.get(check_id) == "DEFECT-13", check_id
    skipped = {i for i, c in checks.items() if c["result"] == "skip"}
    allowed = LAUNCH_ONLY | {"transport.pidbox-queue", "sec.no-credentials"}
    if module_broker_url.startswith("redis"):
        # the 5.4 worker on this vhost (kombu 5.3.7) would lose its control
        # channel to the unknown-matcher broadcast: not sent, whoever is probed
        unknown = checks["pidbox.unknown-matcher"]
        assert unknown["result"] == "skip" and "DEFECT-15" in unknown["detail"], unknown
        assert f"{cluster['5.4'].hostname}: Celery 5.4.0 with kombu 5.3.7" in unknown["detail"]
        allowed = allowed | {"pidbox.unknown-matcher"}
    else:
        assert checks["pidbox.unknown-matcher"]["result"] == "pass"
    assert skipped <= allowed, skipped - allowed
    # every worker of the vhost still answers (Celery's own client asks)
    client = client_app(module_broker_url)
    try:
        pinged = client.control.ping(timeout=1.0)
    finally:
        client.close()
    answered = {name for reply in pinged for name in reply}
    assert {w.hostname for w in cluster.values()} <= answered, answered
    # The list, all passing on a real worker:
    for check_id in (
        "pidbox.ping",
        "clock.reply",
        "mingle.hello",
        "pidbox.revoked",
        "pidbox.ticket",
        "pidbox.reply-clock",
        "pidbox.destination",
        "pidbox.unknown-method",
        "clock.forward",
        "clock.adjust-event",
        "mingle.merge-list",
        "mingle.merge-mapping",
        "mingle.own-revoked",
        "events.heartbeat",
        "events.freq",
        "events.clock",
        "election.ack-peer",
        "election.elect",
        "election.ack-own",
        "election.loser-waits",
        "revoke.adds",
    ):
        assert checks[check_id]["result"] == "pass", (check_id, checks[check_id]["detail"])
    # JUnit: one suite per section, one case per check.
    root = ET.parse(junit).getroot()
    assert sum(len(s.findall("testcase")) for s in root.findall("testsuite")) == len(checks)
    assert len(root.findall("testsuite")) == len({c["section"] for c in checks.values()})
    assert not list(root.iter("failure"))
    # Nothing fatal was sent: every worker of the cluster is still there.
    assert all(w.alive() for w in cluster.values())
    assert "Unrecoverable error" not in worker.log_text()
    assert took < 20, f"a run against a healthy worker took {took:.1f} s"


@pytest.mark.celery
def test_celery_worker_under_strict(
    module_broker_url: str, cluster: dict[str, CeleryWorker]
) -> None:
    """SHOULD checks: DEFECT-11 and DEFECT-12 (answering expired requests)
    are known deviations, so a Celery worker passes ``--strict`` too."""
    require("5.7")
    worker = cluster["5.7"]
    code, output = conform(module_broker_url, "--node", worker.hostname, "--strict", "--json")
    checks = by_id(json.loads(output))
    assert checks["clock.single"]["result"] == "deviation"
    assert checks["clock.single"]["known_deviation"] == "DEFECT-11"
    failed = {i for i, c in checks.items() if c["result"] == "fail"}
    assert not failed, failed
    assert checks["pidbox.expired"]["result"] == "deviation"
    assert checks["pidbox.expired"]["known_deviation"] == "DEFECT-12"
    assert checks["pidbox.expired"]["expected"] == "no reply"
    assert code == 0
    assert worker.alive()


# -- the reference node -------------------------------------------------------------


@pytest.fixture(scope="module")
def node_url(module_broker_url: str, broker_pool: BrokerPool) -> Iterator[str]:
    kind = "amqp" if module_broker_url.startswith("amqp") else "redis"
    url = broker_pool.isolated(kind)
    yield url
    broker_pool.release(url)


def test_wkctl_node_passes_every_check_strict(node_url: str, tmp_path: Path) -> None:
    node = NodeProcess.start(node_url, unique_name("conf"), "--heartbeat", "1", logdir=tmp_path)
    try:
        code, output = conform(node_url, "--node", node.name, "--strict", "--json")
        doc = json.loads(output)
        checks = by_id(doc)
        failed = {
            i: (c["detail"], c.get("actual"))
            for i, c in checks.items()
            if c["result"] != "pass" and c["result"] != "skip"
        }
        assert code == 0 and not failed, failed
        skipped = {i for i, c in checks.items() if c["result"] == "skip"}
        assert skipped <= LAUNCH_ONLY | {"transport.pidbox-queue", "sec.no-credentials"}
        assert set(checks) == {c.id for c in select(strict=True)}
        assert doc["identity"]["sw_ident"] == "wkctl"
        # --only X gives X the result of the full run: checks that build on
        # another's effect declare it (``needs``) and it runs first, unreported.
        for only in ONLY_AS_IN_FULL_RUN:
            code, output = conform(node_url, "--node", node.name, "--only", only, "--json")
            alone = by_id(json.loads(output))
            assert set(alone) == {only}, alone
            assert alone[only]["result"] == checks[only]["result"], (only, alone[only]["detail"])
    finally:
        node.stop()


#: Checks run alone against the reference node (test above): the two that
#: build on earlier election checks, and two that use cached observations.
ONLY_AS_IN_FULL_RUN = ("election.elect", "election.ack-own", "events.freq", "pidbox.one-reply")


def test_launched_wkctl_node_passes_every_check(node_url: str) -> None:
    """--launch: the kit starts the node, answers its hello, stops it."""
    name = unique_name("launched")
    command = f"{sys.executable} -m wkctl --broker {node_url} node --name {name} --heartbeat 1"
    code, output = conform(node_url, "--node", name, "--strict", "--json", "--launch", command)
    doc = json.loads(output)
    checks = by_id(doc)
    not_passed = {i: c["detail"] for i, c in checks.items() if c["result"] != "pass"}
    allowed = {"transport.pidbox-queue", "sec.no-credentials"}
    assert set(not_passed) <= allowed, not_passed
    assert code == 0
    for check_id in LAUNCH_ONLY:
        assert checks[check_id]["result"] == "pass", check_id
    assert doc["launched"][-4:] == ["--name", name, "--heartbeat", "1"]


@pytest.mark.celery
def test_launched_celery_worker(
    module_broker_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Celery worker launched by the kit: its Mingle at start conforms, except
    that it adopts a clock above 2**53-1 (DEFECT-8); it stops with worker-offline."""
    require("5.7")
    support = Path(__file__).resolve().parent / "support"
    monkeypatch.setenv("PYTHONPATH", str(support))
    monkeypatch.setenv("WKCTL_TEST_BROKER_URL", module_broker_url)
    name = f"launched-{uuid.uuid4().hex[:6]}@wkctl-test"
    command = (
        f"{sys.executable} -m celery -A celeryapp --broker {module_broker_url} worker "
        f"-P solo -n {name} -E -l INFO --logfile {tmp_path / 'worker.log'}"
    )
    monkeypatch.chdir(support)
    code, output = conform(module_broker_url, "--node", name, "--json", "--launch", command)
    checks = by_id(json.loads(output))
    failed = {i: c["detail"] for i, c in checks.items() if c["result"] == "fail"}
    assert code == 0 and not failed, failed
    for check_id in ("launch.hello", "launch.sync", "events.online", "events.offline"):
        assert checks[check_id]["result"] == "pass", (check_id, checks[check_id]["detail"])
    assert checks["launch.initial-bound"]["result"] == "deviation"
    assert checks["launch.initial-bound"]["known_deviation"] == "DEFECT-8"
    assert "sync with" in (tmp_path / "worker.log").read_text()


# -- broken targets -----------------------------------------------------------------


def run_against(url: str, target: ProbeTarget, timeout: float = 1.0) -> dict[str, Any]:
    outcome = run(
        BrokerSettings(url=url), target.name, select(strict=True), timeout=timeout, strict=True
    )
    return {r.id: r for r in outcome.results}


@pytest.mark.parametrize("breaks", [None, *BROKEN])
def test_broken_target_fails_exactly_its_rule(quiet_url: str, breaks: str | None) -> None:
    freq = 2.0 if breaks == "freq-lie" else 0.5
    with ProbeTarget(quiet_url, breaks=breaks, freq=freq) as target:
        results = run_against(quiet_url, target)
    failed = {i for i, r in results.items() if r.status == "fail"}
    assert failed == BROKEN.get(breaks or "", set()), {
        i: results[i].detail for i in failed ^ BROKEN.get(breaks or "", set())
    }
    for check_id in failed:
        result = results[check_id]
        assert result.detail, check_id
        assert result.expected is not None or result.actual is not None, check_id
        assert result.requirement == CHECKS[check_id].requirement


def test_failure_messages_say_expected_and_actual(quiet_url: str) -> None:
    with ProbeTarget(quiet_url, breaks="no-ticket") as target:
        code, output = conform(quiet_url, "--node", target.name, "--only", "PIDBOX-6")
    assert code == 1
    assert "FAIL  [PIDBOX-6] pidbox.ticket" in output
    assert "expected: " in output and "actual:   <no ticket header>" in output
    assert output.rstrip().splitlines()[-1] == "1 passed, 1 failed, 0 skipped"
    with ProbeTarget(quiet_url, breaks="stale-clock") as target:
        code, output = conform(quiet_url, "--node", target.name, "--only", "clock.adjust-event")
    assert code == 1
    assert "a peer's worker-heartbeat carried clock" in output


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "silent", "garbage"])
def test_unusable_node_is_one_failure_and_the_rest_not_run(quiet_url: str, case: str) -> None:
    """One failure (node.reachable) says why; the checks that need replies
    are not run; a node that sends events still gets its event checks."""
    target = None if case == "missing" else ProbeTarget(quiet_url, breaks=case).start()
    name = target.name if target else unique_name("nobody")
    try:
        started = time.monotonic()
        code, output = conform(quiet_url, "--node", name, "--timeout", "1", "--json")
        took = time.monotonic() - started
        text_code, text = conform(quiet_url, "--node", name, "--timeout", "1")
    finally:
        if target:
            target.stop()
    doc = json.loads(output)
    assert code == 1 == text_code
    assert took < 4.0 + EVENT_WAIT, f"{took:.1f} s"
    failed = [c for c in doc["checks"] if c["result"] == "fail"]
    assert [c["id"] for c in failed] == ["node.reachable"], [(c["id"], c["detail"]) for c in failed]
    reason = failed[0]["detail"]
    if case == "garbage":
        assert "unusable" in reason and "invalid JSON" in reason
    else:
        assert f"node {name!r} did not answer ping within 1 s" in reason
    checks = by_id(doc)
    assert doc["summary"]["failed"] == 1
    assert len(doc["checks"]) == len(select()) + 1
    assert text.count("FAIL ") == 1
    assert text.rstrip().splitlines()[-1].endswith(f"{doc['summary']['not_run']} not run")
    if case == "missing":  # nothing to probe at all
        assert doc["summary"]["not_run"] == len(select())
        assert checks["sec.json-only"]["result"] == "not-run"
        assert len(text.splitlines()) < 40, text  # 293 lines before: one failure per check
    else:  # it emits heartbeats: what only watches them runs
        assert checks["pidbox.ping"]["result"] == "not-run"
        assert checks["sec.json-only"]["result"] == "not-run"
        assert checks["events.envelope"]["result"] == "pass"
        assert checks["events.freq"]["result"] == "pass"


def test_junit_reports_not_run_as_typed_skips(quiet_url: str, tmp_path: Path) -> None:
    junit = tmp_path / "r.xml"
    code, _ = conform(
        quiet_url, "--node", unique_name("nobody"), "--only", "clock", "--junit", str(junit)
    )
    assert code == 1
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    skipped = root.findall(".//skipped")
    assert skipped and all(s.get("type") == "not-run" for s in skipped)
    assert int(root.get("skipped") or 0) == len(skipped)


def test_launch_waits_at_most_launch_wait_with_progress(quiet_url: str) -> None:
    name = unique_name("never")
    started = time.monotonic()
    result = CliRunner().invoke(
        cli,
        ["-b", quiet_url, "conform", "--node", name, "--only", "clock", "--json"]
        + ["--launch", f"{sys.executable} -c 'import time; time.sleep(60)'"]
        + ["--launch-wait", "1.5"],
        catch_exceptions=False,
    )
    took = time.monotonic() - started
    assert result.exit_code == 1
    assert took < 1.5 + EVENT_WAIT + 4.0, f"{took:.1f} s"
    assert f"wkctl: waiting for {name} to answer ping:" in result.stderr
    doc = json.loads(result.stdout)
    (failed,) = [c for c in doc["checks"] if c["result"] == "fail"]
    assert failed["detail"].startswith("the launched node did not answer ping within 1.5 s")
