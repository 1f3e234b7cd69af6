"""``wkctl clock``, ``revoked`` and ``revoke`` against real Celery workers (5.7 + 5.4)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from support.cluster import Cluster, run_cli, run_wkctl, shared_cluster

pytestmark = [pytest.mark.broker, pytest.mark.celery]


@pytest.fixture(scope="module", params=["amqp", "redis"])
def cluster(request: pytest.FixtureRequest, broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster(request.param, broker_pool, worker_pool)


def celery_inspect(cluster: Cluster, method: str) -> dict[str, Any]:
    app = cluster.celery()
    try:
        return getattr(app.control.inspect(timeout=1.0), method)() or {}
    finally:
        app.close()


def test_clock_json_matches_celery_inspect_clock(cluster: Cluster, capsys) -> None:
    before = celery_inspect(cluster, "clock")
    code, out, err = run_cli([*cluster.args, "clock", "--json", "--expect", "3"], capsys)
    after = celery_inspect(cluster, "clock")
    assert code == 0, err
    data = json.loads(out)
    assert sorted(data) == sorted(before) == cluster.hostnames
    for node, value in data.items():
        assert isinstance(value, int)
        # Lamport clocks only move forward: ours sits between Celery's two readings
        assert before[node]["clock"] <= value <= after[node]["clock"], node


def test_revoked_json_matches_celery_after_celerys_own_revoke(cluster: Cluster, capsys) -> None:
    task_id = f"by-celery-{uuid.uuid4()}"
    app = cluster.celery()
    try:
        app.control.revoke(task_id, reply=True, timeout=2.0, limit=3)
    finally:
        app.close()
    code, out, err = run_cli([*cluster.args, "revoked", "--json", "--expect", "3"], capsys)
    assert code == 0, err
    data = json.loads(out)
    celery = celery_inspect(cluster, "revoked")
    assert sorted(data) == cluster.hostnames
    for node, ids in data.items():
        assert task_id in ids
        assert sorted(ids) == sorted(celery[node]), node


def test_revoke_reaches_every_worker(cluster: Cluster, capsys) -> None:
    ids = [f"by-wkctl-{uuid.uuid4()}", "not-a-uuid:7"]
    code, out, err = run_cli(
        [*cluster.args, "revoke", *ids, "--json", "--expect", "3", "--timeout", "5"], capsys
    )
    assert code == 0, err
    replies = json.loads(out)
    assert sorted(replies) == cluster.hostnames
    assert all("flagged as revoked" in r["ok"] for r in replies.values()), replies
    celery = celery_inspect(cluster, "revoked")
    assert all(set(ids) <= set(celery[node]) for node in cluster.hostnames), celery


def test_revoke_terminate_with_signal_and_human_output(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli(
        [
            *cluster.args,
            "revoke",
            f"t-{uuid.uuid4()}",
            "--terminate",
            "--signal",
            "kill",
            "--expect",
            "3",
        ],
        capsys,
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NODE", "ANSWER"]
    assert sorted(line.split()[0] for line in lines[1:4]) == cluster.hostnames
    assert lines[-1].startswith("3 node(s) replied")


def test_bad_signal_is_a_usage_error(tmp_path) -> None:
    proc = run_wkctl("revoke", "x", "--signal", "NOPE", env={"XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "wkctl: error: --signal: unknown signal 'NOPE' (for example TERM, KILL, INT, HUP, USR1)"
    )


def test_clock_subprocess_and_no_reply_message(cluster: Cluster, tmp_path) -> None:
    proc = run_wkctl(*cluster.args, "clock", "--yaml", "--expect", "3")
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert [line.split(":")[0] for line in lines] == cluster.hostnames
    empty = run_wkctl("revoked", "--timeout", "0.2", env={"XDG_STATE_HOME": str(tmp_path)})
    assert empty.returncode == 1
    # no broker configured: the first line says the embedded one was used, and where
    assert empty.stderr.strip() == (
        "wkctl: error: no node replied to revoked within 0.2 s on the embedded broker at "
        f"{tmp_path / 'wkctl' / 'broker'} (no broker configured; choose one with --broker, "
        "WKCTL_BROKER_URL, -A APP or broker_url in wkctl.yaml)"
    )
