"""Hardened Celery workers (``wkctl.celery.install(app)``) for the tests.

``celeryapp`` installs wkctl's steps when ``WKCTL_TEST_HARDEN=1``.  A worker
of the test venv imports wkctl from there; a worker of an older Celery's
venv (which must not be modified) imports it from an *overlay*: a folder
holding ``wkctl`` (links to this checkout's ``pkg/``, ``protocol/`` and
``schemas/``, the layout the wheel installs) and links to the pure-Python
dependencies of ``wkctl.protocol`` that such a venv lacks (jsonschema and
its own), taken from the test venv (same Python).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .workers import HERE, REPO

#: What ``wkctl.protocol`` imports beyond kombu (present in every Celery venv).
OVERLAY_DEPENDENCIES = (
    "jsonschema",
    "jsonschema_specifications",
    "referencing",
    "rpds",
    "attrs",
    "attr",
)


def _location(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"{module} is not installed in the test venv")
    return Path(list(spec.submodule_search_locations)[0])


def build_overlay(folder: Path) -> Path:
    """The overlay folder (built once; idempotent)."""
    package = folder / "wkctl"
    if not package.exists():
        package.mkdir(parents=True)
        for item in (REPO / "pkg").iterdir():
            if item.suffix in (".py", ".typed"):
                (package / item.name).symlink_to(item)
        for sub, source in (("protocol", "protocol"), ("schemas", "schemas")):
            (package / sub).symlink_to(REPO / source, target_is_directory=True)
        for module in OVERLAY_DEPENDENCIES:
            (folder / module).symlink_to(_location(module), target_is_directory=True)
    return folder


def hardened_env(version: str, overlay: Path) -> dict[str, str]:
    """Environment of a hardened worker of Celery ``version``."""
    env = {"WKCTL_TEST_HARDEN": "1"}
    if version not in ("5.7", "newest", "current"):
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(overlay)])
    return env
