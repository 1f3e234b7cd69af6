"""The Celery-rule replay against Celery's own gossip code (needs Celery importable)."""

from __future__ import annotations

import logging
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.clocks import LamportClock as KombuClock

from wkctl.protocol.election import Arrival, ElectRequest, replay_celery

HOSTS = ["a@h", "b@h", "c@h", "d@h"]
arrivals = st.lists(
    st.one_of(
        st.builds(
            lambda h, c: Arrival(h, ElectRequest("e1", c, h, 7, "task")),
            st.sampled_from(HOSTS),
            st.integers(1, 3),
        ),
        st.builds(Arrival, st.sampled_from(HOSTS)),
    ),
    max_size=14,
)


def run_celery_gossip(me: str, pid: int, peers: int, order: list[Arrival]) -> str:
    """Celery's own ``Gossip.election`` / ``on_elect`` / ``on_elect_ack`` (the
    installed release's code, unmodified) run over ``order``: the leader id it
    decided, ``"crash"`` when it raised, ``"undecided"`` otherwise."""
    from celery.worker.consumer import gossip as celery_gossip

    decided: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if msg.startswith("I won the election"):
                decided.append(f"{me}.{pid}")
            elif " elected for " in msg:
                decided.append(msg.split()[1])

    g: Any = SimpleNamespace(
        consensus_requests=defaultdict(list),
        consensus_replies={},
        state=SimpleNamespace(alive_workers=lambda: [f"peer{i}" for i in range(peers)]),
        clock=KombuClock(),
        full_hostname=f"{me}.{pid}",
        dispatcher=SimpleNamespace(send=lambda *a, **kw: None),
        election_handlers={"task": lambda action: None},
        _cons_stamp_fields=celery_gossip.Gossip._cons_stamp_fields,
    )
    grab = Grab()
    celery_gossip.logger.addHandler(grab)
    old = celery_gossip.logger.level
    celery_gossip.logger.setLevel(logging.INFO)
    try:
        celery_gossip.Gossip.election(g, "e1", "task", None)
        for a in order:
            if a.request is not None:
                r = a.request
                ev = {"id": r.id, "clock": r.clock, "hostname": r.hostname, "pid": r.pid}
                celery_gossip.Gossip.on_elect(g, dict(ev, topic="task", action=None, cver=1))
            else:
                try:
                    celery_gossip.Gossip.on_elect_ack(g, {"id": "e1", "hostname": a.hostname})
                except IndexError:
                    return "crash"
            if decided:
                return decided[0]
    finally:
        celery_gossip.logger.removeHandler(grab)
        celery_gossip.logger.setLevel(old)
    return "undecided"


@settings(max_examples=300, deadline=None)
@given(order=arrivals, peers=st.integers(0, 4))
def test_celery_replay_equals_celerys_own_gossip_code_on_any_order(
    order: list[Arrival], peers: int
) -> None:
    """DEFECT-1/2/4 replayed exactly: the installed Celery's Gossip methods,
    fed the same arrivals, decide the same leader, or crash, or wait."""
    mine = replay_celery("a@h", peers, order)
    theirs = run_celery_gossip("a@h", 7, peers, order)
    if mine.crashed:
        assert theirs == "crash"
    elif mine.winner is not None:
        assert theirs == mine.winner.node_id
    else:
        assert theirs == "undecided"
