"""Gossip: who is in the cluster, from ``worker-*`` events; our heartbeats.

Every worker publishes ``worker-online`` when it starts, ``worker-heartbeat``
every ``freq`` seconds and ``worker-offline`` when it stops cleanly.  A node
is alive while its last heartbeat is younger than ``freq * 200 / 100``
seconds (Celery's ``Worker.expire_window`` of 200 %), and lost once that
window has passed without one: Celery's Gossip sweeps for such nodes every
5 seconds and calls its ``node_lost`` handlers.

Unlike Celery's ``Worker.heartbeat_expires``, which adds the window to the
*sender's* timestamp, :class:`Membership` measures from the local time the
heartbeat arrived (the ``now`` passed in): a peer whose wall clock is off
by minutes is then neither lost at once nor kept forever.

Sans-IO: :meth:`Membership.on_event` and :meth:`Membership.sweep` take
decoded events and ``now`` and return the membership changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .vocab import HEARTBEAT_TYPES
from .wire import SW_IDENT

__all__ = [
    "ChangeKind",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_SWEEP_INTERVAL",
    "EXPIRE_WINDOW",
    "Change",
    "Membership",
    "WorkerInfo",
    "heartbeat_fields",
]

#: A membership change: a peer joined, left cleanly (``worker-offline``) or
#: was lost (its heartbeats expired).
ChangeKind = Literal["join", "leave", "lost"]

DEFAULT_HEARTBEAT = 2.0
DEFAULT_SWEEP_INTERVAL = 5.0
#: Celery's ``Worker.expire_window``: a node is alive for 200 % of its freq.
EXPIRE_WINDOW = 200
#: Bound on the nodes tracked (a forger inventing hostnames cannot grow it).
MAX_WORKERS = 10_000
#: Heartbeat frequencies outside this range are clamped (a forged
#: ``freq: 1e300`` must not keep a node "alive" forever).
MIN_FREQ, MAX_FREQ = 0.1, 3600.0


def heartbeat_fields(
    freq: float, sw_ver: str, loadavg: Sequence[float], sw_sys: str
) -> dict[str, Any]:
    """The fields Celery's ``Heart`` adds to worker-online/heartbeat/offline
    (``hostname``, ``pid``, ``clock``, ``timestamp``, ``utcoffset`` and
    ``type`` are added by :func:`wkctl.protocol.wire.event`).  ``loadavg``
    and ``sw_sys`` (``platform.system()``) are the host's: inputs."""
    return {
        "freq": float(freq),
        "active": 0,
        "processed": 0,
        "loadavg": list(loadavg),
        "sw_ident": SW_IDENT,
        "sw_ver": sw_ver,
        "sw_sys": sw_sys,
    }


@dataclass
class WorkerInfo:
    """What gossip knows about one peer."""

    hostname: str
    pid: Any = None
    freq: float = DEFAULT_HEARTBEAT
    last_heartbeat: float | None = None  # local receive time
    alive_flag: bool = False
    sw_ident: str | None = None
    sw_ver: str | None = None
    clock: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def expires_at(self) -> float | None:
        if self.last_heartbeat is None:
            return None
        return self.last_heartbeat + self.freq * EXPIRE_WINDOW / 100.0

    def alive(self, now: float) -> bool:
        expires = self.expires_at()
        return self.alive_flag and expires is not None and expires > now


@dataclass(frozen=True)
class Change:
    """One membership change: ``kind`` is ``join``, ``leave`` or ``lost``."""

    kind: ChangeKind
    worker: WorkerInfo


