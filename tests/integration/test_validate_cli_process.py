"""``wkctl validate`` as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "celery-5.7-amqp-sample.ndjson"


def test_real_subprocess(tmp_path: Path) -> None:
    """As a user runs it: ``python -m wkctl`` through the real entry point."""
    lines = SAMPLE.read_text().splitlines()
    heartbeat = json.loads(next(line for line in lines if "worker-heartbeat" in line))["body"]
    bad_path = tmp_path / "bad.ndjson"
    bad_path.write_text(json.dumps(dict(heartbeat, pid=-3)) + "\n")
    bad = str(bad_path)
    ok = subprocess.run(
        [sys.executable, "-m", "wkctl", "validate", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "30 messages: 30 valid, 0 invalid" in ok.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "wkctl", "validate", "--json", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["errors"][0]["path"] == "/pid"
    usage = subprocess.run(
        [sys.executable, "-m", "wkctl", "validate", "--kind", "nope", bad],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "wkctl", "schema", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0 and "hello-reply" in listing.stdout
