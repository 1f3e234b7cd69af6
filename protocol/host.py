"""What a real host process supplies to the sans-IO core.

The core (:mod:`wkctl.protocol.core` and the modules it uses) reads no
clock, pid, hostname, load average or random source and takes no lock;
this module is where those reads live, for the adapters that host nodes
(the binding, the client, the Celery bootsteps, ``wkctl node``).
"""

from __future__ import annotations

import os
import platform
import socket
import threading
import time
import uuid
from typing import Any

from .clock import ClockVerdict, LamportClock
from .config import Environment
from .wire import event

__all__ = [
    "SharedClock",
    "default_nodename",
    "load_average",
    "local_environment",
    "local_event",
    "new_id",
    "sw_ver",
    "utcoffset",
]


def utcoffset() -> float:
    """Hours west of UTC, the way Celery 5.7 reports it (a float)."""
    if time.localtime().tm_isdst and time.daylight:
        return time.altzone / 3600.0
    return time.timezone / 3600.0


def load_average() -> list[float]:
    """The load average triple as Celery reports it (rounded to 2 places)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - platforms without it
        return [0.0, 0.0, 0.0]


def new_id() -> str:
    """A fresh random id (tickets, reply queues, task ids)."""
    return str(uuid.uuid4())


def default_nodename() -> str:
    """``wkctl@<hostname>``, the way Celery names a worker ``celery@<hostname>``."""
    return f"wkctl@{socket.gethostname()}"


def sw_ver() -> str:
    """wkctl's version, as nodes announce it (``sw_ver``)."""
    try:
        from wkctl import __version__
    except ImportError:  # pragma: no cover - partial install
        return "0+unknown"
    return __version__


def local_environment() -> Environment:
    """This process as the core sees it."""
    return Environment(
        hostname=socket.gethostname(),
        pid=os.getpid(),
        sw_sys=platform.system(),
        python_version=platform.python_version(),
        machine=platform.machine(),
        implementation=platform.python_implementation(),
        sw_ver=sw_ver(),
        loadavg=load_average,
        utcoffset=utcoffset,
        new_id=new_id,
    )


def local_event(
    type_: str,
    *,
    hostname: str,
    clock: int | None,
    pid: int | None = None,
    timestamp: float | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """:func:`wkctl.protocol.wire.event` stamped by this process: its pid,
    the current time and UTC offset unless given."""
    return event(
        type_,
        hostname=hostname,
        clock=clock,
        pid=os.getpid() if pid is None else pid,
        timestamp=time.time() if timestamp is None else timestamp,
        utcoffset=utcoffset(),
        **fields,
    )


class SharedClock(LamportClock):
    """A :class:`LamportClock` several threads may use at once.

    The core's clock has no lock (one thread drives a core); a clock that
    threads share (Celery's ``app.clock``, a client's clock used by its
    consumer thread and its callers) takes this one, so that each read-
    modify-write stays atomic."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mutex = threading.RLock()

    @classmethod
    def adopt(cls, clock: LamportClock) -> SharedClock:
        """``clock`` itself if it is shared already, else a shared clock in
        the same state (value, bound, sync flags), to put in its place."""
        if isinstance(clock, SharedClock):
            return clock
        shared = cls(clock.value, max_jump=clock.max_jump, synced=clock.synced)
        shared.bounded = clock.bounded
        return shared

    def forward(self) -> int:
        with self._mutex:
            return super().forward()

    def _merge(self, other: int) -> int:
        with self._mutex:
            return super()._merge(other)

    def receive(self, received: object) -> ClockVerdict:
        with self._mutex:
            return super().receive(received)
