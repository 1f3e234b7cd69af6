"""A session-wide Celery cluster per broker for the CLI tests, and ways to run ``wkctl``.

The workers are started once per broker for the whole session (three: two
5.7, one 5.4), which keeps the suite fast; every ``test_cli_*`` module and
the other modules that drive the CLI against a cluster share it.
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

from .celeryapp import client_app
from .requires import isolated_url, require_celery
from .workers import REPO, CeleryWorker, celery_python


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
