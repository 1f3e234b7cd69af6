"""Mingle: the ``hello`` exchange that syncs a starting node with its peers.

A starting node broadcasts the pidbox request ``hello {from_node, revoked}``
(``revoked`` = its own ids, oldest first) and collects the replies
``{nodename: {"clock": N, "revoked": ids}}``; from each it adjusts its clock
and merges the revoked ids (list form from Celery 5.7, mapping form from
4.2-5.6).  Peers answering a ``hello`` merge the asker's ids too.

When to stop collecting: Celery always waits its full 1 s timeout.  wkctl
stops at ``timeout`` (1.0 s by default, like Celery) at the latest, but
also as soon as replies have stopped arriving for ``settle`` seconds after
the first one (our own ``null`` reply counts: it proves the round trip
works).  Local peers answer within milliseconds, so a node usually syncs
in a fraction of Celery's second; a peer slower than ``settle`` behind the
previous reply is missed, and gets synced when *it* next says hello or
through its gossip (spec: Mingle section).

Sans-IO: :class:`MingleSession` is fed replies and ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_MINGLE_SETTLE",
    "DEFAULT_MINGLE_TIMEOUT",
    "MingleSession",
    "SyncResult",
]

DEFAULT_MINGLE_TIMEOUT = 1.0
DEFAULT_MINGLE_SETTLE = 0.2


@dataclass
class SyncResult:
    """Outcome of one Mingle round, for logs and tests."""

    peers: list[str] = field(default_factory=list)  # nodes synced with
    failed: dict[str, str] = field(default_factory=dict)  # node -> reason
    revoked_added: int = 0
    clock: int = 0


class MingleSession:
    """One ``hello`` round: the ticket, the replies, and when it is over."""

    def __init__(
        self,
        me: str,
        now: float,
        timeout: float = DEFAULT_MINGLE_TIMEOUT,
        settle: float = DEFAULT_MINGLE_SETTLE,
        *,
        ticket: str,
    ) -> None:
        self.me = me
        self.ticket = ticket
        self.started = now
        self.timeout = timeout
        self.settle = settle
        self.last_reply: float | None = None
        self.replies: dict[str, Any] = {}
        self.done = False

    def arguments(self, revoked_ids: list[str]) -> dict[str, Any]:
        """The ``hello`` arguments: Celery's ``{from_node, revoked}``."""
        return {"from_node": self.me, "revoked": revoked_ids}

    def on_reply(self, body: Mapping[str, Any], now: float) -> list[tuple[str, Any]]:
        """Record one reply body ``{nodename: value}``; returns the new
        ``(nodename, value)`` pairs from peers (our own reply and a second
        reply from the same node are dropped)."""
        if self.done:
            return []
        self.last_reply = now
        fresh: list[tuple[str, Any]] = []
        for nodename, value in body.items():
            if nodename == self.me or nodename in self.replies:
                continue
            self.replies[nodename] = value
            fresh.append((nodename, value))
        return fresh

    def deadline(self) -> float:
        """When :meth:`is_over` becomes true if nothing else arrives."""
        hard = self.started + self.timeout
        if self.last_reply is None:
            return hard
        return min(hard, self.last_reply + self.settle)

    def is_over(self, now: float) -> bool:
        return self.done or now >= self.deadline()

    def finish(self) -> None:
        self.done = True


def sync_fields(value: object) -> tuple[Any, Any, str]:
    """Split one hello reply value into ``(clock, revoked, error)``.

    Celery's ``sync_with_node(c, clock=None, revoked=None, **kwargs)``
    accepts any mapping; a value that is not one (``null`` from a node
    replying to its own hello, a string from a broken peer) is an error
    that is logged and skipped, never fatal.  So is ``{"error": ...}``, the
    reply of a node whose ``hello`` handler failed ([MINGLE-3]): it carries
    no state, so the node is neither synced with nor trusted as a clock
    anchor.
    """
    if value is None:
        return None, None, "empty reply"
    if not isinstance(value, Mapping):
        return None, None, f"reply is a {type(value).__name__}, not an object"
    if "error" in value:
        return None, None, f"error reply: {str(value.get('error'))[:200]}"
    return value.get("clock"), value.get("revoked"), ""
