"""README's library example runs as written (in a fresh interpreter)."""

from __future__ import annotations

import re
from pathlib import Path

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
