"""Real brokers for tests, each test isolated in its own namespace.

RabbitMQ: a fresh virtual host per isolated URL (created with rabbitmqctl
when the broker is local, a batch at a time: every rabbitmqctl call
starts an Erlang VM, about 0.7 s of CPU, and the suite asks for dozens).  Redis: a database number from a pool (kombu
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
#: virtual hosts made per rabbitmqctl call (the unused ones go at close)
VHOST_BATCH = 6
#: who the broker's log names as creating and deleting the test vhosts
_ACTING_USER = '<<"wkctl-tests">>'


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
    #: made and not handed out yet
    _ready: list[str] = field(default_factory=list)
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
                if not self._ready:
                    self._ready = self._make_vhosts(VHOST_BATCH)
                name = self._ready.pop(0)
            return _with_path(self.amqp_url, "/" + name)
        if kind == "redis":
            assert self.redis_url is not None
            db = self._lease_db()
            url = _with_path(self.redis_url, f"/{db}")
            flush_redis(url)
            return url
        raise ValueError(f"unknown broker kind {kind!r}")

    def _make_vhosts(self, n: int) -> list[str]:
        """``n`` fresh virtual hosts on which guest may do anything: one
        ``rabbitmqctl eval`` for all of them, else two commands each."""
        start = len(self._vhosts)
        names = [f"wkctl-test-{self.run_id}-{start + i}" for i in range(n)]
        self._vhosts.extend(names)
        user, vhosts = _ACTING_USER, _erlang_binaries(names)
        made = _rabbit_eval(
            f"[begin ok = rabbit_vhost:add(V, {user}), ok = rabbit_auth_backend_internal:"
            f'set_permissions(<<"guest">>, V, <<".*">>, <<".*">>, <<".*">>, {user}) end '
            f"|| V <- [{vhosts}]], ok."
        )
        if not made:  # another RabbitMQ release: the documented commands
            for name in names:
                for args in (
                    ["add_vhost", name],
                    ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
                ):
                    subprocess.run(
                        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60
                    )
        return names

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
        names = list(self._vhosts)
        deleting = f"[catch rabbit_vhost:delete(V, {_ACTING_USER}) || V <- [{{}}]], ok."
        if names and not _rabbit_eval(deleting.format(_erlang_binaries(names))):
            for name in names:
                subprocess.run(
                    ["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60
                )
        self._vhosts.clear()
        self._ready.clear()


def _erlang_binaries(names: list[str]) -> str:
    """``<<"a">>, <<"b">>``: names made of letters, digits and dashes only."""
    assert all(n.replace("-", "").isalnum() for n in names), names
    return ", ".join(f'<<"{n}">>' for n in names)


def _rabbit_eval(expression: str) -> bool:
    """Run an Erlang expression in the local RabbitMQ node; True when it
    evaluated to ``ok``."""
    try:
        proc = subprocess.run(
            ["rabbitmqctl", "-q", "eval", expression], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.strip() == "ok"


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
