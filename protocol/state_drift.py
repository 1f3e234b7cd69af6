"""Clock drift between a worker and us, and which drifts are worth a log line.

A heartbeat whose sender timestamp is far from our receive time means one
of the two clocks is off (Celery logs "Substantial drift").  Hostnames are
whatever a peer sends, so "once per hostname" alone bounds neither memory
nor the log: :class:`DriftWarnings` also caps the warnings per minute.  It
is a plain value per State, on the caller's clock (the local receive time
of the events), and does no logging itself: whoever owns the I/O takes the
pending warnings and logs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from .state_fields import number

__all__ = (
    "HEARTBEAT_DRIFT_MAX",
    "DRIFT_WARNINGS_PER_MINUTE",
    "DriftWarning",
    "DriftWarnings",
    "drift_of",
)

#: Drift (s) between sender timestamp and local receive time worth a warning.
HEARTBEAT_DRIFT_MAX: Final = 16
#: Drift warnings per minute at most, over all hosts.
DRIFT_WARNINGS_PER_MINUTE: Final = 10
#: Hostnames remembered as already warned about (then forgotten all at once).
DRIFT_HOSTS_REMEMBERED: Final = 1000


def drift_of(local_received: Any, timestamp: Any) -> tuple[float, float, float] | None:
    """``(drift, local_received, timestamp)`` of one heartbeat whose drift exceeds
    :data:`HEARTBEAT_DRIFT_MAX`, else ``None``.

    ``None`` too when either time is missing or not a usable number (such a
    heartbeat is not recorded either).
    """
    lr = number(local_received)
    ts = number(timestamp)
    if not lr or not ts:
        return None
    drift = lr - ts
    if drift > HEARTBEAT_DRIFT_MAX or drift < -HEARTBEAT_DRIFT_MAX:
        return float(drift), float(lr), float(ts)
    return None


@dataclass(frozen=True)
class DriftWarning:
    """One drift worth a warning: the peer's raw hostname and the two times."""

    hostname: Any
    drift: float
    local_received: float
    timestamp: float


class DriftWarnings:
    """Once per hostname (bounded memory), at most ``per_minute`` a minute.

    ``observe`` is fed every excessive drift with the local receive time as
    the clock; warnings that pass both limits queue in ``pending`` until
    :meth:`take`.
    """

    def __init__(self, per_minute: int = DRIFT_WARNINGS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self.warned: set[str] = set()
        self.window_start = float("-inf")
        self.in_window = 0
        self.pending: list[DriftWarning] = []

    def observe(self, hostname: Any, drift: float, local_received: float, timestamp: float) -> bool:
        """Queue a warning for ``hostname`` unless one was queued or the rate is spent."""
        key = str(hostname)
        warned = self.warned
        if key in warned:
            return False
        if len(warned) >= DRIFT_HOSTS_REMEMBERED:
            warned.clear()
        warned.add(key)
        now = local_received
        if now - self.window_start >= 60.0:
            self.window_start, self.in_window = now, 0
        if self.in_window >= self.per_minute:
            return False
        self.in_window += 1
        self.pending.append(DriftWarning(hostname, abs(drift), local_received, timestamp))
        return True

    def take(self) -> list[DriftWarning]:
        """The queued warnings, oldest first; the queue is empty afterwards."""
        out, self.pending = self.pending, []
        return out
