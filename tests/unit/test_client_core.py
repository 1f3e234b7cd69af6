"""The client's sans-IO rules, on messages captured from real Celery 5.7 and 5.4
workers (``tests/data``): revoked normalization, the reply collector, event
decoding and stamping, the election watch. Their kombu layer is in
``tests/integration/test_client.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wkctl.protocol.client import (
    ElectionWatch,
    ReplyCollector,
    decode_events,
    election_participants,
    hello_table,
    normalize_revoked,
    prepare_event,
)
from wkctl.protocol.clock import LamportClock
from wkctl.protocol.wire import Rejected

DATA = Path(__file__).resolve().parents[1] / "data"
CAPTURES = ["celery-5.7+5.4-amqp.ndjson", "celery-5.7+5.4-redis.ndjson"]


def records(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_normalize_revoked_list_and_mapping_forms() -> None:
    assert normalize_revoked(["a", "b", "a"]) == ["a", "b"]
    assert normalize_revoked({"x": [12.5, "x"], "y": [13.0, "y"]}) == ["x", "y"]
    assert normalize_revoked({"z": 3.0}) == ["z"]
    assert normalize_revoked(None) == []
    assert normalize_revoked({}) == []
    assert normalize_revoked("abc") == []
    assert normalize_revoked(["ok", 5, None, {"a": 1}]) == ["ok"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_hello_replies_of_celery_57_and_54_normalize_alike(capture: str) -> None:
    replies: dict[str, Any] = {}
    forms = set()
    for rec in records(capture):
        if rec["kind"] == "pidbox-reply:hello":
            replies.update(rec["body"])
            for value in rec["body"].values():
                forms.add(type(value["revoked"]).__name__)
    assert forms == {"list", "dict"}, "the capture should hold both wire forms"
    table = hello_table(replies)
    assert len(table) == 3
    revoked_sets = {tuple(sorted(info["revoked"])) for info in table.values()}
    assert len(revoked_sets) == 1, table  # same ids whatever the form
    assert all(isinstance(info["clock"], int) for info in table.values())


def test_hello_table_skips_null_and_malformed_values() -> None:
    table = hello_table({"self@x": None, "bad@x": [1], "ok@x": {"clock": 5, "revoked": {}}})
    assert table == {"ok@x": {"clock": 5, "revoked": []}}


def test_collector_matches_ticket_adjusts_clock_and_stops_at_expect() -> None:
    clock = LamportClock()
    c = ReplyCollector("hello", "T1", expect=2, clock=clock, published_at=100.0)
    assert not c.feed({"a@x": {"clock": 7}}, {"ticket": "OTHER", "clock": 50}, 100.001)
    assert c.result.replies == {}
    assert clock.value == 51  # every reply's clock counts, even another ticket's
    assert c.feed({"a@x": {"clock": 7}}, {"ticket": "T1", "clock": 60}, 100.002)
    assert not c.done
    # a second reply from the same node is not a second node
    assert c.feed({"a@x": {"clock": 8}}, {"ticket": "T1", "clock": 61}, 100.003)
    assert not c.done and c.result.replies["a@x"] == {"clock": 7}
    assert c.feed({"b@x": {"clock": 9}}, {"ticket": "T1", "clock": 62}, 100.004)
    assert c.done
    assert c.result.elapsed == pytest.approx(0.004)
    assert clock.value == 63
    assert c.result.meta()["replied"] == 2


def test_collector_drops_expired_and_non_json_replies() -> None:
    c = ReplyCollector("clock", "T", published_at=0.0)
    assert not c.feed({"a@x": 1}, {"ticket": "T", "expires": 5.0}, 6.0)
    assert not c.feed_message(
        b"\x80\x04K\x01.", "application/x-python-serialize", "binary", {}, 1.0
    )
    assert not c.feed_message(b"{not json", "application/json", "utf-8", {"ticket": "T"}, 1.0)
    assert not c.feed(["a list"], {"ticket": "T"}, 1.0)
    assert c.result.replies == {}
    reasons = [r for r, _ in c.result.rejected]
    assert reasons == ["expired", "content type refused", "invalid JSON", "not a reply"]
    assert c.feed_message(
        b'{"a@x": {"clock": 3}}', "application/json", "utf-8", {"ticket": "T"}, 2.0
    )
    assert c.result.replies == {"a@x": {"clock": 3}}


def test_collector_ignores_hostile_clock_headers() -> None:
    clock = LamportClock(10, synced=True, max_jump=1000)
    c = ReplyCollector("hello", "T", clock=clock)
    c.feed({"a@x": {}}, {"ticket": "T", "clock": 2**70}, 0.0)
    c.feed({"b@x": {}}, {"ticket": "T", "clock": "12"}, 0.0)
    assert clock.value < 100


def test_decode_events_expands_batches_and_refuses_other_content_types() -> None:
    batch = json.dumps([{"type": "task-received"}, {"type": "task-started"}]).encode()
    assert [e["type"] for e in decode_events(batch, "application/json")] == [
        "task-received",
        "task-started",
    ]
    with pytest.raises(Rejected):
        decode_events(b"\x80\x04N.", "application/x-python-serialize", "binary")
    with pytest.raises(Rejected):
        decode_events(b"- a: 1", "application/x-yaml")


def test_prepare_event_stamps_like_celerys_receiver() -> None:
    clock = LamportClock(5)
    sent = prepare_event({"type": "task-sent", "clock": 999}, clock, 42.0)
    assert sent["clock"] == 4 and sent["local_received"] == 42.0
    hb = prepare_event({"type": "worker-heartbeat", "clock": 100}, clock, 43.0)
    assert hb["clock"] == 100 and clock.value == 101
    bare = prepare_event({"type": "worker-heartbeat"}, clock, 44.0)
    assert bare["clock"] == 102
    assert prepare_event("junk", clock, 45.0) == "junk"


def _elect(host: str, clock: int, pid: int, id_: str = "E") -> dict[str, Any]:
    return {
        "type": "worker-elect",
        "id": id_,
        "hostname": host,
        "clock": clock,
        "pid": pid,
        "topic": "task",
        "action": None,
        "cver": 1,
    }


def _ack(host: str, id_: str = "E") -> dict[str, Any]:
    return {"type": "worker-elect-ack", "id": id_, "hostname": host, "clock": 1}


@pytest.mark.parametrize("capture", CAPTURES)
def test_election_watch_on_a_captured_celery_election(capture: str) -> None:
    events = [r["body"] for r in records(capture) if r["kind"].startswith("event:worker-elect")]
    election_id = events[0]["id"]
    watch = ElectionWatch(election_id, started_at=0.0)
    done = [watch.feed(e, 0.01 * i) for i, e in enumerate(events, 1)]
    assert done.count(True) == 1 and done[-1] is True  # complete with the 9th ack
    out = watch.outcome()
    assert out.complete and out.acks == 9 and len(out.candidates) == 3
    expected = min(out.candidates, key=lambda r: (r.clock, f"{r.hostname}.{r.pid}"))
    assert out.winner == expected
    doc = out.as_dict()
    assert set(doc) >= {"id", "topic", "winner", "winner_id", "candidates", "acks", "elapsed_ms"}
    assert doc["winner_id"] == f"{expected.hostname}.{expected.pid}"


def test_election_watch_tie_on_clock_broken_by_hostname_pid() -> None:
    w = ElectionWatch("E")
    for ev in [_elect("b@h", 7, 1), _elect("a@h", 7, 99), _elect("c@h", 9, 1)]:
        w.feed(ev, 0.0)
    for host in ["a@h", "b@h", "c@h"] * 3:
        w.feed(_ack(host), 0.0)
    assert w.outcome().winner.hostname == "a@h"  # type: ignore[union-attr]
    # clocks compare numerically, not as strings
    w2 = ElectionWatch("E")
    for ev in [_elect("a@h", 10, 1), _elect("b@h", 9, 1)]:
        w2.feed(ev, 0.0)
    for host in ["a@h", "b@h"] * 2:
        w2.feed(_ack(host), 0.0)
    assert w2.outcome().winner.hostname == "b@h"  # type: ignore[union-attr]


def test_election_watch_sighted_requests_fix_the_winner_before_the_ordered_stream() -> None:
    """Requests seen on an express queue fix the winner at once ([ELECT-5]:
    only the requests matter); the replays still take them in stream order."""
    w = ElectionWatch("E", expected={"a@h", "b@h"}, started_at=0.0)
    w.sight(_elect("b@h", 2, 1), 0.03)
    assert w.fixed_at is None  # a@h not in yet
    w.sight(_elect("z@h", 0, 1, id_="OTHER"), 0.035)  # another election: ignored
    w.sight({"type": "worker-elect-ack", "id": "E", "hostname": "a@h"}, 0.036)  # not a request
    w.sight({"type": "worker-elect", "id": "E", "hostname": "a@h"}, 0.037)  # unusable: no clock
    w.sight("junk", 0.038)
    assert w.fixed_at is None
    w.sight(_elect("a@h", 1, 1), 0.04)
    assert w.fixed_at == 0.04 and not w.requests  # fixed, nothing replayed yet
    assert w.outcome().winner is None  # the report waits for the decisions
    for ev in [_elect("b@h", 2, 1), _elect("a@h", 1, 1)]:
        w.feed(ev, 0.5)
    out = w.outcome()
    assert w.settled and out.winner is not None and out.winner.hostname == "a@h"
    assert out.elapsed == pytest.approx(0.04)  # when the sighting fixed it, not 0.5
    assert out.settled == pytest.approx(0.5)


def test_election_watch_incomplete_names_the_silent_and_waits_for_expected() -> None:
    w = ElectionWatch("E", expected={"a@h", "b@h", "c@h"})
    for ev in [_elect("a@h", 1, 1), _elect("b@h", 2, 1)]:
        w.feed(ev, 0.0)
    for host in ["a@h", "a@h", "b@h"]:
        w.feed(_ack(host), 0.0)
    out = w.outcome()
    assert out.winner is None and out.not_acked == ["b@h"] and out.absent == ["c@h"]
    w.feed(_ack("b@h"), 0.0)
    assert w.acks_complete and not w.complete  # c@h, seen alive, has not stood yet
    # conforming nodes wait for c@h's request ([ELECT-5]) until their timeout
    out = w.outcome()
    assert out.winner is None and out.undecided == ["a@h", "b@h", "c@h"] and not w.settled
    w.feed(_elect("c@h", 3, 1), 0.1)  # the last request fixes the winner for everyone
    assert w.settled and w.outcome().winner.hostname == "a@h"  # type: ignore[union-attr]
    assert not w.complete
    w.feed(_ack("c@h"), 0.2)
    assert w.outcome().elapsed == pytest.approx(0.1)  # fixed by the last request
    # other elections, junk and forged acks without a hostname change nothing
    assert not w.feed(_elect("z@h", 0, 1, id_="OTHER"), 0.0)
    assert not w.feed({"type": "worker-elect-ack", "id": "E"}, 0.0)
    assert not w.feed("junk", 0.0)
    assert w.outcome().winner.hostname == "a@h"  # type: ignore[union-attr]


def test_election_participants_are_classified_and_celery_stands_only_with_gossip() -> None:
    hbs = {
        "w1@h": {"hostname": "w1@h", "sw_ident": "py-celery"},
        "w2@h": {"hostname": "w2@h", "sw_ident": "py-celery", "wkctl_ver": "0.1"},
        "n1@h": {"hostname": "n1@h", "sw_ident": "wkctl"},
    }
    kinds = {"w1@h": "celery", "w2@h": "hardened", "n1@h": "wkctl"}
    assert election_participants(hbs, "amqp") == kinds
    assert election_participants(hbs, "redis") == kinds
    assert election_participants(hbs, "filesystem") == {"n1@h": "wkctl"}


def test_election_watch_reports_each_participants_own_decision_and_disagreement() -> None:
    """Three stock Celery workers and the order of issue 13: w2's and w4's
    requests, two acks, then w1's (the lowest).  Celery decides at its
    second ack message on the two requests it holds; the spec's rule would
    pick w1.  The watch replays Celery's rule for the Celery workers."""
    kinds = {"w1@h": "celery", "w2@h": "celery", "w4@h": "celery"}
    w = ElectionWatch("E", participants=kinds, started_at=0.0)
    order = [_elect("w2@h", 5, 2), _elect("w4@h", 5, 4), _ack("w2@h"), _ack("w4@h")]
    order += [_elect("w1@h", 3, 1)] + [_ack(h) for h in ["w1@h"] * 3 + ["w2@h", "w4@h"] * 2]
    for i, ev in enumerate(order, 1):
        w.feed(ev, i / 1000)
    out = w.outcome()
    assert {d.winner.node_id for d in out.decisions.values()} == {"w2@h.2"}  # type: ignore[union-attr]
    assert out.agreed and out.winner is not None and out.winner.hostname == "w2@h"
    assert out.elapsed == pytest.approx(0.005)  # fixed once w1's request arrived
    doc = out.as_dict()
    assert doc["decisions"]["w1@h"] == {
        "kind": "celery",
        "rule": "celery",
        "winner": "w2@h.2",
        "crashed": False,
        "requests_counted": 2,
    }
    assert doc["complete"] and doc["acks"] == 9
    # the same order, with w1 a wkctl node: it follows the spec and picks
    # itself while the Celery workers pick w2: a double winner, reported
    kinds2 = dict(kinds, **{"w1@h": "wkctl"})
    w2 = ElectionWatch("E", participants=kinds2, started_at=0.0)
    for i, ev in enumerate(order, 1):
        w2.feed(ev, i / 1000)
    out2 = w2.outcome()
    assert not out2.agreed and out2.winner is None
    # no agreed winner, so no time it was fixed at; the other times stand
    doc2 = out2.as_dict()
    assert doc2["winner"] is None and doc2["elapsed_ms"] is None
    assert doc2["decided_ms"] == pytest.approx(5.0) and doc2["completed_ms"] == pytest.approx(12.0)
    assert out2.sides == {"w1@h.1": ["w1@h"], "w2@h.2": ["w2@h", "w4@h"]}
    assert out2.runners == ["w1@h", "w2@h"]  # the action runs twice
    assert out.as_dict()["runs_action"] == ["w2@h"]


