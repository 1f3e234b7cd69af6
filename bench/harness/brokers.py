"""Real brokers for tests, each test isolated in its own namespace.

RabbitMQ: a fresh virtual host per isolated URL (created with rabbitmqctl
when the broker is local).  Redis: a database number from a pool (kombu
prefixes fanout channels with the db number, so broadcasts stay apart too).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: a leased Redis test database is free again after this long even if its
#: session died without releasing it
LEASE_SECONDS = 3600


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something listens at the URL's host and port."""
    parts = urlsplit(url)
    port = parts.port or (5672 if parts.scheme.startswith("amqp") else 6379)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@dataclass
class BrokerPool:
    """Hands out isolated URLs on the two brokers and cleans them up."""

    amqp_url: str | None
    redis_url: str | None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    _vhosts: list[str] = field(default_factory=list)
    _free_dbs: list[int] = field(default_factory=lambda: list(range(1, 16)))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def can_make_vhosts(self) -> bool:
        if self.amqp_url is None or shutil.which("rabbitmqctl") is None:
            return False
        host = urlsplit(self.amqp_url).hostname
        return host in ("127.0.0.1", "localhost", "::1")

    def isolated(self, kind: str) -> str:
        if kind == "amqp":
            assert self.amqp_url is not None
            if not self.can_make_vhosts:
                return self.amqp_url
            with self._lock:
                name = f"wkctl-test-{self.run_id}-{len(self._vhosts)}"
                self._vhosts.append(name)
            subprocess.run(
                ["rabbitmqctl", "-q", "add_vhost", name],
                check=True,
                capture_output=True,
                timeout=60,
            )
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            return _with_path(self.amqp_url, "/" + name)
        if kind == "redis":
            assert self.redis_url is not None
            db = self._lease_db()
            url = _with_path(self.redis_url, f"/{db}")
            flush_redis(url)
            return url
        raise ValueError(f"unknown broker kind {kind!r}")

    def _leased_urls(self) -> list[str]:
        if self.redis_url is None:
            return []
        return [
            _with_path(self.redis_url, f"/{db}") for db in range(1, 16) if db not in self._free_dbs
        ]

    def _lease_db(self) -> int:
        """A Redis database no other test session is using.

        Pools in concurrent pytest sessions (two developers' runs, or a run
        beside CI) would otherwise flush each other's databases: a lease key
        in db 0, set only if absent, makes the choice exclusive.
        """
        import redis

        client = redis.Redis.from_url(_with_path(self.redis_url or "", "/0"))
        try:
            with self._lock:
                for db in list(self._free_dbs):
                    if client.set(f"wkctl-test-lease:{db}", self.run_id, nx=True, ex=LEASE_SECONDS):
                        self._free_dbs.remove(db)
                        return db
        finally:
            client.close()
        raise RuntimeError(
            "all 15 Redis test databases are leased (by this or other test sessions)"
        )

    def release(self, url: str) -> None:
        if url.startswith("redis"):
            import redis

            db = int(urlsplit(url).path.strip("/") or 0)
            flush_redis(url)
            client = redis.Redis.from_url(_with_path(url, "/0"))
            try:
                if client.get(f"wkctl-test-lease:{db}") == self.run_id.encode():
                    client.delete(f"wkctl-test-lease:{db}")
            finally:
                client.close()
            with self._lock:
                if db not in self._free_dbs:
                    self._free_dbs.append(db)

    def close(self) -> None:
        for url in list(self._leased_urls()):
            self.release(url)
        for name in self._vhosts:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60
            )
        self._vhosts.clear()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def base_url(kind: str) -> str | None:
    """The broker the suite uses: the env variable, else the local service if it answers."""
    env = os.environ.get("WKCTL_TEST_AMQP_URL" if kind == "amqp" else "WKCTL_TEST_REDIS_URL")
    if env:
        return env
    default = DEFAULT_AMQP if kind == "amqp" else DEFAULT_REDIS
    return default if answers(default) else None


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
