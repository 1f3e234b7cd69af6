"""Importing the package is cheap (measured in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, wkctl.protocol; print(sorted(m for m in sys.modules if m.startswith('wkctl.protocol.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "state" not in out and "binding" not in out, out
