"""The release matrix: every wkctl operation against clusters of real Celery
workers of each release, on RabbitMQ and on Redis.

A cell is one release on one broker: a ``wkctl node`` holding a revoked id
nobody else has, then three workers of the release (started after the node,
so their Mingle syncs from it), and, in order:

* ``hello``: every worker and the node answer, with clock and revoked ids;
* ``clock/revoked``: ``wkctl revoke`` reaches every member, ``wkctl revoked``
  and ``wkctl clock`` read it back from each;
* ``mingle``: both ways: the workers adopted the node's id at start, and a
  second ``wkctl node`` started with only the workers left adopts theirs;
* ``tail``: the events of a task run by a worker (task-received,
  task-succeeded: ``task.multi`` batches expanded) and heartbeats;
* ``dump``: the cluster state lists every worker;
* ``elect``: ``wkctl elect`` among the three workers reports a winner and no
  worker dies; for releases before 5.4, which can die even among three
  (DEFECT-1), it refuses without ``--force`` and nobody dies;
* ``validate``: everything captured on the broker during the above
  validates with ``wkctl validate --capture``;
* ``conform``: ``wkctl conform`` against one worker passes (known deviations
  allowed), and afterwards every other worker still answers Celery's own
  ``celery inspect ping`` (the kit harmed nobody else);
* ``DEFECT-15``: last, Celery's own unknown-matcher broadcast silences
  exactly the workers the kit's rule (``wkctl.conform.hazards``) predicts
  from the release and its kombu: all of them on Redis with kombu 5.2-5.6,
  none elsewhere.

By default the suite runs the CI subset (``support.releases.CI_SUBSET``):
5.4.0 with its own kombu 5.3.7 (mapping form of revoked ids, DEFECT-15) from
``.venv-celery54`` on Redis and 5.7.0 (list form) from the test venv on
RabbitMQ, leaving conform and DEFECT-15 to test_conform_live and
test_conform_hazards.  ``--release-matrix`` runs every operation for every
release of ``support.releases.RELEASES`` on both brokers, from cached venvs of
their own; ``--release-matrix=5.2.7,5.7.0`` a selection.  The matrix is printed at the
end of the run (``pytest_terminal_summary`` in conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.brokers import BrokerPool
from support.capture import Capture
from support.celeryapp import client_app
from support.cliproc import wait_for_text, wkctl_popen
from support.nodes import NodeProcess, unique_name
from support.releases import (
    CI_SKIPS,
    CI_SUBSET,
    OPERATIONS,
    RELEASES,
    RESULTS,
    SECONDS,
    NotAvailable,
    Release,
    release,
    venv_python,
)
from support.workers import HERE, REPO, CeleryWorker, WorkerPool, celery_python
from wkctl.conform.hazards import PeerSoftware, matcher_outage
from wkctl.protocol.election import SAFE_FROM_THREE

pytestmark = [pytest.mark.broker, pytest.mark.celery]


def _selected(config: pytest.Config) -> list[tuple[str, str]]:
    option = config.getoption("--release-matrix")
    if not option:
        return list(CI_SUBSET)
    if option == "all":
        versions = [r.version for r in RELEASES]
    else:
        versions = [v.strip() for v in option.split(",") if v.strip()]
    return [(version, broker) for version in versions for broker in ("amqp", "redis")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "matrix_cell" in metafunc.fixturenames:
        cells = _selected(metafunc.config)
        metafunc.parametrize("matrix_cell", cells, ids=[f"{v}-{b}" for v, b in cells])


def _kombu_of(python: str) -> str:
    done = subprocess.run(
        [python, "-c", "import kombu, celery; print(kombu.__version__, celery.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise NotAvailable(f"{python} cannot import kombu/celery: {done.stderr.strip()[-300:]}")
    return done.stdout.strip()


def interpreter(rel: Release, full: bool) -> str:
    """The release's interpreter: its cached venv under --release-matrix, else
    the suite's own side venvs (which must pair the release with its kombu)."""
    if full:
        python = venv_python(rel)
    else:
        python = celery_python("5.7" if rel.version == "5.7.0" else rel.version[:3]) or ""
        if not python:
            raise NotAvailable(
                f"no interpreter with Celery {rel.version} (see README's test command)"
            )
    kombu, celery = _kombu_of(python).split()
    if celery != rel.version:
        raise AssertionError(f"{python} has Celery {celery}, not {rel.version}")
    if rel.version != "5.7.0" and kombu != rel.kombu:
        raise AssertionError(
            f"{python} pairs Celery {celery} with kombu {kombu}, not its own {rel.kombu}"
        )
    return python


def wkctl(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wkctl", "-b", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
    )


