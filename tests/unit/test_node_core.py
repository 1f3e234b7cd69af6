"""The sans-IO node: control commands, bad input, events, elections, heartbeats."""

from __future__ import annotations

import json
import pickle

import pytest

from support.nodes import MemoryBus
from wkctl.protocol.node import (
    Elected,
    Inbound,
    LifecycleError,
    Log,
    MemberChanged,
    Node,
    NodeConfig,
    Publish,
)
from wkctl.protocol.wire import Limits, pidbox_request

REPLY_EX = "reply.celery.pidbox"


def node(name: str = "n@h", **kw: object) -> Node:
    n = Node(NodeConfig(name=name, pid=42, mingle=False, **kw))  # type: ignore[arg-type]
    n.start(0.0)
    return n


def request(method: str, args: dict | None = None, **kw: object) -> Inbound:
    kw.setdefault("ticket", "t")
    body = pidbox_request(
        method, args or {}, reply_exchange=REPLY_EX, reply_routing_key="asker", **kw
    )  # type: ignore[arg-type]
    return Inbound.json(body, {"clock": 3, "expires": 0})


def replies(actions: list) -> list[Publish]:
    return [a for a in actions if isinstance(a, Publish) and a.target == "reply"]


def logs(actions: list) -> str:
    return "\n".join(a.message for a in actions if isinstance(a, Log))


def ask(n: Node, method: str, args: dict | None = None, now: float = 1.0, **kw: object) -> object:
    out = n.receive_pidbox(request(method, args, **kw), now)
    [reply] = replies(out)
    return reply.body[n.name]


# -- control commands ---------------------------------------------------------


def test_reply_goes_to_reply_to_with_ticket_and_clock_headers() -> None:
    n = node()
    inbound = request("ping", ticket="t-1")
    [reply] = replies(n.receive_pidbox(inbound, 1.0))
    assert reply.exchange == REPLY_EX and reply.routing_key == "asker"
    assert reply.body == {"n@h": {"ok": "pong"}}
    assert reply.headers["ticket"] == "t-1" and reply.headers["clock"] == n.clock.value


def test_clock_revoked_and_hello_answers() -> None:
    n = node()
    n.revoke_local(["old", "new"], 0.5)
    assert ask(n, "revoked") == ["old", "new"]
    clock = ask(n, "clock")
    assert isinstance(clock, dict) and clock["clock"] == n.clock.value - 1
    answer = ask(n, "hello", {"from_node": "peer@h", "revoked": ["theirs"]})
    assert answer["revoked"] == ["old", "new", "theirs"] and isinstance(answer["clock"], int)
    assert ask(n, "hello", {"from_node": "n@h", "revoked": []}) is None  # own hello: null


def test_revoke_replies_like_celery() -> None:
    n = node()
    assert ask(
        n,
        "revoke",
        {
            "task_id": "cafe0000-0000-4000-8000-000000000002",
            "terminate": False,
            "signal": "SIGTERM",
        },
    ) == {"ok": "tasks {'cafe0000-0000-4000-8000-000000000002'} flagged as revoked"}
    ask(n, "revoke", {"task_id": ["a", "b"]})
    assert n.revoked.as_list() == ["cafe0000-0000-4000-8000-000000000002", "a", "b"]
    assert ask(n, "revoke", {"task_id": "c", "terminate": True}) == {
        "ok": "terminate: tasks unknown"
    }
    assert "c" in n.revoked
    # a cast (no reply_to) still revokes
    n.receive_pidbox(Inbound.json(pidbox_request("revoke", {"task_id": "d"}), {"clock": 1}), 1.0)
    assert "d" in n.revoked


def test_unknown_command_gets_an_error_reply() -> None:
    assert ask(node(), "no_such_method") == {"error": "unknown command no_such_method"}


def test_heartbeat_command_sends_a_heartbeat_now() -> None:
    n = node()
    out = n.receive_pidbox(Inbound.json(pidbox_request("heartbeat"), {"clock": 1}), 1.0)
    [ev] = [a for a in out if isinstance(a, Publish) and a.target == "event"]
    assert ev.body["type"] == "worker-heartbeat" and ev.routing_key == "worker.heartbeat"
    assert ev.headers == {"hostname": "n@h"}
    assert not replies(out)


