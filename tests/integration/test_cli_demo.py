"""``wkctl demo`` end to end on the embedded broker: every step, and no stray node."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cluster import REPO

DEMO_NODE = re.compile(r"demo\d-[0-9a-f]{4}@[^\s,]+")


def node_processes(names: set[str]) -> list[int]:
    """Pids of live processes whose command line names one of ``names``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if state != "Z" and any(arg.decode(errors="replace") in names for arg in cmdline):
            pids.append(int(entry.name))
    return pids


def demo_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look for strays")
def test_demo_runs_every_step_and_leaves_no_node(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wkctl", "demo", "--tail-seconds", "2", "--dump-seconds", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env=demo_env(tmp_path),
        cwd=str(REPO),
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Traceback" not in proc.stderr
    names = set(DEMO_NODE.findall(out.splitlines()[1]))
    assert len(names) == 3, out
    for heading in ("== 1. hello", "== 2. an election", "== 3. 2 s of events", "== 4. the cluster"):
        assert heading in out
    hello = out.split("== 1.")[1].split("== 2.")[0]
    assert all(f"{name}" in hello and "demo-revoked-id" in hello for name in names)
    election = out.split("== 2.")[1].split("== 3.")[0]
    winner = re.search(r"Winner\s+(\S+)", election)
    assert winner and winner.group(1) in names, election
    dump = out.split("== 4.")[1]
    assert "Workers (3)" in dump and all(name in dump for name in names)
    assert out.rstrip().endswith("demo nodes stopped.")
    assert node_processes(names) == []


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look for strays")
def test_demo_interrupted_stops_its_nodes(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wkctl", "demo", "--tail-seconds", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(tmp_path),
        cwd=str(REPO),
    )
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "== 3." not in seen and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
    started = next((line for line in seen.splitlines() if line.startswith("started ")), "")
    names = set(DEMO_NODE.findall(started))
    assert len(names) == 3, seen
    assert len(node_processes(names)) == 3
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "wkctl: interrupted"
    assert "Traceback" not in err
    assert node_processes(names) == []
