"""What operators read when something is off (issue 12's smaller items),
against the real brokers and the session's real Celery workers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from support.cluster import Cluster, run_cli, run_wkctl, shared_cluster

pytestmark = [pytest.mark.broker]


def _env(tmp_path: Path) -> dict[str, str]:
    return {"XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}


def test_refused_credentials_say_so(amqp_url: str, tmp_path: Path) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:not-the-password@")
    assert wrong != amqp_url
    proc = run_wkctl("-b", wrong, "hello", "--timeout", "0.5", env=_env(tmp_path))
    assert proc.returncode == 4
    (line,) = proc.stderr.strip().splitlines()
    assert "ACCESS_REFUSED" in line and "refused the credentials" in line
    assert "is it running" not in line and "not-the-password" not in line


def test_unknown_vhost_says_so(amqp_url: str, tmp_path: Path) -> None:
    base = amqp_url.rsplit("/", 1)[0]
    proc = run_wkctl(
        "-b", f"{base}/no-such-vhost-{uuid.uuid4().hex[:6]}", "clock", env=_env(tmp_path)
    )
    assert proc.returncode == 4
    (line,) = proc.stderr.strip().splitlines()
    assert "refused the virtual host" in line and "is it running" not in line


def test_unreachable_broker_still_asks_whether_it_runs(tmp_path: Path) -> None:
    proc = run_wkctl("-b", "redis://127.0.0.1:1/0", "clock", env=_env(tmp_path))
    assert proc.returncode == 4 and "(is it running? choose another" in proc.stderr


def test_tail_type_matching_no_known_event_type_warns(tmp_path: Path) -> None:
    proc = run_wkctl(
        "tail", "--type", "hartbeat", "--type", "worker-*", "--duration", "0.2", env=_env(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warning.startswith("wkctl: warning: --type 'hartbeat' matches no known event type")
    assert "did you mean 'worker-heartbeat'?" in warning
    custom = run_wkctl("tail", "--type", "task-custom", "--duration", "0.2", env=_env(tmp_path))
    assert "warning" not in custom.stderr  # custom task-<name> events exist


@pytest.fixture(scope="module")
def cluster(broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster("amqp", broker_pool, worker_pool)


@pytest.mark.celery
def test_revoke_of_300_ids_prints_short_lines_and_all_of_it_in_json(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [str(uuid.uuid4()) for _ in range(300)]
    code, out, err = run_cli([*cluster.args, "revoke", *ids, "--expect", "3"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 5  # header, three nodes, footer
    assert max(len(line) for line in lines) < 200, max(len(line) for line in lines)
    assert all("…" in line for line in lines[1:4])
    code, out, err = run_cli([*cluster.args, "revoke", *ids, "--expect", "3", "--json"], capsys)
    assert code == 0, err
    answers = json.loads(out)
    assert sorted(answers) == cluster.hostnames
    assert all(ids[-1] in value["ok"] for value in answers.values())
