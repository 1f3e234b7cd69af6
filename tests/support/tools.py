"""Third-party Celery ecosystem tools (Flower, Prometheus exporters) as real clients.

They run from their own venv, ``.venv-tools`` (README's test command creates
it), because their pins (``prometheus-client<0.22``, ``redis<6``) must not
constrain wkctl's own dependencies.  ``WKCTL_TEST_TOOLS_PYTHON`` names
another interpreter that has them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent

#: What README's test command installs into ``.venv-tools``.
TOOLS = {
    "flower": "2.2.0",
    "prometheus-exporter-celery": "0.11.2",
    "celery-prometheus-exporter": "1.7.0",
}


def tools_python() -> str | None:
    """The interpreter of the tools venv, or None when there is none."""
    env = os.environ.get("WKCTL_TEST_TOOLS_PYTHON")
    if env:
        return env
    local = REPO / ".venv-tools" / "bin" / "python"
    return str(local) if local.exists() else None


def tools_bin(name: str) -> str | None:
    """A console script of the tools venv (``celery``, ``celery-exporter``, ...)."""
    python = tools_python()
    if python is None:
        return None
    path = Path(python).parent / name
    return str(path) if path.exists() else None