def test_destination_pattern_and_expiry() -> None:
    n = node()
    assert not replies(n.receive_pidbox(request("ping", destination=["other@h"]), 1.0))
    assert replies(n.receive_pidbox(request("ping", destination=["other@h", "n@h"]), 1.0))
    assert replies(n.receive_pidbox(request("ping", pattern="n@*", matcher="glob"), 1.0))
    assert not replies(n.receive_pidbox(request("ping", pattern="x@*", matcher="glob"), 1.0))
    assert not replies(n.receive_pidbox(request("ping", pattern="(a+)+$", matcher="pcre"), 1.0))
    body = pidbox_request("ping", reply_exchange=REPLY_EX, reply_routing_key="k", ticket="t")
    expired = Inbound.json(body, {"clock": 1, "expires": 100.0})
    assert not replies(n.receive_pidbox(expired, 100.5))
    assert replies(n.receive_pidbox(expired, 99.5))


def test_reply_to_a_foreign_exchange_is_refused() -> None:
    n = node()
    body = pidbox_request("ping", reply_exchange="amq.topic", reply_routing_key="k", ticket="t")
    out = n.receive_pidbox(Inbound.json(body, {"clock": 1}), 1.0)
    assert not replies(out) and "is not ours" in logs(out)


# -- bad input ------------------------------------------------------------------


def test_non_json_is_refused_unread_and_logged_once_per_interval() -> None:
    n = node(reject_log_interval=60.0)
    evil = Inbound(
        pickle.dumps({"method": "ping"}), "application/x-python-serialize", "binary", {"clock": 1}
    )
    first = n.receive_pidbox(evil, 1.0)
    assert "content type refused" in logs(first) and not replies(first)
    for t in range(2, 30):
        assert logs(n.receive_pidbox(evil, float(t))) == ""  # rate-limited
    later = n.receive_pidbox(evil, 61.5)
    assert "content type refused" in logs(later) and "28 more" in logs(later)
    assert ask(n, "ping", now=62.0) == {"ok": "pong"}  # still serving


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"{not json", "invalid JSON"),
        (b"[" * 100 + b"]" * 100, "too deeply nested"),
        (b'"x"' + b" " * (Limits().max_body_bytes + 1), "body too large"),
        (json.dumps({"method": "hello", "arguments": {"from_node": 5}}).encode(), "rejected"),
        (json.dumps(["not", "a", "request"]).encode(), "not a pidbox request"),
    ],
)
def test_bad_bodies_are_rejected_with_the_reason(body: bytes, reason: str) -> None:
    n = node()
    out = n.receive_pidbox(Inbound(body, "application/json", "utf-8", {"clock": 1}), 1.0)
    assert reason in logs(out) and not replies(out)
    assert ask(n, "ping") == {"ok": "pong"}


def test_clock_poisoning_through_headers_is_ignored_after_sync() -> None:
    n = node()
    before = n.clock.value
    body = pidbox_request("clock", reply_exchange=REPLY_EX, reply_routing_key="k", ticket="t")
    out = n.receive_pidbox(Inbound.json(body, {"clock": 2**62}), 1.0)
    assert "ignored clock" in logs(out)
    assert n.clock.value < before + 10


def test_malformed_heartbeat_that_kills_celery_is_dropped() -> None:
    n = node()
    bad = {
        "type": "worker-heartbeat",
        "hostname": "evil@h",
        "timestamp": "now",
        "clock": 1,
        "freq": 2.0,
    }
    out = n.receive_event(Inbound.json(bad, {"hostname": "evil@h"}, "worker.heartbeat"), 1.0)
    assert "rejected" in logs(out) and "evil@h" not in n.membership
    assert ask(n, "ping") == {"ok": "pong"}


def test_task_events_are_skipped_by_routing_key_unread() -> None:
    n = node()
    out = n.receive_event(
        Inbound(b"\x80garbage", "application/x-python-serialize", None, {}, "task.multi"), 1.0
    )
    assert out == []


# -- gossip and heartbeats ------------------------------------------------------


