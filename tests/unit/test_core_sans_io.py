"""The sans-IO core keeps its promise: no core module imports a clock, the
OS, sockets, threads, a random-id source or kombu, directly or through
another wkctl module.

The core is the list ``CORE`` below (the rules and the reference node);
the adapters that host it (``binding``, ``client``, ``bootsteps``,
``host``, ``broker``...) are not core.  ``wkctl.protocol.node`` is the
public import path of the node: it re-exports the core and
``default_nodename`` from ``host``, so it is not core either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"

CORE = [
    "actions",
    "clock",
    "commands",
    "config",
    "control",
    "core",
    "election",
    "gossip",
    "inbound",
    "kinds",
    "lifecycle",
    "mingle",
    "revoked",
    "schema_compiler",
    "tasks",
    "validation",
    "vocab",
    "wire",
    "worker_events",
]
FORBIDDEN = {"time", "os", "socket", "threading", "uuid", "kombu", "random", "secrets"}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(top-level names of absolute imports, sibling modules imported
    relatively), anywhere in the module (also inside functions)."""
    tree = ast.parse((PROTOCOL / f"{module}.py").read_text(), filename=f"{module}.py")
    absolute: set[str] = set()
    siblings: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                absolute.add(node.module.split(".")[0])
            elif node.level == 1 and node.module:
                siblings.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x
                siblings.update(alias.name for alias in node.names)
    return absolute, siblings


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_no_io(module: str) -> None:
    absolute, siblings = imports_of(module)
    assert not absolute & FORBIDDEN, f"{module} imports {sorted(absolute & FORBIDDEN)}"
    assert "wkctl" not in absolute, f"{module} imports wkctl by its absolute name"
    outside = siblings - set(CORE)
    assert not outside, f"{module} imports non-core modules {sorted(outside)}"


def test_the_core_list_names_real_modules() -> None:
    assert all((PROTOCOL / f"{m}.py").is_file() for m in CORE)
    # the check would pass vacuously on a module list that parses nothing
    assert "kombu" in imports_of("binding")[0] and "time" in imports_of("host")[0]
