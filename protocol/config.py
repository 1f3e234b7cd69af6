"""What parameterises one node: its settings (:class:`NodeConfig`) and what
the host process supplies (:class:`Environment`).

The core never reads the machine: hostname, pid, load average, UTC offset,
platform and fresh random ids all come from an :class:`Environment` the
host fills (:func:`wkctl.protocol.host.local_environment` for a real
process).  The default one is deterministic, so a node built without one
(a unit test) behaves the same on every run and machine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from .election import DEFAULT_ELECTION_TIMEOUT
from .gossip import DEFAULT_HEARTBEAT, DEFAULT_SWEEP_INTERVAL
from .mingle import DEFAULT_MINGLE_SETTLE, DEFAULT_MINGLE_TIMEOUT
from .revoked import DEFAULT_REVOKED_EXPIRES, DEFAULT_REVOKED_MAX
from .wire import Limits, Names

__all__ = ["DEFAULT_REJECT_LOG_INTERVAL", "Environment", "NodeConfig", "sequential_ids"]

#: Default interval between two logged rejections of one sender.
DEFAULT_REJECT_LOG_INTERVAL = 60.0


def sequential_ids() -> Callable[[], str]:
    """Deterministic ids shaped like UUIDs (``...-000000000001``), for an
    :class:`Environment` without a random source (tests, replays)."""
    counter: Iterator[int] = count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012x}"


def _no_loadavg() -> Sequence[float]:
    return (0.0, 0.0, 0.0)


def _utc() -> float:
    return 0.0


@dataclass(frozen=True)
class Environment:
    """The host process as the core sees it: every value the core would
    otherwise read from the OS.  ``loadavg``, ``utcoffset`` and ``new_id``
    are called when the core builds a heartbeat, an event or a ticket: the
    host decides what they read (the binding: ``os.getloadavg``,
    ``time.localtime``, ``uuid4``)."""

    hostname: str = "localhost"
    pid: int = 0
    #: ``platform.system()`` (heartbeats' ``sw_sys``), and what ``report`` shows
    sw_sys: str = "unknown"
    python_version: str = ""
    machine: str = ""
    implementation: str = ""
    #: wkctl's version, as nodes announce it (``sw_ver``)
    sw_ver: str = "0+unknown"
    loadavg: Callable[[], Sequence[float]] = _no_loadavg
    utcoffset: Callable[[], float] = _utc
    new_id: Callable[[], str] = field(default_factory=sequential_ids)


@dataclass
class NodeConfig:
    """Everything that parameterises one node.  Defaults follow Celery.

    ``name``, ``pid`` and ``reply_routing_key`` left empty are filled by the
    node from its :class:`Environment` (``wkctl@<hostname>``, its pid, a
    fresh id, wkctl's version)."""

    name: str = ""
    pid: int = 0
    heartbeat: float = DEFAULT_HEARTBEAT
    mingle: bool = True
    gossip: bool = True
    #: the node sends its own ``worker-online``/``-heartbeat``/``-offline``;
    #: False when its host does (a Celery worker's ``Heart`` step, which
    #: reports the worker's real task counts), so there are never two.
    announce: bool = True
    mingle_timeout: float = DEFAULT_MINGLE_TIMEOUT
    mingle_settle: float = DEFAULT_MINGLE_SETTLE
    election_timeout: float = DEFAULT_ELECTION_TIMEOUT
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    revoked_max: int = DEFAULT_REVOKED_MAX
    revoked_expires: float | None = DEFAULT_REVOKED_EXPIRES
    reject_log_interval: float = DEFAULT_REJECT_LOG_INTERVAL
    limits: Limits = field(default_factory=Limits)
    names: Names = field(default_factory=Names)
    sw_ver: str = ""
    #: routing key of this node's reply queue (kombu's ``oid``)
    reply_routing_key: str = ""
    #: the broker connection as Celery's ``stats`` reports it (no password;
    #: secret-looking keys are masked again when replying)
    broker_info: dict[str, Any] = field(default_factory=dict)
    #: the settings ``conf`` reports, under Celery's names (masked URL)
    settings_info: dict[str, Any] = field(default_factory=dict)

    def fill(self, env: Environment) -> None:
        """Fill what was left empty from ``env`` (see the class docstring)."""
        if not self.name:
            self.name = f"wkctl@{env.hostname}"
        if not self.pid:
            self.pid = env.pid
        if not self.sw_ver:
            self.sw_ver = env.sw_ver
        if not self.reply_routing_key:
            self.reply_routing_key = env.new_id()
