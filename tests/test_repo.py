"""Repository-level promises: CI runs README's test command verbatim; compose file is sane."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- test-command -->\s*```(?:sh|bash|console)?\n(.+?)\n```", text, re.S)
    assert match, "README must give the test command in a block after <!-- test-command -->"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_test_command()
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in lines, f".ci/run must run exactly: {command}"


def test_compose_file_parses_and_names_its_services() -> None:
    compose = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    services = compose["services"]
    assert {"rabbitmq", "redis", "worker1", "worker2", "worker3", "wkctl-node"} <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), f"{name} names no image"
        assert "command" in service or name in ("rabbitmq",), name
    assert services["rabbitmq"]["image"].startswith("rabbitmq:")
    assert services["redis"]["image"].startswith("redis:")
    assert "node" in services["wkctl-node"]["command"]
    assert (REPO / "docker" / services["wkctl-node"]["build"]["dockerfile"].split("/")[-1]).exists()


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
