"""``wkctl hello`` against real Celery workers (5.7 and 5.4 mixed) on RabbitMQ and Redis.

The cluster helpers here (:func:`shared_cluster`, :func:`run_cli`) are used
by the other ``test_cli_*`` modules too: the workers are started once per
broker for the whole session, which keeps the suite fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.celeryapp import client_app
from support.workers import CeleryWorker, celery_python

REPO = Path(__file__).resolve().parent.parent

# -- shared helpers -----------------------------------------------------------


@dataclass
class Cluster:
    """Three Celery workers (two 5.7, one 5.4) on one isolated broker namespace.

    The cluster also has exchange and queue names of its own (Celery's
    ``control_exchange`` / ``event_exchange`` and a task queue), so that
    nothing else on the broker can answer or steal its tasks, and so that
    wkctl is exercised with non-default names through its config file.
    """

    kind: str
    url: str
    tag: str
    config: Path
    workers: list[CeleryWorker] = field(default_factory=list)

    @property
    def hostnames(self) -> list[str]:
        return sorted(w.hostname for w in self.workers)

    @property
    def control_exchange(self) -> str:
        return f"ctl{self.tag}"

    @property
    def event_exchange(self) -> str:
        return f"ev{self.tag}"

    @property
    def queue(self) -> str:
        return f"q{self.tag}"

    @property
    def args(self) -> list[str]:
        """Global wkctl options that reach this cluster."""
        return ["--config", str(self.config)]

    def celery(self) -> Any:
        return client_app(
            self.url,
            control_exchange=self.control_exchange,
            event_exchange=self.event_exchange,
            task_default_queue=self.queue,
        )


_CLUSTERS: dict[str, Cluster] = {}


def _versions() -> list[str]:
    """Two of the newest Celery and one 5.4 (where a 5.4 interpreter exists;
    CI must have one: conftest fails the run there otherwise)."""
    if celery_python("5.4") is None:
        from conftest import require_celery

        require_celery("5.4")  # skips locally, fails under CI=true
    return ["5.7", "5.7", "5.4"]


def shared_cluster(kind: str, broker_pool: Any, worker_pool: Any) -> Cluster:
    """The session's cluster on ``kind`` (started on first use, restarted if a worker died)."""
    cluster = _CLUSTERS.get(kind)
    if cluster is not None and all(w.alive() for w in cluster.workers):
        return cluster
    if cluster is not None:
        worker_pool.stop(cluster.workers)
    else:
        from conftest import isolated_url

        tag = uuid.uuid4().hex[:6]
        config = worker_pool.logdir / f"wkctl-{kind}-{tag}.yaml"
        cluster = Cluster(kind, isolated_url(broker_pool, kind), tag, config)
        config.write_text(
            json.dumps(
                {
                    "broker_url": cluster.url,
                    "control_exchange": cluster.control_exchange,
                    "event_exchange": cluster.event_exchange,
                }
            )
        )
    env = {
        "WKCTL_TEST_CONTROL_EXCHANGE": cluster.control_exchange,
        "WKCTL_TEST_EVENT_EXCHANGE": cluster.event_exchange,
    }
    started: list[CeleryWorker] = []
    for version in _versions():
        started += worker_pool.start(
            cluster.url,
            n=1,
            version=version,
            wait=False,
            prefix="c",
            env=env,
            extra_args=("-Q", cluster.queue),
        )
    for worker in started:
        worker.wait_ready()
    cluster.workers = started
    _CLUSTERS[kind] = cluster
    return cluster


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``wkctl`` in-process through ``main`` (the real error policy)."""
    from wkctl.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1), out, err


def run_wkctl(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """``python -m wkctl ...`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "wkctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=str(REPO),
    )


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
