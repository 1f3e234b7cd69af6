"""Real Celery worker processes as protocol peers.

Each worker runs ``celery -A celeryapp worker -P solo`` with a unique node
name, from the test venv (newest Celery) or from a venv of an older
release.  Workers are started in their own session with
``PR_SET_PDEATHSIG``, so they die with the test process even when that is
killed outright and no teardown runs: no stray workers.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: teardown still stops the workers
        pass


def celery_python(version: str) -> str | None:
    """The interpreter that runs Celery ``version`` ("5.7" = the test venv's own)."""
    if version in ("5.7", "newest", "current"):
        return sys.executable
    key = "WKCTL_TEST_CELERY" + version.replace(".", "") + "_PYTHON"
    env = os.environ.get(key)
    if env:
        return env
    local = REPO / f".venv-celery{version.replace('.', '')}" / "bin" / "python"
    return str(local) if local.exists() else None


@dataclass
class CeleryWorker:
    hostname: str
    broker_url: str
    version: str
    process: subprocess.Popen[bytes]
    logfile: Path
    record_dir: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        """The worker's log file, followed by anything it wrote to stderr."""
        text = ""
        for path in (self.logfile, Path(str(self.logfile) + ".stderr")):
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        return text

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"worker {self.hostname} exited with {self.process.returncode}:\n{self.log_text()[-3000:]}"
                )
            time.sleep(0.05)
        raise RuntimeError(
            f"worker {self.hostname} not ready after {timeout} s:\n{self.log_text()[-3000:]}"
        )

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)


@dataclass
class WorkerPool:
    """Starts workers; remembers them so that none outlives the session."""

    logdir: Path
    record_dir: Path
    workers: list[CeleryWorker] = field(default_factory=list)

    def start(
        self,
        broker_url: str,
        n: int = 1,
        version: str = "5.7",
        events: bool = True,
        prefix: str = "w",
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
        wait: bool = True,
        python: str | None = None,
    ) -> list[CeleryWorker]:
        """``python`` runs the workers from that interpreter instead of the one
        ``celery_python(version)`` finds (the release matrix's own venvs)."""
        python = python or celery_python(version)
        if python is None:
            raise LookupError(
                f"no Python with Celery {version} (set WKCTL_TEST_CELERY{version.replace('.', '')}_PYTHON)"
            )
        started = []
        for _ in range(n):
            tag = uuid.uuid4().hex[:6]
            hostname = f"{prefix}{version.replace('.', '')}-{tag}@wkctl-test"
            logfile = self.logdir / f"{hostname}.log"
            cmd = [
                python,
                "-m",
                "celery",
                "-A",
                "celeryapp",
                "--broker",
                broker_url,
                "worker",
                "-P",
                "solo",
                "-n",
                hostname,
                "-l",
                "INFO",
                "--logfile",
                str(logfile),
                *extra_args,
            ]
            if events:
                cmd.append("-E")
            child_env = dict(os.environ)
            child_env.update(
                PYTHONPATH=str(HERE),
                WKCTL_TEST_BROKER_URL=broker_url,
                WKCTL_TEST_RECORD_DIR=str(self.record_dir),
                PYTHONUNBUFFERED="1",
            )
            child_env.pop("CELERY_BROKER_URL", None)
            if env:
                child_env.update(env)
            process = subprocess.Popen(
                cmd,
                cwd=str(HERE),
                env=child_env,
                stdout=subprocess.DEVNULL,
                stderr=open(str(logfile) + ".stderr", "wb"),
                preexec_fn=_die_with_parent,
            )
            worker = CeleryWorker(hostname, broker_url, version, process, logfile, self.record_dir)
            self.workers.append(worker)
            started.append(worker)
        if wait:
            for worker in started:
                worker.wait_ready()
        return started

    def stop(self, workers: list[CeleryWorker]) -> None:
        for worker in workers:
            if worker.alive():
                try:
                    os.killpg(worker.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for worker in workers:
            worker.stop()
            if worker in self.workers:
                self.workers.remove(worker)

    def stop_all(self) -> None:
        self.stop(list(self.workers))
