"""Elections: the total order and the bookkeeping, for each Celery defect fixed."""

from __future__ import annotations

import itertools

import pytest
from kombu.clocks import LamportClock as KombuClock

from wkctl.protocol.election import (
    MAX_ACTIVE_ELECTIONS,
    MAX_FINISHED_ELECTIONS,
    Elections,
    ElectRequest,
    pick_winner,
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
    assert ack and decision is None  # still waiting for its own ack
    decision = el.on_ack("e1", "me@h", now=0.0, alive=[])
    assert decision is not None and decision.won and decision.reason == "complete"
    assert not el.active


def test_acks_count_per_distinct_node_not_per_message() -> None:
    """Celery decides after len(alive) ack *messages*: three acks from one
    node were enough.  Here three peers must each ack."""
    el = Elections("a@h")
    alive = ["b@h", "c@h"]
    for host, clock in (("a@h", 5), ("b@h", 6), ("c@h", 7)):
        assert el.on_request(req(host, clock), 0.0, alive)[1] is None
    for _ in range(5):
        assert el.on_ack("e1", "a@h", 0.0, alive) is None
    assert el.on_ack("e1", "b@h", 0.0, alive) is None
    decision = el.on_ack("e1", "c@h", 0.0, alive)
    assert decision is not None and decision.winner.hostname == "a@h" and decision.won


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
    el.on_request(req("a@h", 10), 0.0, ["b@h"])
    el.on_ack("e1", "a@h", 0.0, ["b@h"])
    decision = el.on_ack("e1", "b@h", 0.0, ["b@h"])
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