def _freq(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return DEFAULT_HEARTBEAT
    if value != value:  # NaN
        return DEFAULT_HEARTBEAT
    return min(max(float(value), MIN_FREQ), MAX_FREQ)


class Membership:
    """The peers of one node, fed with ``worker-*`` events.

    ``me`` is excluded: a node never joins, leaves or loses itself (Celery's
    Gossip also skips its own events).
    """

    def __init__(self, me: str, max_workers: int = MAX_WORKERS) -> None:
        self.me = me
        self.max_workers = max_workers
        #: Changed only through :meth:`on_event` and :meth:`sweep`, which
        #: keep the cache of :meth:`alive` in step with it.
        self.workers: dict[str, WorkerInfo] = {}
        # The answer of alive(now) for now in [_alive_from, _alive_until):
        # an election asks for the alive set on every acknowledgement (N^2
        # times per election), and rebuilding it each time was most of the
        # cost of a process hosting many nodes.
        self._alive: tuple[str, ...] | None = None
        self._alive_from = 0.0
        self._alive_until = 0.0

    def on_event(self, event: Mapping[str, Any], now: float) -> list[Change]:
        """Apply one decoded worker event (``worker-online``, ``-heartbeat``,
        ``-offline``; any other type only refreshes nothing)."""
        type_ = event.get("type")
        hostname = event.get("hostname")
        if type_ not in HEARTBEAT_TYPES or not isinstance(hostname, str) or hostname == self.me:
            return []
        worker = self.workers.get(hostname)
        if type_ == "worker-offline":
            if worker is None or not worker.alive_flag:
                return []
            self._alive = None
            worker.alive_flag = False
            del self.workers[hostname]
            return [Change("leave", worker)]
        self._alive = None
        changes: list[Change] = []
        if worker is None:
            if len(self.workers) >= self.max_workers:
                self._evict_one(now)
            worker = WorkerInfo(hostname)
            self.workers[hostname] = worker
        was_alive = worker.alive(now)
        worker.pid = event.get("pid")
        worker.freq = _freq(event.get("freq"))
        worker.last_heartbeat = now
        worker.alive_flag = True
        sw_ident, sw_ver = event.get("sw_ident"), event.get("sw_ver")
        worker.sw_ident = sw_ident if isinstance(sw_ident, str) else None
        worker.sw_ver = sw_ver if isinstance(sw_ver, str) else None
        clock = event.get("clock")
        worker.clock = clock if isinstance(clock, int) and not isinstance(clock, bool) else None
        if not was_alive:
            changes.append(Change("join", worker))
        return changes

    def _evict_one(self, now: float) -> None:
        # Prefer a dead entry; otherwise the one heard from least recently.
        victim = min(
            self.workers.values(),
            key=lambda w: (w.alive(now), w.last_heartbeat or 0.0),
        )
        del self.workers[victim.hostname]

    def sweep(self, now: float) -> list[Change]:
        """Remove the peers whose heartbeats expired: Celery's ``periodic``."""
        lost = [w for w in self.workers.values() if not w.alive(now)]
        for worker in lost:
            del self.workers[worker.hostname]
        if lost:
            self._alive = None
        return [Change("lost", w) for w in lost]

    def alive(self, now: float) -> list[str]:
        """Hostnames of the peers alive at ``now`` (never ``me``).

        Cached: for a later ``now`` before the earliest expiry among the
        alive peers the set is the same (dead entries stay dead as time
        moves on), so only a membership change, a heartbeat, an expiry or
        a ``now`` earlier than the cached one recomputes it."""
        if self._alive is None or not self._alive_from <= now < self._alive_until:
            alive: list[str] = []
            until = float("inf")
            for hostname, worker in self.workers.items():
                if worker.alive(now):
                    alive.append(hostname)
                    expires = worker.expires_at()
                    if expires is not None and expires < until:
                        until = expires
            self._alive = tuple(alive)
            self._alive_from, self._alive_until = now, until
        return list(self._alive)

    def __contains__(self, hostname: object) -> bool:
        return hostname in self.workers


class Callbacks:
    """Celery's ``gossip.on``: sets of handlers per membership change."""

    def __init__(self) -> None:
        self.node_join: set[Callable[[WorkerInfo], Any]] = set()
        self.node_leave: set[Callable[[WorkerInfo], Any]] = set()
        self.node_lost: set[Callable[[WorkerInfo], Any]] = set()

    def for_kind(self, kind: ChangeKind) -> set[Callable[[WorkerInfo], Any]]:
        return {"join": self.node_join, "leave": self.node_leave, "lost": self.node_lost}[kind]