def wkctl_json(url: str, *args: str, timeout: float = 60.0) -> Any:
    done = wkctl(url, *args, "--json", timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"wkctl {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    return json.loads(done.stdout)


def celery_ping(python: str, url: str, timeout: float = 1.5) -> dict[str, Any]:
    """``celery inspect ping`` of the release itself; the nodes that answered.

    5.0.5-5.2.7 print "1 node online." after the JSON: only the line that
    holds the JSON object is read."""
    done = subprocess.run(
        [
            python,
            "-m",
            "celery",
            "-A",
            "celeryapp",
            "-b",
            url,
            "inspect",
            "ping",
            "--json",
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(HERE),
        env={**_env(url), "PYTHONPATH": str(HERE)},
    )
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return dict(json.loads(line))
    return {}


def _env(url: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["WKCTL_TEST_BROKER_URL"] = url
    env.pop("CELERY_BROKER_URL", None)
    return env


@dataclass
class Cell:
    """One release on one broker: what ran, in order, and how it went."""

    rel: Release
    broker: str
    url: str
    python: str
    workers: list[CeleryWorker] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)

    def run(self, op: str, body: Callable[[], str | None]) -> None:
        started = time.monotonic()
        try:
            detail = body() or ""
        except Exception as exc:  # recorded as a red cell; the test fails at the end
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.results[op] = f"FAIL {first[:300]}"
        else:
            self.results[op] = f"ok {detail} ({time.monotonic() - started:.1f} s)".replace(
                "  ", " "
            )
        RESULTS[(self.rel.version, self.broker)] = dict(self.results)

    @property
    def names(self) -> list[str]:
        return [w.hostname for w in self.workers]


def test_release_matrix(
    matrix_cell: tuple[str, str],
    broker_pool: BrokerPool,
    worker_pool: WorkerPool,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    version, broker = matrix_cell
    rel = release(version)
    full = bool(request.config.getoption("--release-matrix"))
    try:
        python = interpreter(rel, full)
    except NotAvailable as exc:
        RESULTS[(rel.version, broker)] = {op: f"not run: {exc}" for op in OPERATIONS}
        if full or rel.python is not None:
            pytest.skip(str(exc))
        raise
    from conftest import isolated_url

    url = isolated_url(broker_pool, broker)
    cell = Cell(rel, broker, url, python)
    skips = {} if full else CI_SKIPS
    node_only = f"node-only-{uuid.uuid4()}"
    started = time.monotonic()
    node = NodeProcess.start(
        url, unique_name("wkm"), "--heartbeat", "1", "--revoked", node_only, logdir=tmp_path
    )
    capture = Capture(url)
    capture.start()
    try:
        cell.workers = worker_pool.start(url, n=3, version=rel.version, python=python, prefix="m")
        _operations(cell, node, node_only, capture, tmp_path, skips)
    finally:
        SECONDS[(rel.version, broker)] = time.monotonic() - started
        capture.stop()
        node.stop()
        worker_pool.stop(cell.workers)
        broker_pool.release(url)
    red = {op: text for op, text in cell.results.items() if text.startswith("FAIL")}
    assert not red, red


def _operations(
    cell: Cell,
    node: NodeProcess,
    node_only: str,
    capture: Capture,
    tmp: Path,
    skips: dict[str, str],
) -> None:
    url, names = cell.url, cell.names
    revoked_id = f"matrix-{uuid.uuid4()}"

    def hello() -> str:
        replies = wkctl_json(url, "hello", "--expect", "4", "--timeout", "5")
        missing = set(names + [node.name]) - set(replies)
        assert not missing, f"no hello reply from {sorted(missing)}"
        for name in names:
            assert isinstance(replies[name]["clock"], int), replies[name]
        return f"{len(replies)} replies"

    def clock_revoked() -> str:
        done = wkctl(url, "revoke", revoked_id, "--expect", "4", "--timeout", "5")
        assert done.returncode == 0, done.stderr
        revoked = wkctl_json(url, "revoked", "--expect", "4", "--timeout", "5")
        for name in names + [node.name]:
            assert revoked_id in revoked.get(name, []), (
                f"{name} lacks the revoked id: {revoked.get(name)}"
            )
        clocks = wkctl_json(url, "clock", "--expect", "4", "--timeout", "5")
        assert set(names) <= set(clocks) and all(isinstance(clocks[n], int) for n in names), clocks
        return ""

    def mingle() -> str:
        # node -> workers: they started after the node and adopted its id
        revoked = wkctl_json(url, "revoked", "--expect", "4", "--timeout", "5")
        for name in names:
            assert node_only in revoked.get(name, []), f"{name} did not sync the node's id"
        # workers -> node: only the workers left to answer a new node's hello
        node.stop()
        second = NodeProcess.start(url, unique_name("wkn"), logdir=tmp)
        try:
            assert second.wait_log(f"mingle: sync with {len(names)} nodes", 10), (
                f"the second node did not sync with the {len(names)} workers: {second.log_text()[-300:]}"
            )
            revoked = wkctl_json(url, "revoked", "--expect", "4", "--timeout", "5")
            got = set(revoked.get(second.name, []))
            assert {revoked_id, node_only} <= got, f"the second node holds {sorted(got)[:5]}"
        finally:
            second.stop()
        return "both ways"

    def tail() -> str:
        out = tmp / "tail.ndjson"
        with out.open("wb") as sink:
            proc = wkctl_popen(["-b", url, "tail", "--json"], stdout=sink, stderr=subprocess.PIPE)
            try:
                # a heartbeat through tail: it is subscribed; then a task's events
                wait_for_text(out, '"worker-heartbeat"', proc, timeout=20)
                app = client_app(url)
                try:
                    app.send_task("tasks.add", args=(2, 3))
                finally:
                    app.close()
                wait_for_text(out, '"task-succeeded"', proc, timeout=20)
            finally:
                proc.terminate()
                proc.wait(15)
        events = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        types = {e.get("type") for e in events if e.get("hostname") in names}
        assert {"task-received", "task-succeeded", "worker-heartbeat"} <= types, sorted(
            t for t in types if t
        )
        return f"{len(events)} events"

    def dump() -> str:
        state = wkctl_json(url, "dump", "--duration", "3")
        missing = set(names) - set(state.get("workers", {}))
        assert not missing, f"dump lacks {sorted(missing)}"
        return ""

    def elect() -> str:
        done = wkctl(
            url,
            "elect",
            "--topic",
            "task",
            "--action",
            json.dumps({"task": "tasks.add", "args": [2, 3]}),
            "--json",
            "--timeout",
            "10",
        )
        data = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
        time.sleep(1.0)
        dead = [w.hostname for w in cell.workers if not w.alive()] + list(data.get("dead", []))
        assert not dead, f"workers died: {dead}"
        if tuple(int(p) for p in cell.rel.version.split(".")[:2]) < SAFE_FROM_THREE:
            # Celery before 5.4 can die even among three (a 5.1.2 worker did,
            # spec DEFECT-1): wkctl elect must refuse without --force.
            assert done.returncode == 1 and "refusing to hold an election" in done.stderr, (
                done.returncode,
                done.stderr[-300:],
            )
            return "refused (DEFECT-1: stock Celery before 5.4)"
        decisions = data.get("decisions", {})
        picked = {d.get("winner") for d in decisions.values() if isinstance(d, dict)}
        picked = {str(p) for p in picked | {data.get("winner")} if p}
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit {done.returncode}"
        assert picked, f"no winner reported: {why}"
        strangers = [p for p in picked if not any(p.startswith(n) for n in names)]
        assert not strangers, f"winners that are not workers of the cell: {strangers}"
        if done.returncode != 0:
            # Celery's partial-heap decisions (DEFECT-2) are reported, not hidden:
            # the cell stays green as long as a winner is named and nobody died
            assert "participants disagree" in why, why
            return f"participants disagree (DEFECT-2): {sorted(picked)}"
        return f"winner {sorted(picked)[0].split('@')[0]}"

    def validate() -> str:
        capture.stop()
        path = capture.write_ndjson(tmp / "captured.ndjson")
        done = subprocess.run(
            [sys.executable, "-m", "wkctl", "validate", "--capture", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=str(REPO),
        )
        assert done.returncode == 0, (done.stdout + done.stderr).strip()[-400:]
        return f"{len(capture.records)} messages"

    def conform() -> str:
        target = names[0]
        done = wkctl(url, "conform", "--node", target, "--json", timeout=300)
        doc = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
        failed = {c["id"]: c.get("detail") for c in doc.get("checks", []) if c["result"] == "fail"}
        # the workers alive now (an earlier operation may have killed one,
        # which that operation reports) must all still answer afterwards
        others = {w.hostname for w in cell.workers[1:] if w.alive()}
        pinged = set(celery_ping(cell.python, url))
        assert others <= pinged, f"after conform, no ping reply from {sorted(others - pinged)}"
        if done.returncode != 0 and not failed:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise AssertionError(f"exit {done.returncode}: {lines[-1] if lines else 'no output'}")
        assert not failed, f"failed checks: {failed}"
        return doc.get("summary") and f"{doc['summary']['known_deviations']} deviations" or ""

    def defect15() -> str:
        # Last: on an affected release it silences the whole cell.  The
        # rule conform uses must predict exactly what the workers do.
        kombu = _kombu_of(cell.python).split()[0]
        alive = [w.hostname for w in cell.workers if w.alive()]
        peers = {n: PeerSoftware(n, "celery", cell.rel.version, kombu) for n in alive}
        predicted = set(matcher_outage(cell.broker, peers))
        app = client_app(url)
        try:
            app.control.broadcast("ping", pattern=alive[0], matcher="nosuch")
        finally:
            app.close()
        time.sleep(1.0)
        silent = set(alive) - set(celery_ping(cell.python, url))
        assert silent == predicted, f"silenced {sorted(silent)}, predicted {sorted(predicted)}"
        return "silences all" if silent else "harmless"

    for op, body in (
        ("hello", hello),
        ("clock/revoked", clock_revoked),
        ("mingle", mingle),
        ("tail", tail),
        ("dump", dump),
        ("elect", elect),
        ("validate", validate),
        ("conform", conform),
        ("DEFECT-15", defect15),
    ):
        if op in skips:
            cell.results[op] = f"not run: {skips[op]}"
            RESULTS[(cell.rel.version, cell.broker)] = dict(cell.results)
        else:
            cell.run(op, body)