def test_election_watch_counts_a_node_that_shows_up_late_among_celerys_peers() -> None:
    """A Celery worker counts every node whose heartbeat it has as a peer, so
    a node the discovery missed changes when it decides: the replay starts
    over with it."""
    w = ElectionWatch("E", participants={"a@h": "celery", "b@h": "celery"})
    for ev in [_elect("a@h", 1, 1), _elect("b@h", 2, 2), _ack("a@h")]:
        w.feed(ev, 0.0)
    assert w.settled and w.outcome().winner.hostname == "a@h"  # type: ignore[union-attr]
    w.feed({"type": "worker-heartbeat", "hostname": "c@h", "sw_ident": "wkctl"}, 0.0)
    assert not w.settled and w.outcome().undecided == ["a@h", "b@h"]
    w.feed(_ack("b@h"), 0.0)
    assert w.settled and w.outcome().agreed


def test_election_watch_sees_two_celery_workers_crash() -> None:
    kinds = {"a@h": "celery", "b@h": "celery"}
    w = ElectionWatch("E", participants=kinds)
    for ev in [_elect("a@h", 1, 1), _ack("a@h"), _elect("b@h", 1, 2), _ack("b@h")]:
        w.feed(ev, 0.0)
    out = w.outcome()
    assert w.settled and out.sides == {"crashed": ["a@h", "b@h"]} and out.winner is None


