"""Importing the package is cheap, and the observers need no kombu (each in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import wkctl.protocol as protocol


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, wkctl.protocol; print(sorted(m for m in sys.modules if m.startswith('wkctl.protocol.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "state" not in out and "binding" not in out, out


def test_observers_need_no_kombu() -> None:
    """The sans-IO observers (reply collection, event decoding, elections seen
    from outside) import without kombu, and import no I/O module themselves."""
    import ast
    from pathlib import Path

    code = (
        "import sys, wkctl.protocol.replies, wkctl.protocol.observers, wkctl.protocol.reconnect;"
        "print('kombu' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    for name in ("replies", "observers", "reconnect"):
        tree = ast.parse(Path(protocol.__file__).with_name(f"{name}.py").read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and not node.level
        }
        assert not imported & {"kombu", "time", "os", "socket", "uuid", "threading"}, (
            name,
            imported,
        )
