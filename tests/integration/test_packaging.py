"""What `pip install .` gives a new user: one `wkctl` namespace, schemas inside."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (found,) = out.glob("wkctl-*.whl")
    return found


def test_wheel_installs_only_the_wkctl_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops <= {"wkctl", next(t for t in tops if t.endswith(".dist-info"))}, tops
    shipped = {
        Path(n).name for n in names if n.startswith("wkctl/schemas/") and n.endswith(".json")
    }
    in_repo = {p.name for p in (REPO / "schemas").glob("*.json")}
    assert in_repo and in_repo <= shipped
    assert "wkctl/py.typed" in names and "wkctl/protocol/py.typed" in names


def test_fresh_venv_gets_a_working_wkctl(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "WKCTL_BROKER_URL", "CELERY_BROKER_URL")
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=clean, cwd=tmp_path, timeout=120
        )

    assert run(str(env_dir / "bin" / "wkctl"), "--version").returncode == 0
    assert "Commands:" in run(str(env_dir / "bin" / "wkctl"), "--help").stdout
    listing = run(str(env_dir / "bin" / "wkctl"), "schema", "list")
    assert listing.returncode == 0 and "hello-reply" in listing.stdout, listing.stderr
    for module in ("protocol", "cli", "schemas"):
        result = run(str(python), "-c", f"import {module}")
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, module
    assert run(str(python), "-c", "import wkctl.protocol, wkctl.cli.main").returncode == 0
