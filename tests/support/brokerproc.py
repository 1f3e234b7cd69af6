"""Private broker instances for restart tests, each on its own port.

Fault tests stop and restart a broker; doing that to the shared services
would break every other test running at the same time, so they start their
own instance here:

* Redis: ``redis-server --port N --save '' --appendonly no`` (about 10 ms
  to start);
* RabbitMQ: a second node on this machine with its own node name, AMQP
  port, distribution port and data directory (``RABBITMQ_NODENAME``,
  ``RABBITMQ_NODE_PORT``, ``RABBITMQ_DIST_PORT``, ``RABBITMQ_MNESIA_BASE``,
  ``RABBITMQ_LOG_BASE``, ...).  It needs the RabbitMQ server scripts and a
  few seconds to boot; :func:`rabbitmq_available` says whether it can work
  here, and the tests skip with that reason otherwise (the TCP proxy still
  covers RabbitMQ connection faults).

Both processes run in their own session with ``PR_SET_PDEATHSIG`` so that
they die with the test process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .workers import _die_with_parent

__all__ = ["RabbitProc", "RedisProc", "free_port", "rabbitmq_available", "redis_available"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def redis_available() -> str:
    """``""`` when a private Redis can be started here, else why not."""
    return "" if shutil.which("redis-server") else "redis-server is not installed"


@dataclass
class RedisProc:
    """A private ``redis-server`` with no persistence (a restart empties it,
    as a broker crash without persistence does)."""

    port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wkctl-redis-")))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProc:
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            cmd,
            stdout=open(self.workdir / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server did not start: {self.log_text()[-2000:]}")
            time.sleep(0.01)
        return self

    def ready(self) -> bool:
        return _port_open(self.port)

    def log_text(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the server outright (no clean shutdown: a crash)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        deadline = time.monotonic() + 5
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.01)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _rabbit_script() -> str | None:
    for candidate in ("/usr/lib/rabbitmq/bin/rabbitmq-server", shutil.which("rabbitmq-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def rabbitmq_available() -> str:
    """``""`` when a private RabbitMQ node can be started here, else why not."""
    if os.environ.get("WKCTL_TEST_NO_PRIVATE_RABBITMQ"):
        return "WKCTL_TEST_NO_PRIVATE_RABBITMQ is set"
    if _rabbit_script() is None:
        return "the RabbitMQ server scripts are not installed"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    return ""


@dataclass
class RabbitProc:
    """A second RabbitMQ node on this machine (own name, ports and data).

    Boot takes a few seconds; a restart keeps the data directory, as a
    restarted production broker does (durable exchanges survive, the
    transient pidbox and event queues do not).
    """

    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wkctl-rabbit-")))
    process: subprocess.Popen[bytes] | None = None
    nodename: str = ""

    def __post_init__(self) -> None:
        if not self.nodename:
            self.nodename = f"wkctltest{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        base = self.workdir
        for sub in ("mnesia", "log", "home"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        conf = base / "rabbitmq.conf"
        conf.write_text(
            "loopback_users = none\n"
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "management.tcp.port = 0\n"
        )
        env.update(
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(conf),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_ENABLED_PLUGINS="",
            RABBITMQ_LOGS="-",
            RABBITMQ_ALLOW_INPUT="",
            HOME=str(base / "home"),
        )
        (base / "enabled_plugins").write_text("[].\n")
        # Share the system node's Erlang cookie so rabbitmqctl works either way.
        for cookie in (Path("/var/lib/rabbitmq/.erlang.cookie"), Path.home() / ".erlang.cookie"):
            try:
                target = base / "home" / ".erlang.cookie"
                if cookie.exists() and not target.exists():
                    shutil.copyfile(cookie, target)
                    os.chmod(target, 0o400)
                break
            except OSError:
                continue
        return env

    def start(self, timeout: float = 90.0) -> RabbitProc:
        script = _rabbit_script()
        if script is None:
            raise RuntimeError("RabbitMQ server scripts not found")
        self.process = subprocess.Popen(
            [script],
            env=self._env(),
            stdout=open(self.workdir / "rabbit.out", "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log_text()[-3000:]
                self.stop()
                raise RuntimeError(f"private RabbitMQ did not start: {text}")
            time.sleep(0.1)
        return self

    def ready(self) -> bool:
        if not _port_open(self.port):
            return False
        # The port opens a moment before the broker accepts logins.
        from kombu import Connection

        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.ensure_connection(max_retries=1)
            return True
        except Exception:
            return False

    def log_text(self) -> str:
        try:
            return (self.workdir / "rabbit.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the node outright (a crash)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
        deadline = time.monotonic() + 10
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
