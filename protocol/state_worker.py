"""One worker as the events State sees it: fields, heartbeats, liveness at a given time.

This is the time-explicit core: :meth:`Worker.is_alive` takes ``now``.  The
Celery-compatible ``Worker`` of :mod:`wkctl.protocol.state` adds the
``alive`` / ``status_string`` properties that read the wall clock.
"""

from __future__ import annotations

import bisect
from decimal import Decimal
from typing import Any, Final

from .state_fields import WORKER_RESERVED, clean_worker_fields, number, worker_fields_ok

__all__ = ("Worker", "heartbeat_expires", "HEARTBEAT_EXPIRE_WINDOW")

#: Percentage of ``freq`` after the last heartbeat before a worker is offline.
HEARTBEAT_EXPIRE_WINDOW: Final = 200


def heartbeat_expires(
    timestamp: float, freq: float = 60, expire_window: float = HEARTBEAT_EXPIRE_WINDOW
) -> float:
    """Time when a heartbeat received at ``timestamp`` expires."""
    if isinstance(freq, Decimal):
        freq = float(freq)
    if isinstance(timestamp, Decimal):
        timestamp = float(timestamp)
    return timestamp + (freq * (expire_window / 1e2))


class Worker:
    """State of one worker, from its ``worker-*`` events (and task events).

    Same fields as ``celery.events.state.Worker``: the constructor fields,
    every event field as an attribute, ``heartbeats`` (the last
    ``heartbeat_max`` local receive times, sorted), ``heartbeat_expires``
    derived from them and ``freq``, and ``id`` = ``"hostname.pid"``.
    Equality and hash go by ``hostname``.
    """

    __slots__ = ("__dict__", "__weakref__")

    heartbeat_max = 4
    expire_window = HEARTBEAT_EXPIRE_WINDOW

    _fields = (
        "hostname",
        "pid",
        "freq",
        "heartbeats",
        "clock",
        "active",
        "processed",
        "loadavg",
        "sw_ident",
        "sw_ver",
        "sw_sys",
    )

    def __init__(
        self,
        hostname: str | None = None,
        pid: int | None = None,
        freq: float = 60,
        heartbeats: list[float] | None = None,
        clock: int = 0,
        active: int | None = None,
        processed: int | None = None,
        loadavg: list[float] | None = None,
        sw_ident: str | None = None,
        sw_ver: str | None = None,
        sw_sys: str | None = None,
    ) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats: list[float] = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Worker):
            return self.hostname == other.hostname
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.hostname,
            self.pid,
            self.freq,
            self.heartbeats,
            self.clock,
            self.active,
            self.processed,
            self.loadavg,
            self.sw_ident,
            self.sw_ver,
            self.sw_sys,
        )

    def event(
        self,
        type_: str | None,
        timestamp: float | None = None,
        local_received: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Apply one worker event: copy its fields, then record the heartbeat.

        ``type_`` is the event subject (``"heartbeat"``, ``"online"``,
        ``"offline"``, ``"elect"``, ...).  ``offline`` clears the heartbeats;
        any other subject records ``local_received`` as a heartbeat when both
        times are usable numbers.  Fields that are reserved names or have the
        wrong type are dropped instead of raising.
        """
        if fields:
            if fields.__class__ is dict and worker_fields_ok(fields):
                self.__dict__.update(fields)
            else:
                self.__dict__.update(clean_worker_fields(fields))
        if type_ == "offline":
            self.heartbeats[:] = []
            return
        self._heartbeat(local_received, timestamp)

    def _heartbeat(self, local_received: Any, timestamp: Any) -> None:
        """Insert a heartbeat (local receive time) keeping the newest ``heartbeat_max``."""
        if local_received.__class__ is not float or local_received - local_received:
            local_received = number(local_received)
        if timestamp.__class__ is not float or timestamp - timestamp:
            timestamp = number(timestamp)
        if not local_received or not timestamp:
            return
        heartbeats = self.heartbeats
        if heartbeats.__class__ is not list:  # replaced by a user; keep going
            heartbeats = self.heartbeats = list(heartbeats or ())
        hearts = len(heartbeats)
        if hearts > self.heartbeat_max - 1:
            del heartbeats[0]
        if hearts and local_received > heartbeats[-1]:
            heartbeats.append(local_received)
        else:
            bisect.insort(heartbeats, local_received)

    def update(self, f: Any, **kw: Any) -> None:
        """Set attributes from a mapping (and keywords); reserved names are skipped."""
        d = dict(f, **kw) if kw else f
        for k, v in dict(d).items():
            if k in WORKER_RESERVED and k != "heartbeats":
                continue
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"<Worker: {self.hostname} clock:{self.clock}>"

    @property
    def heartbeat_expires(self) -> float | None:
        """When the last heartbeat expires (``None`` without heartbeats; Celery raises)."""
        heartbeats = self.heartbeats
        if not heartbeats:
            return None
        return heartbeat_expires(heartbeats[-1], self.freq, self.expire_window)

    def is_alive(self, now: float) -> bool:
        """Whether the last heartbeat has not expired at ``now`` (the caller's clock)."""
        heartbeats = self.heartbeats
        if not heartbeats:
            return False
        try:
            return bool(now < heartbeat_expires(heartbeats[-1], self.freq, self.expire_window))
        except (TypeError, ValueError, ArithmeticError):
            return False

    @property
    def id(self) -> str:
        return f"{self.hostname}.{self.pid}"
