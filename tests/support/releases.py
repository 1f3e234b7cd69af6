"""The Celery releases wkctl is tested against, each with the kombu and
redis client of its time, installed in cached venvs.

Unpinned, pip pairs every Celery 5.x with the newest kombu, which hides the
defects of the kombu each release shipped with (DEFECT-15 is one): every
release here pins the kombu it was published with.  Celery 4.4.7 (vine 1.3)
does not start on Python 3.11 or later, so it gets a Python 3.10 interpreter
when one is found (``WKCTL_MATRIX_PYTHON310``, else ``python3.10`` on PATH,
else a pyenv install), and is reported as not run, with the reason, when none is.

The venvs live in ``.venv-matrix/celery-<release>`` (or under
``WKCTL_MATRIX_VENVS``) and are rebuilt only when their pins change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .workers import REPO

__all__ = [
    "CI_SKIPS",
    "CI_SUBSET",
    "HARDENED_RESULTS",
    "HARDENED_SECONDS",
    "HARDENED_STEPS",
    "OPERATIONS",
    "RELEASES",
    "RESULTS",
    "SECONDS",
    "NotAvailable",
    "Release",
    "python310",
    "release",
    "render_hardened",
    "render_matrix",
    "venv_python",
]


@dataclass(frozen=True)
class Release:
    """A Celery release and what it needs to run as it did when published."""

    version: str
    kombu: str
    #: pip requirements, kombu and redis client pinned to the release's time
    pins: tuple[str, ...]
    #: the mapping form of revoked ids (every release before 5.7)
    mapping_form: bool
    #: ignores the app's worker_send_task_events (workers need -E)
    needs_dash_e: bool = False
    #: needs a Python older than 3.11 (vine/five.py uses inspect.formatargspec)
    python: str | None = None

    @property
    def short(self) -> str:
        """The name the worker helpers use for the interpreter ("5.4.0" -> "540")."""
        return self.version.replace(".", "")


def _pins(celery: str, kombu: str, redis: str, *extra: str) -> tuple[str, ...]:
    return (f"celery=={celery}", f"kombu=={kombu}", f"redis=={redis}", "packaging", *extra)


RELEASES: tuple[Release, ...] = (
    Release(
        "4.4.7",
        "4.6.11",
        _pins("4.4.7", "4.6.11", "3.5.3", "vine==1.3.0", "amqp==2.6.1"),
        mapping_form=True,
        python="3.10",
    ),
    Release(
        "5.0.5", "5.0.2", _pins("5.0.5", "5.0.2", "3.5.3"), mapping_form=True, needs_dash_e=True
    ),
    Release(
        "5.1.2", "5.1.0", _pins("5.1.2", "5.1.0", "3.5.3"), mapping_form=True, needs_dash_e=True
    ),
    Release("5.2.7", "5.2.4", _pins("5.2.7", "5.2.4", "4.3.4"), mapping_form=True),
    Release("5.3.6", "5.3.4", _pins("5.3.6", "5.3.4", "5.0.1"), mapping_form=True),
    Release("5.4.0", "5.3.7", _pins("5.4.0", "5.3.7", "5.0.8"), mapping_form=True),
    Release("5.5.3", "5.5.4", _pins("5.5.3", "5.5.4", "5.2.1"), mapping_form=True),
    Release("5.6.3", "5.6.2", _pins("5.6.3", "5.6.2", "6.4.0"), mapping_form=True),
    Release("5.7.0", "5.7.0", _pins("5.7.0", "5.7.0", "7.0.1"), mapping_form=False),
)


#: the cells the default suite (and CI) runs: one release of each wire
#: generation with its own kombu, and each broker once: 5.4.0 (mapping form;
#: kombu 5.3.7, DEFECT-15) from .venv-celery54 on Redis, 5.7.0 (list form)
#: from the test venv on RabbitMQ (the rest of the suite runs 5.7 and 5.4
#: workers on both brokers)
CI_SUBSET: tuple[tuple[str, str], ...] = (("5.4.0", "redis"), ("5.7.0", "amqp"))

#: operations the CI subset leaves to other tests of the default suite:
#: conform against 5.7 and 5.4 workers on both brokers (with the ping of
#: every worker afterwards) is test_conform_live, the unknown-matcher guard
#: test_conform_hazards; ``--release-matrix`` runs them in every cell
CI_SKIPS: dict[str, str] = {
    "conform": "in the default suite: test_conform_live (--release-matrix runs it here)",
    "DEFECT-15": "in the default suite: test_conform_hazards (--release-matrix runs it here)",
}

#: the columns of the matrix, in the order a cell runs them
OPERATIONS: tuple[str, ...] = (
    "hello",
    "clock/revoked",
    "mingle",
    "tail",
    "dump",
    "elect",
    "validate",
    "conform",
    "DEFECT-15",
)

#: (release, broker) -> operation -> "ok ..." | "FAIL ..." | "not run: ..."
RESULTS: dict[tuple[str, str], dict[str, str]] = {}
#: (release, broker) -> seconds the cell took (workers started to last operation)
SECONDS: dict[tuple[str, str], float] = {}


def render_matrix(results: dict[tuple[str, str], dict[str, str]]) -> list[str]:
    """The matrix as text lines: one row per release and broker, then every
    cell that is not green with its reason (after the cells DEFECT-15 silenced)."""
    width = max(len(op) for op in OPERATIONS)
    head = f"{'release':<8} {'broker':<6} " + " ".join(f"{op:<{width}}" for op in OPERATIONS)
    head += "  seconds"
    lines = [head]
    notes: list[str] = []
    order = {r.version: i for i, r in enumerate(RELEASES)}
    for (version, broker), cells in sorted(
        results.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])
    ):
        marks = []
        for op in OPERATIONS:
            text = cells.get(op, "not run: (the cell stopped before)")
            mark = "ok" if text.startswith("ok") else ("-" if text.startswith("not run") else "RED")
            marks.append(f"{mark:<{width}}")
            if mark != "ok":
                notes.append(f"{version} {broker} {op}: {text}")
        took = SECONDS.get((version, broker))
        lines.append(
            f"{version:<8} {broker:<6} "
            + " ".join(marks)
            + (f"  {took:.0f}" if took is not None else "")
        )
    silenced = [
        f"{v} {b}"
        for (v, b), cells in sorted(results.items())
        if "silences" in cells.get("DEFECT-15", "")
    ]
    if silenced:
        notes.insert(0, f"DEFECT-15 silenced every worker of: {', '.join(silenced)}")
    for (v, b), cells in sorted(results.items()):
        if "disagree" in cells.get("elect", ""):
            notes.insert(0, f"{v} {b} elect: {cells['elect'][3:]}")
    green = sum(
        1 for cells in results.values() for op in OPERATIONS if cells.get(op, "").startswith("ok")
    )
    lines.append(f"{green} of {len(results) * len(OPERATIONS)} cells green")
    return lines + notes


#: hardened workers (``wkctl.celery.install``) per release: the steps of a
#: cell of tests/test_celery_harden_releases.py, in the order it runs them
HARDENED_STEPS: tuple[str, ...] = ("steps", "revoked", "control", "heartbeat", "election")
#: (release, broker) -> step -> "ok ..." | "FAIL ..." | "not run: ..."
HARDENED_RESULTS: dict[tuple[str, str], dict[str, str]] = {}
#: (release, broker) -> seconds the cell took
HARDENED_SECONDS: dict[tuple[str, str], float] = {}


def render_hardened(results: dict[tuple[str, str], dict[str, str]]) -> list[str]:
    """The hardened-worker table: one row per release and broker, then every
    step that is not green with its reason."""
    width = max(len(step) for step in HARDENED_STEPS)
    lines = [
        f"{'release':<8} {'broker':<6} "
        + " ".join(f"{step:<{width}}" for step in HARDENED_STEPS)
        + "  seconds"
    ]
    notes: list[str] = []
    order = {r.version: i for i, r in enumerate(RELEASES)}
    for (version, broker), cells in sorted(
        results.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])
    ):
        marks = []
        for step in HARDENED_STEPS:
            text = cells.get(step, "not run: (the cell stopped before)")
            mark = "ok" if text.startswith("ok") else ("-" if text.startswith("not run") else "RED")
            marks.append(f"{mark:<{width}}")
            if mark != "ok" or step in ("control", "heartbeat"):
                notes.append(f"{version} {broker} {step}: {text}")
        took = HARDENED_SECONDS.get((version, broker))
        lines.append(
            f"{version:<8} {broker:<6} "
            + " ".join(marks)
            + (f"  {took:.0f}" if took is not None else "")
        )
    return lines + notes


def release(version: str) -> Release:
    for item in RELEASES:
        if item.version == version:
            return item
    raise KeyError(f"no release {version!r} in the matrix (known: {[r.version for r in RELEASES]})")


class NotAvailable(Exception):
    """The release cannot run here; the message says why (reported, not raised as a failure)."""


def _runs(python: str) -> bool:
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print(sys.version)"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def python310() -> str | None:
    """A working Python 3.10: ``WKCTL_MATRIX_PYTHON310``, ``python3.10`` on PATH, a pyenv install."""
    candidates: list[str] = []
    env = os.environ.get("WKCTL_MATRIX_PYTHON310")
    if env:
        candidates.append(env)
    found = shutil.which("python3.10")
    if found:
        candidates.append(found)
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    candidates.extend(
        str(p) for p in sorted((pyenv_root / "versions").glob("3.10*/bin/python3.10"))
    )
    candidates.append("/usr/bin/python3.10")
    for candidate in candidates:
        if _runs(candidate):  # a pyenv shim on PATH may exist and still refuse to run
            return candidate
    return None


def _interpreter(rel: Release) -> str:
    if rel.python is None:
        return sys.executable if sys.version_info < (3, 14) else "python3"
    if rel.python == "3.10":
        found = python310()
        if found is None:
            raise NotAvailable(
                f"Celery {rel.version} needs Python 3.10 (vine 1.3 uses inspect.formatargspec, "
                "removed in 3.11) and none was found: set WKCTL_MATRIX_PYTHON310"
            )
        return found
    raise NotAvailable(f"no rule to find Python {rel.python}")


def venv_root() -> Path:
    return Path(os.environ.get("WKCTL_MATRIX_VENVS") or REPO / ".venv-matrix")


def venv_python(rel: Release) -> str:
    """The interpreter of the release's cached venv, building the venv if needed."""
    folder = venv_root() / f"celery-{rel.version}"
    python = folder / "bin" / "python"
    stamp = folder / "wkctl-pins.txt"
    wanted = "\n".join(rel.pins) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    base = _interpreter(rel)
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([base, "-m", "venv", str(folder)], check=True, capture_output=True, timeout=300)
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *rel.pins],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise NotAvailable(
            f"pip could not install {' '.join(rel.pins)}: {done.stderr.strip()[-800:]}"
        )
    stamp.write_text(wanted)
    return str(python)


if __name__ == "__main__":  # build every venv: python -m support.releases (from tests/)
    for item in RELEASES:
        try:
            print(item.version, venv_python(item), flush=True)
        except NotAvailable as exc:
            print(item.version, "not available:", exc, flush=True)
