"""Which probes a known defect turns into an outage of nodes other than the
one under test: pure rules over what the nodes announce.

A pidbox request with a ``matcher`` kombu does not know is a broadcast
(every node on the broker receives it before deciding whether it is
addressed to it).  Celery 5.2.7 to 5.6.3 on Redis, with the kombu each was
published with (5.2.4 to 5.6.2), raise ``MatcherNotInstalled`` on it, reset
their control channel and answer no control command afterwards, Mingle's
``hello`` included (DEFECT-15).  Sending that probe would silence every such
worker on the broker, not only the node under test.

The decision uses the kombu release a node reports in its ``report`` reply
(``software -> celery:5.4.0 (opalescent) kombu:5.3.7 ...``, Celery's
``bugreport``), and the peer kind of its heartbeats: a Celery worker whose
kombu is unknown counts as affected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from wkctl.protocol.vocab import REDIS_TRANSPORTS, PeerKind

__all__ = [
    "MATCHER_OUTAGE_KOMBU",
    "PeerSoftware",
    "matcher_outage",
    "software_from_report",
]

#: kombu releases [first, end) whose Redis transport resets the control
#: channel on an unknown matcher (measured: 5.2.4 to 5.6.2 affected, 4.6.11,
#: 5.0.2, 5.1.0 and 5.7.0 not)
MATCHER_OUTAGE_KOMBU: tuple[tuple[int, int, int], tuple[int, int, int]] = ((5, 2, 0), (5, 7, 0))

_REPORT = re.compile(r"celery:(?P<celery>[0-9][^\s]*)[^\n]*?kombu:(?P<kombu>[0-9][^\s]*)")


@dataclass(frozen=True)
class PeerSoftware:
    """What one node on the broker announced about itself."""

    name: str
    #: from its heartbeats (``peer_kind``), None when it sent none
    kind: PeerKind | None
    #: Celery and kombu releases from its ``report`` reply, None when unknown
    celery: str | None = None
    kombu: str | None = None


def software_from_report(text: object) -> tuple[str | None, str | None]:
    """(celery, kombu) releases from the text of a ``report`` reply."""
    if not isinstance(text, str):
        return None, None
    found = _REPORT.search(text)
    if found is None:
        return None, None
    return found.group("celery"), found.group("kombu")


def _release(text: str) -> tuple[int, ...] | None:
    parts = re.findall(r"\d+", text)[:3]
    if len(parts) < 2:
        return None
    return tuple(int(p) for p in parts)


def matcher_outage(transport: str, peers: Mapping[str, PeerSoftware]) -> dict[str, str]:
    """The nodes an unknown-matcher broadcast would silence, each with why.

    Only kombu's Redis transport is affected.  A node is at risk when it
    reports a kombu in :data:`MATCHER_OUTAGE_KOMBU`, or when it is a Celery
    worker (by its heartbeats or its ``report``) whose kombu is unknown.
    """
    if transport not in REDIS_TRANSPORTS:
        return {}
    first, end = MATCHER_OUTAGE_KOMBU
    risky: dict[str, str] = {}
    for name, peer in peers.items():
        if peer.kombu is not None:
            version = _release(peer.kombu)
            if version is None:
                risky[name] = f"unreadable kombu release {peer.kombu!r}"
            elif first <= version < end:
                risky[name] = f"Celery {peer.celery or '?'} with kombu {peer.kombu}"
        elif peer.kind in ("celery", "hardened") or peer.celery is not None:
            risky[name] = "a Celery worker whose kombu release is unknown"
    return risky
