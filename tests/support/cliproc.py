"""``wkctl`` commands as real background processes, for tests.

Every process started here dies with the test process (the same
``PR_SET_PDEATHSIG`` guard the Celery workers get), so a test that fails
while a ``tail`` or ``dump`` still runs leaves no stray behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .workers import REPO, _die_with_parent

__all__ = ["interrupt", "start_dump", "start_tail", "start_wkctl", "wait_for_text", "wkctl_popen"]


def wkctl_popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``python -m wkctl *args`` in the background, from the repository root."""
    kwargs.setdefault("cwd", str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "wkctl", *args], preexec_fn=_die_with_parent, **kwargs
    )


def wait_for_text(
    path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 15.0
) -> None:
    """Wait until ``text`` shows in the file ``path`` that ``process`` writes;
    fail the test if the process exits or the time runs out first."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, f"exited {process.returncode}: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, (
            f"no {text!r} after {timeout} s: {path.read_text()[-2000:]}"
        )
        time.sleep(0.05)


def start_wkctl(args: list[str], folder: Path, name: str) -> subprocess.Popen[bytes]:
    """``wkctl *args`` in the background, writing ``folder/<name>.out`` and
    ``folder/<name>.err``."""
    with open(folder / f"{name}.out", "wb") as out, open(folder / f"{name}.err", "wb") as err:
        return wkctl_popen(args, stdout=out, stderr=err)


def start_tail(args: list[str], folder: Path) -> subprocess.Popen[bytes]:
    """``wkctl *args`` (a ``tail``), into ``folder/tail.out`` and
    ``tail.err``, returned once it says it listens; stopped, and the test
    failed, if it never says so."""
    tail = start_wkctl(args, folder, "tail")
    try:
        wait_for_text(folder / "tail.err", "listening on queue", tail)
    except BaseException:
        interrupt(tail)
        raise
    return tail


def start_dump(broker_url: str, folder: Path, seconds: float) -> subprocess.Popen[bytes]:
    """``wkctl dump --json --duration SECONDS``, into ``folder/dump.out`` and ``dump.err``."""
    return start_wkctl(
        ["--broker", broker_url, "dump", "--json", "--duration", f"{seconds:g}"], folder, "dump"
    )


def interrupt(process: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """Stop ``process`` as a user does (Ctrl-C) and return its exit code.

    A process that does not stop within ``timeout`` fails the test: it is
    killed first, so that nothing is left behind, but a command wedged by
    what a test fed it must not pass for one that stopped."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
        raise AssertionError(
            f"wkctl (pid {process.pid}) did not stop within {timeout:g} s of Ctrl-C; killed"
        ) from None
