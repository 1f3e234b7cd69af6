"""Which MUST statements of the spec the kit does not probe, and why.

Every MUST statement of the spec is either verified by at least one check
(its own or in ``also``), marked in the spec itself as "not testable from
outside", or listed here with the reason a probe of a running node cannot
verify it.  A test holds the three together: a new MUST statement in the
spec fails the suite until it gets a check or an entry here, and an entry
here fails it once a check covers the statement.

Most entries are requirements on another role than a node under probe (a
requester, a monitor's State), or effects that never appear on the wire;
a few would need the spec to document a Celery defect first, because real
Celery workers violate them and a conformance run must then report a known
deviation rather than a failure (see the statements' reasons).
"""

from __future__ import annotations

from collections.abc import Iterable

from .model import Statement

__all__ = ["NOT_PROBED", "uncovered"]

_REQUESTER = (
    "a requirement on requesters (clients, and a node's own Mingle), not on the node's answers"
)
_STATE = "a requirement on State (monitors), whose view is not on the wire"
_INTERNAL = "an effect inside the node that no message shows"

#: statement id -> why ``wkctl conform`` does not probe it
NOT_PROBED: dict[str, str] = {
    "TRANSPORT-8": "task events reach a node's worker.# binding only on Redis, and ignoring them has no visible effect",
    "TRANSPORT-10": "about transports other than AMQP and Redis, where Mingle and Gossip are not defined",
    "PIDBOX-7": "a reply to a request without reply_to has no address a probe could watch",
    "PIDBOX-10": "no command fails portably on a valid request (a node that runs no tasks has nothing to fail)",
    "PIDBOX-16": _REQUESTER,
    "MSG-5": "real Celery workers act on schema-invalid requests and the spec documents no defect for it yet: a probe would fail every Celery worker",
    "LIMIT-1": "needs messages over 8 MiB; Celery workers have no body limit and the spec documents no defect for it yet",
    "LIMIT-2": "Celery workers have no nesting limit and the spec documents no defect for it yet",
    "LIMIT-3": "destructive: 50,001 revoked ids would evict the node's real revoked ids",
    "SEC-2": "see LIMIT-1 and LIMIT-2",
    "SEC-4": "logging is not on the wire",
    "SEC-8": "whether a winner refuses unregistered topics is not on the wire (the probe's election topic is unregistered everywhere)",
    "REVOKED-1": "needs 50,000 ids or 3 hours of expiry; destructive on a node in use",
    "REVOKED-3": _INTERNAL + " (stamps are never sent back in the list form)",
    "REVOKED-5": "Celery 4.4 to 5.6 answer hello in the mapping form and the spec documents it as a version difference, not a defect",
    "EVENT-4": "the probe runs no tasks, so the node sends no task events",
    "EVENT-6": _INTERNAL,
    "GOSSIP-3": _INTERNAL + " (the node's view of its peers)",
    "GOSSIP-4": _INTERNAL + " (the node's view of its peers)",
    "GOSSIP-8": _INTERNAL + " (the node's view of its peers)",
    "ELECT-4": _INTERNAL,
    "ELECT-7": "needs an election left undecided for the election timeout (10 s by default)",
    "STATE-1": _STATE,
    "STATE-2": _STATE,
    "STATE-3": _STATE,
    "STATE-4": _STATE,
    "STATE-5": _STATE,
    "STATE-6": _STATE,
}


def uncovered(statements: Iterable[Statement], covered: set[str]) -> list[str]:
    """MUST statements with no check, not marked untestable, not listed above."""
    return [
        s.id
        for s in statements
        if s.level == "MUST" and s.testable and s.id not in covered and s.id not in NOT_PROBED
    ]