def test_standing_hazard_is_the_one_lone_worker_rule() -> None:
    from wkctl.protocol.observers import standing_hazard

    assert standing_hazard({"w@h": "celery"}) is not None  # alone: always dies (DEFECT-1)
    assert "two participants" in (standing_hazard({"w@h": "celery", "n@h": "wkctl"}) or "")
    assert standing_hazard({"a@h": "celery", "b@h": "celery", "c@h": "celery"}) is None
    # ... unless a stock worker is older than 5.4: a 5.1.2 worker died among three
    three = {"a@h": "celery", "b@h": "celery", "c@h": "celery"}
    old = standing_hazard(three, releases={"a@h": "5.7.0", "b@h": "5.1.2", "c@h": "5.4.0"})
    assert old is not None and "b@h (5.1.2)" in old and "a@h" not in old
    assert standing_hazard(three, releases={"a@h": "5.7.0", "b@h": "5.4.0", "c@h": "5.5.3"}) is None
    # a release that is not a version number is not held against the worker
    assert standing_hazard(three, releases={"a@h": "banana"}) is None
    assert (
        standing_hazard({"w@h": "hardened"}) is None and standing_hazard({"n@h": "wkctl"}) is None
    )
    # a worker that already holds the other participant's request cannot hit it
    assert standing_hazard({"w@h": "celery", "p@h": "wkctl"}, holding=["w@h"]) is None
    # an unknown kind is assumed to be stock Celery
    assert standing_hazard({"w@h": None, "p@h": "wkctl"}) is not None


