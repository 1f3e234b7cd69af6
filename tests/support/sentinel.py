"""A private Redis Sentinel deployment: a master, a replica and one sentinel,
each a ``redis-server`` on a free port of 127.0.0.1, for the deployment
tests (``sentinel://`` URLs with the ``master_name`` transport option).

``kill_master()`` kills the master outright (a crash, not a shutdown); the
sentinel notices after ``down_after_ms`` and promotes the replica, which is
what clients following the sentinel must survive.  Every process dies with
the test process (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .brokerproc import RedisProc, free_port
from .workers import _die_with_parent

__all__ = ["MASTER_NAME", "SentinelCluster"]

MASTER_NAME = "wkctl-master"


def _redis_cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return done.stdout.strip()


@dataclass
class SentinelCluster:
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wkctl-sentinel-")))
    master: RedisProc | None = None
    replica: RedisProc | None = None
    sentinel_port: int = field(default_factory=free_port)
    sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients use: the sentinel, not a Redis server."""
        return f"sentinel://127.0.0.1:{self.sentinel_port}/0"

    def start(self, timeout: float = 20.0) -> SentinelCluster:
        self.master = RedisProc().start()
        self.replica = RedisProc(
            extra_args=("--replicaof", "127.0.0.1", str(self.master.port))
        ).start()
        conf = self.workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.workdir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.sentinel = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"],
            stdout=open(self.workdir / "sentinel.log", "ab"),
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while True:
            info = _redis_cli(self.master.port, "info", "replication")
            sentinel_master = self.master_port()
            if "connected_slaves:1" in info and sentinel_master == self.master.port:
                # the sentinel must know the replica too, or it cannot fail over
                if "slave" in _redis_cli(self.sentinel_port, "sentinel", "replicas", MASTER_NAME):
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"sentinel deployment not ready: {info!r} {self.log_text()[-2000:]}"
                )
            time.sleep(0.1)

    def master_port(self) -> int | None:
        """The master's port as the sentinel currently names it."""
        out = _redis_cli(
            self.sentinel_port, "sentinel", "get-master-addr-by-name", MASTER_NAME
        ).split()
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None

    def kill_master(self) -> int:
        """Crash the master; returns the port the replica listens on."""
        assert self.master is not None and self.replica is not None
        self.master.stop()
        return self.replica.port

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Seconds until the sentinel names the replica as master."""
        assert self.replica is not None
        started = time.monotonic()
        while self.master_port() != self.replica.port:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"no failover after {timeout} s: {self.log_text()[-2000:]}")
            time.sleep(0.05)
        return time.monotonic() - started

    def log_text(self) -> str:
        try:
            return (self.workdir / "sentinel.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait(10)
        for server in (self.master, self.replica):
            if server is not None:
                server.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
