"""Which MUST statements of the spec the kit does not probe, and why.

Every MUST statement of the spec is either verified by at least one check
(its own or in ``also``), marked in the spec itself as "not testable from
outside", or listed here with the reason a probe of a running node cannot
verify it.  A test holds the three together: a new MUST statement in the
spec fails the suite until it gets a check or an entry here, and an entry
here fails it once a check covers the statement or the spec marks it.

What no probe could ever see (a monitor's State, a requester's handling of
replies, a node's private view of its peers, its log) is marked in the spec.
The entries left here could be observed in principle, but not by a probe
that must stay harmless to the node and to the other nodes on the broker:
they need destructive volumes, long waits, or a task to run.
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Statement

__all__ = ["NOT_PROBED", "uncovered"]


#: statement id -> why ``wkctl conform`` does not probe it
NOT_PROBED: dict[str, str] = {
    "PIDBOX-10": "no command fails portably on a valid request (a node that runs no tasks has nothing to fail)",
    "LIMIT-3": "destructive: 50,001 revoked ids would evict the node's real revoked ids",
    "REVOKED-1": "needs 50,000 ids or 3 hours of expiry; destructive on a node in use",
    "SEC-8": "whether a winner refuses unregistered topics is not on the wire (the probe's election topic is unregistered everywhere)",
    "EVENT-4": "the probe runs no tasks, so the node sends no task events",
    "CONTROL-9": "destructive: shutdown stops the node under test (wkctl's own tests check it)",
    "ELECT-7": "needs an election left undecided for the election timeout (10 s by default)",
    "PIDBOX-21": "destructive: one such broadcast silences every Celery 5.2-5.6 worker on Redis (DEFECT-27); tests/test_celery_harden.py checks it",
}


def uncovered(statements: Iterable[Statement], covered: set[str]) -> list[str]:
    """MUST statements with no check, not marked untestable, not listed above."""
    return [
        s.id
        for s in statements
        if s.level == "MUST" and s.testable and s.id not in covered and s.id not in NOT_PROBED
    ]
