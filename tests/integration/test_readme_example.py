"""README's library example and its three-worker recipe run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_readme_library_example_runs(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.+?)\n```", text, re.S)
    assert blocks, "README has a library example"
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"))
    for block in blocks:
        result = subprocess.run(
            [sys.executable, "-c", block],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr


def test_readme_cluster_recipe_starts_three_workers_wkctl_reaches(
    tmp_path: Path, broker_pool: object, amqp_url: str
) -> None:
    """README's "No cluster at hand?" block, run as written (its broker URL
    pointed at a vhost of this test's own): three Celery workers start and
    ``wkctl hello --expect 3``, the quickstart's first command, answers."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from support.requires import isolated_url
    from wkctl.protocol.broker import BrokerSettings
    from wkctl.protocol.client import Client

    text = (REPO / "README.md").read_text()
    intro = text.index("No cluster at hand?")
    block = re.search(r"```sh\n(.+?)\n```", text[intro:], re.S)
    assert block, "README's cluster recipe has a sh block"
    default = "amqp://guest:guest@127.0.0.1:5672//"
    assert default in block.group(1)
    if not broker_pool.can_make_vhosts:  # type: ignore[attr-defined]
        pytest.skip("the recipe's workers need a vhost of their own (a local RabbitMQ)")
    url = isolated_url(broker_pool, "amqp")  # type: ignore[arg-type]
    script = block.group(1).replace(default, url)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("CELERY_BROKER_URL", None)
    try:
        subprocess.run(["bash", "-ec", script], cwd=tmp_path, env=env, check=True, timeout=60)
        deadline = time.monotonic() + 30
        replied: dict[str, object] = {}
        settings = BrokerSettings(url=url)
        with settings.connection() as conn, Client(conn, settings.names) as client:
            while len(replied) < 3 and time.monotonic() < deadline:
                replied = client.ping(timeout=1.0, expect=3).replies
        # the recipe's own workers, not any three nodes
        assert sorted(name.split("@")[0] for name in replied) == ["w1", "w2", "w3"], replied
        wkctl = [sys.executable, "-m", "wkctl", "--broker", url]
        done = subprocess.run(
            [*wkctl, "hello", "--expect", "3"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "3 node(s) replied" in done.stdout, done.stdout
    finally:
        # a worker writes its pid file only once it started: wait for the
        # three the recipe launched (a failed launch costs this wait only)
        deadline = time.monotonic() + 15
        while len(list(tmp_path.glob("w*.pid"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        for pidfile in tmp_path.glob("w*.pid"):
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        deadline = time.monotonic() + 20
        while list(tmp_path.glob("w*.pid")) and time.monotonic() < deadline:
            time.sleep(0.1)  # a worker removes its pid file as it exits
        assert not list(tmp_path.glob("w*.pid")), "a detached worker did not stop"