def test_heartbeat_schedule_and_offline_at_stop() -> None:
    n = Node(NodeConfig(name="n@h", pid=1, mingle=False, heartbeat=2.0))
    types = lambda out: [a.body["type"] for a in out if isinstance(a, Publish)]  # noqa: E731
    assert types(n.start(0.0)) == ["worker-online"]
    assert types(n.tick(1.9)) == []
    assert types(n.tick(2.0)) == ["worker-heartbeat"]
    assert n.next_wakeup(2.0) <= 4.0
    assert types(n.tick(3.99)) == []
    assert types(n.stop(3.0)) == ["worker-offline"]
    with pytest.raises(LifecycleError, match="stopped"):
        n.tick(10.0)  # a stopped node takes no input


def test_reconnect_mingles_again_then_re_announces() -> None:
    n = Node(NodeConfig(name="n@h", pid=1, mingle=True))
    n.start(0.0)
    n.tick(2.0)
    out = n.reconnected(5.0)
    assert [a.body["method"] for a in out if isinstance(a, Publish)] == ["hello"]
    out = n.tick(6.5)
    assert [a.body["type"] for a in out if isinstance(a, Publish)] == ["worker-online"]


def test_join_leave_lost_are_reported_as_actions() -> None:
    """The core runs no user callbacks: it reports membership changes as
    MemberChanged actions (the binding or the bootsteps run callbacks)."""
    bus = MemoryBus()
    bus.add("a@h", mingle=False, heartbeat=1.0, sweep_interval=1.0)
    bus.add("b@h", mingle=False, heartbeat=1.0)
    bus.add("c@h", mingle=False, heartbeat=1.0)
    for name in ("a@h", "b@h", "c@h"):
        bus.start(name, 0.0)
    bus.run(0.0, 1.0)
    bus.take("b@h", bus.nodes["b@h"].stop(1.0))
    bus.dead.add("c@h")  # killed: no offline
    bus.run(1.0, 5.0)
    seen = [
        (a.change.kind, a.change.worker.hostname)
        for a in bus.other["a@h"]
        if isinstance(a, MemberChanged)
    ]
    assert seen[:2] == [("join", "b@h"), ("join", "c@h")]
    assert ("leave", "b@h") in seen and ("lost", "c@h") in seen


# -- elections -------------------------------------------------------------------


def _cluster(n: int, **kw: object) -> MemoryBus:
    bus = MemoryBus()
    for i in range(n):
        bus.add(f"n{i}@h", mingle=False, **kw)
    for name in list(bus.nodes):
        bus.start(name, 0.0)
    bus.run(0.0, 0.5)
    return bus


def _election(
    bus: MemoryBus, id_: str, topic: str = "custom", action: object = None, now: float = 1.0
) -> None:
    body = pidbox_request("election", {"id": id_, "topic": topic, "action": action})
    inbound = Inbound.json(body, {"clock": 1, "expires": 0})
    for name, n in bus.nodes.items():
        if name not in bus.dead:
            bus.take(name, n.receive_pidbox(inbound, now))
    bus.deliver(now)


def _decisions(bus: MemoryBus, id_: str) -> dict[str, str]:
    return {
        name: a.decision.winner.node_id
        for name, acts in bus.other.items()
        for a in acts
        if isinstance(a, Elected) and a.decision.id == id_
    }


def test_three_nodes_agree_and_only_the_winner_acts_like_celery_on_the_wire() -> None:
    bus = _cluster(3)
    for n in bus.nodes.values():
        n.host_topics.add("custom")  # the host runs the action of a won election
    _election(bus, "e-3", action={"x": 1})
    decisions = _decisions(bus, "e-3")
    ran = [
        name
        for name, acts in bus.other.items()
        for a in acts
        if isinstance(a, Elected) and a.decision.won and a.decision.action == {"x": 1}
    ]
    assert len(decisions) == 3 and len(set(decisions.values())) == 1
    assert len(ran) == 1 and decisions[ran[0]].startswith(ran[0])
    assert len(bus.events("worker-elect")) == 3 and len(bus.events("worker-elect-ack")) == 9
    elect = bus.events("worker-elect")[0]
    assert {"id", "topic", "action", "cver", "clock", "hostname", "pid"} <= set(elect) and elect[
        "cver"
    ] == 1
    assert all(not n.elections.active for n in bus.nodes.values())
    assert "I won the election 'e-3'" in bus.log_text(ran[0])


