"""The one reconnect-with-backoff policy of wkctl's broker adapters.

Both the node binding (:class:`~wkctl.protocol.binding.Binding`) and the
event stream (:class:`~wkctl.protocol.client.EventStream`) reconnect to a
broker that dropped them the same way: wait ``start`` seconds, then double
the wait after every failed attempt, never beyond ``max``.  The policy is
plain data and arithmetic (sans-IO): the adapters do the sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKOFF", "Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``start``, doubling to at most ``max`` seconds."""

    #: seconds before the first attempt
    start: float = 0.1
    #: the longest wait between two attempts
    max: float = 5.0
    #: how much longer each wait is than the previous one
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not (self.start > 0 and self.max >= self.start and self.factor >= 1):
            raise ValueError(f"bad backoff policy {self!r}: need 0 < start <= max, factor >= 1")

    def next(self, delay: float) -> float:
        """The wait after an attempt that followed a wait of ``delay`` failed."""
        return min(delay * self.factor, self.max)


#: The policy every adapter uses unless told otherwise.
BACKOFF = Backoff()
