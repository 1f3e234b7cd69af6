"""Third-party Celery ecosystem tools (Flower, Prometheus exporters) as real clients.

They run from their own venv, ``.venv-tools`` (README's test command creates
it), because their pins (``prometheus-client<0.22``, ``redis<6``) must not
constrain wkctl's own dependencies.  README's command installs redis-py 6.4
over the exporter's ``redis<6`` (kombu 5.7 needs it on Redis) and
``packaging`` (kombu's Redis transport imports it).  ``WKCTL_TEST_TOOLS_PYTHON`` names
another interpreter that has them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
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


# -- running them ------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ToolProcess:
    """A third-party tool running as a child process, its output in a log file."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    logfile: Path
    #: the path that answers once the tool serves
    ready_path: str = "/"

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, str]:
        """HTTP GET on the tool; (status, body); status 0 when it does not answer."""
        return _http("GET", f"http://127.0.0.1:{self.port}{path}", timeout)

    def post(self, path: str, timeout: float = 30.0) -> tuple[int, str]:
        return _http("POST", f"http://127.0.0.1:{self.port}{path}", timeout)

    def wait_http(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            status, _ = self.get(path, timeout=2.0)
            if status:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} does not answer on {path}:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(10)


def _http(method: str, url: str, timeout: float) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def _start(
    name: str, args: list[str], logdir: Path, port: int, env: dict[str, str], ready_path: str
) -> ToolProcess:
    from .workers import _die_with_parent

    python = tools_python()
    if python is None:
        raise LookupError("no tools venv (.venv-tools or WKCTL_TEST_TOOLS_PYTHON)")
    logfile = logdir / f"{name}-{port}.log"
    child_env = dict(os.environ)
    child_env.update(env)
    process = subprocess.Popen(
        [python, *args],
        stdout=open(logfile, "ab"),
        stderr=subprocess.STDOUT,
        env=child_env,
        cwd=str(logdir),
        preexec_fn=_die_with_parent,
    )
    return ToolProcess(name, port, process, logfile, ready_path)


def start_flower(broker_url: str, logdir: Path, wait: bool = True) -> ToolProcess:
    """Flower 2.2.0 with its API open (``FLOWER_UNAUTHENTICATED_API``),
    tornado-style options, on a free port of 127.0.0.1."""
    port = free_port()
    tool = _start(
        "flower",
        [
            "-m",
            "celery",
            "--broker",
            broker_url,
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        logdir,
        port,
        {"FLOWER_UNAUTHENTICATED_API": "1"},
        "/healthcheck",
    )
    if wait:
        tool.wait_http(tool.ready_path)
    return tool


def start_celery_exporter(broker_url: str, logdir: Path, wait: bool = True) -> ToolProcess:
    """prometheus-exporter-celery 0.11.2 (top-level package ``src``)."""
    port = free_port()
    tool = _start(
        "celery-exporter",
        [
            "-c",
            "from src.cli import cli; cli()",
            "--broker-url",
            broker_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        logdir,
        port,
        {},
        "/health",
    )
    if wait:
        tool.wait_http(tool.ready_path)
    return tool


def start_celery_prometheus_exporter(
    broker_url: str, logdir: Path, wait: bool = True
) -> ToolProcess:
    """celery-prometheus-exporter 1.7.0 (reads ``registered`` at start)."""
    port = free_port()
    tool = _start(
        "celery-prometheus-exporter",
        [
            "-c",
            "from celery_prometheus_exporter import main; main()",
            "--broker",
            broker_url,
            "--addr",
            f"127.0.0.1:{port}",
        ],
        logdir,
        port,
        {},
        "/metrics",
    )
    if wait:
        tool.wait_http(tool.ready_path)
    return tool
