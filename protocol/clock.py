"""Lamport clock with the bounds and the poisoning rule of the spec.

Celery keeps one logical clock per process (``kombu.clocks.LamportClock``):
it moves ``forward`` before every message sent and ``adjust``s to
``max(own, received) + 1`` on every message received.  Celery trusts every
received value, so one forged message carrying ``2**70`` (or a string)
either breaks every worker that reads it or drags every clock to a value no
peer can represent any more.  wkctl's clock is the same counter with three
rules added (spec: clock section):

* values are integers in ``0 .. 2**63 - 1`` (``MAX_CLOCK``); anything else
  is not a clock value and is ignored;
* during the initial Mingle sync (until it synced with a peer: see
  :meth:`LamportClock.mark_synced` and :meth:`LamportClock.anchor`)
  a received value is adopted only if it is at most ``2**53 - 1``
  (``MAX_SAFE_CLOCK``, the largest integer every JSON implementation reads
  exactly);
* after the sync, a value more than ``max_jump`` above the current value is
  ignored (not adopted): a real peer is never that far ahead of a node that
  already synchronised with the cluster.

Ignoring a value still counts the receive as a local event (the clock moves
forward by one), so the Lamport property "every receive increments" holds.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MAX_CLOCK",
    "MAX_SAFE_CLOCK",
    "ClockVerdict",
    "LamportClock",
    "parse_clock",
]

#: Largest clock value on the wire (a signed 64-bit integer).
MAX_CLOCK = 2**63 - 1
#: Largest value adopted before the initial sync (exact in IEEE doubles).
MAX_SAFE_CLOCK = 2**53 - 1
#: Default bound on one adjustment after the initial sync.
DEFAULT_MAX_JUMP = 10_000_000


def parse_clock(value: object) -> int | None:
    """The clock value carried by a message, or ``None`` if it is not one.

    ``bool`` is refused although it is an ``int`` in Python: ``true`` on the
    wire is a type error, not the clock value 1.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if value < 0 or value > MAX_CLOCK:
        return None
    return value


@dataclass(frozen=True)
class ClockVerdict:
    """What happened to one received clock value.

    ``adopted`` is False when the value was ignored; ``reason`` then says
    why (it is what the node logs, rate-limited per sender).
    """

    value: int
    adopted: bool
    reason: str = ""


class LamportClock:
    """A Lamport clock that cannot be poisoned by one message.

    No lock: one thread drives a core.  A clock that threads share takes
    :class:`wkctl.protocol.host.SharedClock` (the same rules, locked).
    """

    def __init__(
        self,
        initial_value: int = 0,
        *,
        max_jump: int = DEFAULT_MAX_JUMP,
        synced: bool = False,
    ) -> None:
        self.value = min(max(int(initial_value), 0), MAX_CLOCK)
        self.max_jump = max_jump
        #: the initial Mingle round is over
        self.synced = synced
        #: jumps are bounded: the clock was synced with at least one peer
        self.bounded = synced

    def mark_synced(self, peer: bool = True) -> None:
        """The initial Mingle round is over.  ``peer`` says whether it synced
        with at least one peer: only then are jumps bounded; a node that found
        nobody keeps the initial-sync rule until :meth:`anchor` (its first
        peer), or it could never catch up with a long-running cluster whose
        clocks are more than ``max_jump`` ahead."""
        self.synced = True
        if peer:
            self.bounded = True

    def anchor(self) -> None:
        """A peer's clock was adopted: from now on bound every jump."""
        self.bounded = True

    def forward(self) -> int:
        """Count a local event (a send); saturates at ``MAX_CLOCK``."""
        if self.value < MAX_CLOCK:
            self.value += 1
        return self.value

    def adjust(self, other: int) -> int:
        """Celery's rule ``max(own, other) + 1`` for a trusted value.

        Callers handling values from the wire use :meth:`receive`, which
        applies the bounds first.
        """
        return self._merge(other)

    def _merge(self, other: int) -> int:
        # One home for the rule, so that a subclass may route ``adjust``
        # through :meth:`receive` (wkctl.celery's app clock does).
        self.value = min(max(self.value, other) + 1, MAX_CLOCK)
        return self.value

    def check(self, received: object) -> str:
        """Why ``received`` would be ignored, or ``""`` if it may be adopted."""
        value = parse_clock(received)
        if value is None:
            return "not a clock value (an integer in 0..2**63-1)"
        if not self.bounded:
            if value > MAX_SAFE_CLOCK:
                return f"clock {value} above 2**53-1 during the initial sync"
            return ""
        if value > self.value + self.max_jump:
            return f"clock {value} jumps more than {self.max_jump} above {self.value}"
        return ""

    def receive(self, received: object) -> ClockVerdict:
        """Apply a clock value read from a message, under the spec's bounds."""
        reason = self.check(received)
        if reason:
            return ClockVerdict(self.forward(), False, reason)
        assert isinstance(received, int)
        return ClockVerdict(self._merge(received), True)

    def __repr__(self) -> str:
        return f"<LamportClock: {self.value}{'' if self.bounded else ' (syncing)'}>"
