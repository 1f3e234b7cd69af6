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
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu import Connection, Producer

from .capture import exchanges
from .celeryapp import client_app
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


def records(folder: Path, key: str) -> list[str]:
    """Hostnames of the workers that ran ``tasks.record(key)`` (one file per run)."""
    return sorted(p.name.split(".", 1)[1] for p in folder.glob(f"{key}.*"))


def wait_until(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def malformed_heartbeat(url: str, sender: str = "evil@x") -> None:
    """DEFECT-6: a peer first heard of, then its heartbeat with ``"timestamp":
    "now"`` (no utcoffset: Celery 5.4 localizes a timestamp that has one, and
    that TypeError is caught; the ValueError of ``int("now")`` is not)."""
    body = {
        "type": "worker-heartbeat",
        "hostname": sender,
        "clock": 1,
        "timestamp": time.time(),
        "utcoffset": 0,
        "pid": 1,
        "freq": 2.0,
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "active": 0,
        "processed": 0,
        "loadavg": [0, 0, 0],
    }
    with Connection(url) as conn:
        _, _, events = exchanges(conn.transport.driver_type)
        producer = Producer(conn.channel())
        for fields in ({}, {"timestamp": "now", "clock": 2, "utcoffset": None}):
            producer.publish(
                {**body, **fields},
                exchange=events,
                routing_key="worker.heartbeat",
                serializer="json",
                headers={"hostname": sender},
                declare=[events],
            )


def lone_election(url: str, exchange: str, record_dir: Path, timeout: float = 10.0) -> str:
    """``app.control.election(...)`` at a worker alone on ``exchange`` (its
    control and event exchange); returns the election id once the action
    ran, raises if it did not run exactly once."""
    app = client_app(url, control_exchange=exchange, event_exchange=exchange)
    key = f"lone-{uuid.uuid4().hex[:8]}"
    election = str(uuid.uuid4())
    try:
        app.control.election(election, "task", {"task": "tasks.record", "args": [key]})
    finally:
        app.close()
    if not wait_until(lambda: records(record_dir, key), timeout):
        raise AssertionError(f"the action of election {election} did not run in {timeout:.0f} s")
    time.sleep(1.0)
    ran = records(record_dir, key)
    if len(ran) != 1:
        raise AssertionError(f"the action ran {len(ran)} times: {ran}")
    return election


def runs_a_task(url: str, queue: str, record_dir: Path, timeout: float = 10.0) -> bool:
    """A ``tasks.record`` sent to ``queue`` ran within ``timeout``."""
    app = client_app(url)
    key = f"alive-{uuid.uuid4().hex[:8]}"
    try:
        app.send_task("tasks.record", args=[key], queue=queue)
    finally:
        app.close()
    return wait_until(lambda: records(record_dir, key), timeout)


def pings(url: str, names: list[str], timeout: float = 2.0) -> set[str]:
    """The workers of ``names`` that answered Celery's own ``ping``."""
    app = client_app(url)
    try:
        replies = app.control.ping(destination=names, timeout=timeout) or []
    finally:
        app.close()
    return {name for reply in replies for name in reply}