def test_lone_node_election_decides_itself() -> None:
    bus = _cluster(1)
    _election(bus, "solo")
    assert _decisions(bus, "solo") == {"n0@h": "n0@h.1000"}


def test_participant_dies_election_decided_after_timeout_by_survivors_identically() -> None:
    bus = _cluster(3, election_timeout=3.0)
    bus.dead.add("n2@h")  # killed just before the election; still counted alive
    _election(bus, "e-dead", now=1.0)
    assert _decisions(bus, "e-dead") == {}
    bus.run(1.0, 4.1)  # the timeout (4.0) comes before the loss is noticed (5.0)
    decisions = _decisions(bus, "e-dead")
    assert set(decisions) == {"n0@h", "n1@h"} and len(set(decisions.values())) == 1
    assert "timed out" in bus.log_text("n0@h") and "n2@h" in bus.log_text("n0@h")
    assert all(not n.elections.active for n in bus.nodes.values())


def test_unknown_topic_is_logged_not_fatal() -> None:
    bus = _cluster(2)
    _election(bus, "e-unknown", topic="nobody-handles-this")
    winner = next(iter(_decisions(bus, "e-unknown").values())).rsplit(".", 1)[0]
    assert "Unknown election topic" in bus.log_text(winner)
    _election(bus, "e-next", topic="nobody-handles-this", now=2.0)
    assert len(_decisions(bus, "e-next")) == 2


