"""``wkctl hello`` against real Celery workers (5.7 and 5.4 mixed) on RabbitMQ and Redis.

The session's cluster comes from ``support.cluster`` (shared with the other
modules that drive the CLI against Celery workers).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster, run_cli, run_wkctl, shared_cluster


@pytest.fixture(scope="module", params=["amqp", "redis"])
def cluster(request: pytest.FixtureRequest, broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster(request.param, broker_pool, worker_pool)


pytestmark = [pytest.mark.broker, pytest.mark.celery]


# -- tests --------------------------------------------------------------------


def test_hello_json_is_what_every_worker_holds(cluster: Cluster, capsys) -> None:
    task_id = f"revoked-by-celery-{uuid.uuid4()}"
    app = cluster.celery()
    try:
        app.control.revoke(task_id, reply=True, timeout=2.0, limit=len(cluster.workers))
    finally:
        app.close()
    code, out, err = run_cli(
        [*cluster.args, "hello", "--json", "--expect", "3", "--timeout", "5"], capsys
    )
    assert code == 0, err
    data = json.loads(out)
    assert sorted(data) == cluster.hostnames
    for node, info in data.items():
        assert set(info) == {"clock", "revoked"}
        assert isinstance(info["clock"], int) and info["clock"] > 0, node
        assert isinstance(info["revoked"], list)
        assert task_id in info["revoked"], node  # 5.4's mapping form normalized too


def test_hello_raw_shows_both_wire_forms(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli(
        [
            *cluster.args,
            "hello",
            "--raw",
            "--expect",
            "3",
            "--timeout",
            "5",
            "--revoked",
            f"raw-{uuid.uuid4()}",
        ],
        capsys,
    )
    assert code == 0, err
    bodies = [json.loads(line) for line in out.splitlines()]
    assert len(bodies) == 3
    forms = {}
    for body in bodies:
        ((node, value),) = body.items()
        forms[node] = type(value["revoked"]).__name__
    by_version = {w.hostname: w.version for w in cluster.workers}
    for node, form in forms.items():
        assert form == ("dict" if by_version[node] == "5.4" else "list"), (node, form)


def test_hello_revoked_ids_are_merged_by_celery_workers(cluster: Cluster, capsys) -> None:
    seed = f"seeded-{uuid.uuid4()}"
    code, _, err = run_cli(
        [*cluster.args, "hello", "--expect", "3", "--timeout", "5", "--revoked", seed], capsys
    )
    assert code == 0, err
    app = cluster.celery()
    try:
        revoked = app.control.inspect(timeout=1.0).revoked() or {}
    finally:
        app.close()
    assert sorted(revoked) == cluster.hostnames
    assert all(seed in ids for ids in revoked.values()), revoked


def test_hello_expect_answers_in_milliseconds_with_its_own_figure(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli(
        [*cluster.args, "-v", "hello", "--expect", "3", "--timeout", "5", "--stats"], capsys
    )
    assert code == 0, err
    stats = json.loads(next(line for line in err.splitlines() if line.startswith("{")))
    assert stats["replied"] == 3 and stats["expect"] == 3
    assert 0 < stats["elapsed_ms"] < 1000  # Celery always waits its full second
    assert stats["waited_ms"] < 2000
    assert "3/3 node(s) replied" in err
    # human output: an aligned table with every worker
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "CLOCK", "REVOKED", "REVOKED", "IDS"]
    assert sorted(line.split()[0] for line in lines[1:4]) == cluster.hostnames
    assert "\x1b[" not in out  # no color when not a terminal


def test_hello_expect_more_than_exist_fails_saying_how_many(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli(
        [*cluster.args, "hello", "--json", "--expect", "4", "--timeout", "0.5"], capsys
    )
    assert code == 1
    assert len(json.loads(out)) == 3  # what arrived is still printed
    assert err.strip().splitlines()[-1] == (
        "wkctl: error: only 3 of 4 expected node(s) replied to hello within 0.5 s"
    )


def test_hello_as_a_subprocess_end_to_end(cluster: Cluster) -> None:
    proc = run_wkctl(*cluster.args, "hello", "--json", "--expect", "3", "--timeout", "5")
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == cluster.hostnames
    assert "Traceback" not in proc.stderr


def test_hello_without_nodes_and_without_broker(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    proc = run_wkctl("hello", "--timeout", "0.3", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(
        "wkctl: error: no node replied to hello within 0.3 s on the embedded broker at "
        f"{tmp_path / 'state' / 'wkctl' / 'broker'} (no broker configured; choose one with"
    )
    proc = run_wkctl("-b", "amqp://guest:secret@127.0.0.1:1//", "hello", env=env)
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wkctl: error: cannot connect to broker")
    assert "secret" not in proc.stderr and "Traceback" not in proc.stderr