def test_plan_and_survey_of_an_election() -> None:
    from wkctl.protocol.observers import NodeSurvey, plan_election

    survey = NodeSurvey(started=0.0, window=1.0, settle=0.1)
    survey.pinged = frozenset({"a@h", "b@h"})
    assert survey.end_at() == 1.0
    survey.feed({"type": "worker-heartbeat", "hostname": "a@h", "sw_ident": "py-celery"}, 0.1)
    survey.feed({"type": "worker-heartbeat", "hostname": "x@h", "sw_ident": "wkctl"}, 0.2)
    survey.feed({"type": "worker-offline", "hostname": "x@h"}, 0.25)
    assert survey.end_at() == 1.0  # b@h answered the ping, its heartbeat is not in yet
    survey.feed({"type": "worker-online", "hostname": "b@h", "sw_ident": "wkctl"}, 0.3)
    assert survey.end_at() == pytest.approx(0.3 + NodeSurvey.GRACE)
    nodes = survey.result()
    assert sorted(nodes) == ["a@h", "b@h"]
    plan = plan_election(nodes, "amqp")
    assert plan.participants == {"a@h": "celery", "b@h": "wkctl"}
    assert plan.hazard is not None and plan.mixed is not None
    assert plan.counts == {"celery": 1, "wkctl": 1}
    assert plan_election(nodes, "filesystem").participants == {"b@h": "wkctl"}


def test_election_problems_name_each_failure() -> None:
    from wkctl.protocol.observers import election_problems

    watch = ElectionWatch("E", participants={"a@h": "wkctl"}, started_at=0.0)
    (nobody,) = election_problems(watch.outcome(), [], "E", 2.0)
    assert "no node stood in election 'E' within 2 s" in nobody
    dead = election_problems(watch.outcome(), ["a@h"], "E", 2.0)
    assert dead == ["participant(s) no longer answer ping after the election: a@h"]


def test_event_validator_explains_only_the_first_invalid_events_of_a_batch() -> None:
    from wkctl.protocol.observers import EventValidator

    validator = EventValidator(detailed=2)
    assert validator.issues({"type": "worker-heartbeat"}) != []
    bad = {"type": "task-received"}
    first = validator.issues(bad)
    assert first and first != [EventValidator.SKIPPED]
    assert validator.issues(bad) == [EventValidator.SKIPPED]
    validator.new_batch()
    assert validator.issues(bad) == first
