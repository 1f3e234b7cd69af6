"""Elections: the total order and the bookkeeping, for each Celery defect fixed."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.clocks import LamportClock as KombuClock

from wkctl.protocol.election import (
    MAX_ACTIVE_ELECTIONS,
    MAX_FINISHED_ELECTIONS,
    Arrival,
    Elections,
    ElectRequest,
    election_hazard,
    mixed_rules_warning,
    pick_winner,
    replay_celery,
    replay_spec,
)


def req(hostname: str, clock: int, pid: int = 1, id_: str = "e1") -> ElectRequest:
    return ElectRequest(id_, clock, hostname, pid, "task", {"task": "tasks.add"})


def test_celery_sort_heap_crashes_on_a_lone_request_and_ours_does_not() -> None:
    lone = [(5, "w1@h.1", "task", None)]
    with pytest.raises(IndexError):
        KombuClock().sort_heap(lone)  # the defect that kills a lone Celery worker
    assert pick_winner([req("w1@h", 5)]).hostname == "w1@h"


def test_ties_among_many_requests_are_broken_by_hostname_pid_in_every_order() -> None:
    requests = [req("c@h", 7), req("a@h", 7), req("b@h", 7), req("d@h", 7), req("z@h", 3, pid=9)]
    for perm in itertools.permutations(requests[:4]):
        assert pick_winner(perm).hostname == "a@h"
    for perm in itertools.permutations(requests):
        assert pick_winner(perm).hostname == "z@h"  # the lower clock wins first


def test_clock_is_compared_numerically_and_pid_as_text() -> None:
    assert pick_winner([req("a@h", 10), req("b@h", 9)]).hostname == "b@h"
    # same clock and hostname: "a@h.10" < "a@h.9" as strings, like Celery's id
    assert pick_winner([req("a@h", 1, pid=9), req("a@h", 1, pid=10)]).pid == 10


def test_identical_entries_give_one_answer() -> None:
    same = [req("a@h", 4), req("a@h", 4), req("a@h", 4)]
    assert pick_winner(same) == same[0]


def test_lone_node_decides_itself() -> None:
    el = Elections("me@h")
    el.record_own(req("me@h", 3), now=0.0, alive=[])
    ack, decision = el.on_request(req("me@h", 3), now=0.0, alive=[])
    assert ack and decision is not None and decision.won and decision.reason == "complete"
    assert not el.active


def test_decides_at_the_last_expected_request_and_acks_change_nothing() -> None:
    """Celery decides after len(alive) ack *messages*, three from one node
    being enough, on whatever requests it has.  Here the decision comes with
    the last expected request, whatever the acks ([ELECT-5]): an ack names
    no request, so waiting for acks could not change the winner."""
    el = Elections("a@h")
    alive = ["b@h", "c@h"]
    for _ in range(5):
        assert el.on_ack("e1", "a@h", 0.0, alive) is None  # acks alone decide nothing
    assert el.on_request(req("a@h", 5), 0.0, alive)[1] is None
    assert el.on_request(req("b@h", 6), 0.0, alive)[1] is None
    _, decision = el.on_request(req("c@h", 7), 0.0, alive)
    assert decision is not None and decision.winner.hostname == "a@h" and decision.won
    assert el.on_ack("e1", "c@h", 0.0, alive) is None  # finished: late acks are ignored


def test_decision_waits_for_every_expected_request() -> None:
    """All acks in but one expected node's worker-elect missing: no decision
    (Celery would decide on an incomplete set)."""
    el = Elections("a@h")
    alive = ["b@h", "c@h"]
    el.on_request(req("a@h", 9), 0.0, alive)
    el.on_request(req("b@h", 8), 0.0, alive)
    for host in ("a@h", "b@h", "c@h"):
        assert el.on_ack("e1", host, 0.0, alive) is None
    ack, decision = el.on_request(req("c@h", 1), 0.1, alive)
    assert ack and decision is not None
    assert decision.winner.hostname == "c@h" and not decision.won


def test_timeout_decides_among_received_and_forgets_the_election() -> None:
    el = Elections("a@h", timeout=10.0)
    alive = ["b@h", "dead@h"]
    el.on_request(req("a@h", 4), 100.0, alive)
    el.on_request(req("b@h", 2), 100.0, alive)
    el.on_ack("e1", "a@h", 100.0, alive)
    el.on_ack("e1", "b@h", 100.0, alive)
    assert el.expire(109.9) == []
    [(id_, decision)] = el.expire(110.0)
    assert id_ == "e1" and decision is not None
    assert decision.reason == "timeout" and decision.winner.hostname == "b@h"
    assert decision.missing == ("dead@h",)
    assert not el.active and el.next_deadline() is None
    # a late request of the finished election is acked once, never re-decided
    ack, late = el.on_request(req("dead@h", 0), 111.0, alive)
    assert ack and late is None and not el.active


def test_each_request_is_acked_once_per_id_and_sender() -> None:
    el = Elections("a@h")
    alive = ["b@h"]
    acks = [el.on_request(req("b@h", 2), 0.0, alive)[0] for _ in range(3)]
    assert acks == [True, False, False]
    assert el.on_request(req("b@h", 2, id_="e2"), 0.0, alive)[0] is True


def test_a_duplicate_request_cannot_change_the_outcome() -> None:
    el = Elections("a@h")
    el.on_request(req("b@h", 50), 0.0, ["b@h"])
    el.on_request(req("b@h", 1), 0.0, ["b@h"])  # forged second request
    _, decision = el.on_request(req("a@h", 10), 0.0, ["b@h"])
    assert decision is not None and decision.winner.hostname == "a@h"


def test_state_stays_bounded_under_a_flood_of_election_ids() -> None:
    el = Elections("a@h", timeout=10.0)
    for i in range(MAX_ACTIVE_ELECTIONS + MAX_FINISHED_ELECTIONS + 500):
        el.on_request(req("x@h", 1, id_=f"flood-{i}"), 0.0, ["x@h", "y@h"])
    assert len(el.active) <= MAX_ACTIVE_ELECTIONS
    assert len(el.finished) <= MAX_FINISHED_ELECTIONS
    el.expire(100.0)
    assert not el.active and not el._acked


def test_no_request_at_all_times_out_without_a_decision() -> None:
    el = Elections("a@h", timeout=1.0)
    el.on_ack("ghost", "x@h", 0.0, [])
    assert el.expire(1.0) == [("ghost", None)]
    assert not el.active


def test_forgetting_a_departed_peer_completes_the_election() -> None:
    el = Elections("a@h", timeout=100.0)
    alive = ["b@h", "gone@h"]
    el.on_request(req("a@h", 4), 0.0, alive)
    el.on_request(req("b@h", 3), 0.0, alive)
    el.on_ack("e1", "a@h", 0.0, alive)
    assert el.on_ack("e1", "b@h", 0.0, alive) is None
    [decision] = el.forget("gone@h")
    assert decision.winner.hostname == "b@h" and decision.reason == "complete"
    assert not el.active and el.forget("b@h") == []


# -- replaying each participant's decision -----------------------------------


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


def test_celery_replay_decides_on_a_partial_heap_and_crashes_on_a_lone_request() -> None:
    a, b, c = req("a@h", 5), req("b@h", 4), req("c@h", 1)
    # three workers: after two ack messages Celery decides on what it has
    order = [
        Arrival("a@h", a),
        Arrival("b@h", b),
        Arrival("a@h"),
        Arrival("b@h"),
        Arrival("c@h", c),
    ]
    partial = replay_celery("a@h", 2, order)
    assert partial.winner == b and partial.counted == 2 and partial.at == 3
    # the spec's rule waits for c's request, the lowest
    assert replay_spec("a@h", HOSTS[:3], order + [Arrival("c@h")]).winner == c
    # two workers: the first ack before the second request kills the worker
    crash = replay_celery("a@h", 1, [Arrival("a@h", a), Arrival("a@h"), Arrival("b@h", b)])
    assert crash.crashed and crash.winner is None and crash.at == 1


def test_hazard_names_lone_and_two_participant_elections_only() -> None:
    assert "alone" in (election_hazard({"w@h": "celery"}) or "")
    two = election_hazard({"w@h": "celery", "n@h": "wkctl"}) or ""
    assert "two participants" in two and "w@h" in two and "DEFECT-1" in two
    assert election_hazard({"w@h": "celery", "n@h": "wkctl", "m@h": "wkctl"}) is None
    assert election_hazard({"w@h": "hardened"}) is None
    assert election_hazard({"n@h": "wkctl", "m@h": "wkctl"}) is None
    mixed = mixed_rules_warning({"w@h": "celery", "n@h": "wkctl", "m@h": "hardened"}) or ""
    assert "w@h" in mixed and "after 2 ack messages" in mixed and "DEFECT-2" in mixed
    assert mixed_rules_warning({"w@h": "celery", "v@h": "celery"}) is None
    assert mixed_rules_warning({"n@h": "wkctl", "m@h": "hardened"}) is None


@st.composite
def views(draw: Any, n: int) -> tuple[list[ElectRequest], list[list[Arrival]]]:
    """N nodes with random clocks; each node's own order of the N requests and
    N^2 acks, respecting what any broker guarantees: one sender's events in
    the order it sent them (acks carry only the election id, so where they
    fall among the requests is left free)."""
    hosts = [f"n{i}@h" for i in range(n)]
    reqs = [ElectRequest("e1", draw(st.integers(1, 3)), h, i, "task") for i, h in enumerate(hosts)]
    # each node sends its N acks and, anywhere among them (it may ack
    # others' requests before its own command reached it), its request
    sent: dict[str, list[Arrival]] = {}
    for i, h in enumerate(hosts):
        stream = [Arrival(h) for _ in reqs]
        stream.insert(draw(st.integers(0, n)), Arrival(h, reqs[i]))
        sent[h] = stream
    out = []
    for _ in hosts:
        queues = {h: list(s) for h, s in sent.items()}
        view: list[Arrival] = []
        while any(queues.values()):
            h = draw(st.sampled_from(sorted(k for k, q in queues.items() if q)))
            view.append(queues[h].pop(0))
        out.append(view)
    return reqs, out


@settings(max_examples=200, deadline=None)
@given(data=st.data(), n=st.integers(2, 6))
def test_reference_nodes_never_elect_two_winners(data: Any, n: int) -> None:
    """Every node's Elections, fed its own order of the same events, decides
    the same winner: the lowest request.  No double winner, whatever order
    each queue delivered in."""
    reqs, orders = data.draw(views(n))
    hosts = [r.hostname for r in reqs]
    winners = set()
    for me, order in zip(hosts, orders, strict=True):
        el = Elections(me)
        alive = [h for h in hosts if h != me]
        decision = None
        for a in order:
            if a.request is not None:
                _, d = el.on_request(a.request, 0.0, alive)
            else:
                d = el.on_ack("e1", a.hostname, 0.0, alive)
            decision = decision or d
        assert decision is not None
        winners.add(decision.winner)
        assert replay_spec(me, hosts, order).winner == decision.winner
    assert winners == {pick_winner(reqs)}
