"""``wkctl`` commands as real background processes, for tests.

Every process started here dies with the test process (the same
``PR_SET_PDEATHSIG`` guard the Celery workers get), so a test that fails
while a ``tail`` or ``dump`` still runs leaves no stray behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .workers import REPO, _die_with_parent

__all__ = ["wait_for_text", "wkctl_popen"]


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