def test_task_topic_publishes_a_celery_protocol_2_message() -> None:
    bus = _cluster(2)
    action = {
        "task": "tasks.add",
        "args": [2, 3],
        "kwargs": {},
        "options": {},
        "subtask_type": None,
        "immutable": False,
    }
    _election(bus, "e-task", topic="task", action=action)
    tasks = [(s, p) for s, p in bus.published if p.target == "task"]
    assert len(tasks) == 1
    sender, msg = tasks[0]
    assert msg.exchange == "" and msg.routing_key == "celery" and msg.declare_queue == "celery"
    assert msg.body == [
        [2, 3],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert msg.headers["task"] == "tasks.add" and msg.headers["origin"] == sender


# -- the public, Celery-named entry points (for thin Mingle/Gossip classes) -----


def test_celery_named_entry_points_work_on_decoded_values() -> None:
    n = node("me@h")
    out = n.election("e-api", "custom", {"a": 1}, now=1.0)
    [elect] = [a for a in out if isinstance(a, Publish)]
    assert elect.body["type"] == "worker-elect" and elect.body["cver"] == 1
    out = n.on_elect(dict(elect.body), now=1.0)
    assert [a.body["type"] for a in out if isinstance(a, Publish)] == ["worker-elect-ack"]
    assert any(isinstance(a, Elected) and a.decision.won for a in out)  # its own request: alone
    out = n.on_elect_ack(
        {
            "id": "e-api",
            "hostname": "me@h",
            "clock": 9,
            "pid": 42,
            "timestamp": 1.0,
            "utcoffset": 0,
            "type": "worker-elect-ack",
        },
        now=1.0,
    )
    assert not any(isinstance(a, Elected) for a in out)  # decided once, not again
    assert n.on_clock_event(None) == n.clock.value
    before = n.clock.value
    assert n.on_clock_event(before + 100) == before + 101
    assert n.on_revoked_received({"x": [1.0, "x"]}, now=2.0).added == 1 and "x" in n.revoked
    out = n.on_node_reply("peer@h", "garbage", now=2.0)
    assert "sync with peer@h failed" in logs(out)
    n.on_event(
        {
            "type": "worker-online",
            "hostname": "p@h",
            "freq": 1.0,
            "pid": 1,
            "clock": 1,
            "timestamp": 2.0,
            "utcoffset": 0,
            "sw_ident": "x",
            "sw_ver": "1",
            "sw_sys": "L",
            "active": 0,
            "processed": 0,
            "loadavg": [0, 0, 0],
        },
        now=2.0,
    )
    assert "p@h" in n.membership.alive(2.5)
    assert "missed heartbeat from p@h" in logs(n.periodic(10.0))
    assert "not an event object" in logs(n.on_event(["nope"], now=11.0))  # type: ignore[arg-type]


def test_a_large_invalid_body_is_rejected_fast_with_a_summary() -> None:
    import time

    n = node()
    body = json.dumps(
        {"type": "worker-heartbeat", "hostname": "x@h", "clock": 1, "loadavg": [0] * 400_000}
    ).encode()
    started = time.perf_counter()
    out = n.receive_event(Inbound(body, routing_key="worker.heartbeat"), 1.0)
    assert time.perf_counter() - started < 0.5
    assert "details not computed" in logs(out) and len(logs(out)) < 500


def test_a_node_that_mingled_alone_syncs_on_its_first_peer() -> None:
    """A long-running cluster's clocks may be far beyond max_clock_jump; a
    node that found nobody at start must still catch up with the first peer,
    and only then bound the jumps.  A client's header (clock 1) does not
    count as a peer."""
    n = Node(NodeConfig(name="n@h", pid=1))
    n.start(0.0)
    n.tick(2.0)  # mingle: all alone
    assert n.clock.synced and not n.clock.bounded
    n.receive_pidbox(request("ping"), 2.1)  # client clock 3: still unbounded
    assert not n.clock.bounded
    hb = {
        "type": "worker-heartbeat",
        "hostname": "old@h",
        "clock": 50_000_000,
        "freq": 2.0,
        "pid": 1,
        "timestamp": 2.0,
        "utcoffset": 0,
        "sw_ident": "x",
        "sw_ver": "1",
        "sw_sys": "L",
        "active": 0,
        "processed": 0,
        "loadavg": [0, 0, 0],
    }
    n.receive_event(Inbound.json(hb, {"hostname": "old@h"}, "worker.heartbeat"), 2.2)
    assert n.clock.bounded and n.clock.value > 50_000_000
    hb["clock"] = 2**52
    out = n.receive_event(Inbound.json(hb, {"hostname": "old@h"}, "worker.heartbeat"), 2.3)
    assert "jumps more than" in logs(out) and n.clock.value < 60_000_000


def test_a_peer_lost_during_an_election_is_no_longer_waited_for() -> None:
    bus = _cluster(3, election_timeout=30.0, heartbeat=1.0, sweep_interval=0.5)
    bus.dead.add("n2@h")
    _election(bus, "e-lost", now=1.0)
    bus.run(1.0, 3.5)  # n2's last heartbeat ~0.5 s expires at 2.5: lost, not 31 s
    decisions = _decisions(bus, "e-lost")
    assert set(decisions) == {"n0@h", "n1@h"} and len(set(decisions.values())) == 1
    assert "missed heartbeat from n2@h" in bus.log_text("n0@h")
    assert all(not n.elections.active for n in bus.nodes.values())


def test_an_error_reply_to_hello_is_skipped_not_synced() -> None:
    """[MINGLE-3]: ``{"error": ...}`` (a peer whose hello handler failed)
    carries no state: the peer is not counted as synced, and the node's
    clock is not bounded on its account (issue 17)."""
    n = Node(NodeConfig(name="n@h", pid=1))
    [hello] = [a for a in n.start(0.0) if isinstance(a, Publish)]
    reply = Inbound.json(
        {"peer@h": {"error": "boom"}}, {"ticket": hello.body["ticket"], "clock": 7}
    )
    out = n.receive_reply(reply, 0.1)
    n.tick(2.0)
    assert n.last_sync is not None
    assert n.last_sync.peers == []
    assert "error reply" in n.last_sync.failed["peer@h"]
    assert "peer@h" in logs(out)
    assert not n.clock.bounded


def test_answer_hello_for_a_host_pidbox_merges_and_replies_in_list_form() -> None:
    """A host that decoded the request itself (a Celery worker's pidbox) gets
    the core's answer: ids merged under the bounds, list-form reply; an
    invalid request changes nothing and is answered null."""
    n = node()
    reply, out = n.answer_hello("peer@h", {"a": [1.5, "a"], "b": [2.5, "b"]}, 1.0)
    assert reply["revoked"] == ["a", "b"] and isinstance(reply["clock"], int)
    assert "sync with peer@h" in logs(out)
    assert n.answer_hello("n@h", ["c"], 1.0)[0] is None  # its own hello
    reply, out = n.answer_hello(["not", "a", "name"], ["d"], 1.0)
    assert reply is None and "d" not in n.revoked and "rejected" in logs(out)
