"""What a conformance run learns about the node, one typed field per fact.

A check that needs what an earlier check did declares it
(``@check(..., needs=("election.ack-peer",))``): the runner then runs that
check first even under ``--only``, so a selected check gives the result it
gives in a full run.  The facts below are where such checks leave what they
found; each says who writes it.  Observations any check may need (the
node's heartbeats, the software of its peers) are computed on first use by
whichever check asks and cached here, so they need no declaration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Facts"]


@dataclass
class Facts:
    # -- the node's identity (the runner, from the node's heartbeats) --------
    sw_ident: str | None = None
    peer_kind: str | None = None
    sw_ver: Any = None
    freq: Any = None
    #: the field hardened Celery workers add (``vocab.HARDENED_FIELD``)
    wkctl_ver: Any = None

    # -- the run (the runner) --------------------------------------------------
    #: the opening ping's result
    opening_ping: Any = None
    #: when every node was asked for a heartbeat (``time.monotonic()``)
    heartbeat_asked: float | None = None
    launched_at: float | None = None
    stopped_at: float | None = None
    killed: bool = False
    exit_code: int | None = None
    #: the synthetic peer announced itself to the node (any check that sends
    #: its heartbeat): the runner takes it out again at the end
    peer_announced: bool = False

    # -- observations cached on first use (any check) -------------------------
    one_reply: Any = None
    peer_software: dict[str, Any] | None = None
    heartbeats: list[Any] | None = None
    heartbeats_until: float | None = None

    # -- produced by a check, declared with ``needs`` by its consumers -------
    #: the election the synthetic peer stood in (``election.ack-peer``)
    election: str | None = None
    #: the node acknowledged the peer's ``worker-elect`` (``election.ack-peer``)
    peer_acked: bool = False
    #: the node stood in that election (``election.elect``)
    stood: bool = False

    def identity(self) -> dict[str, Any]:
        """The node's announced software, for the report."""
        return {
            k: v
            for k, v in (("sw_ident", self.sw_ident), ("sw_ver", self.sw_ver), ("freq", self.freq))
            if v is not None
        }
