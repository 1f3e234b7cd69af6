"""Mingle: hello at start, replies in both forms, early end, failures skipped."""

from __future__ import annotations

import pytest

from support.nodes import MemoryBus
from wkctl.protocol.clock import MAX_SAFE_CLOCK
from wkctl.protocol.mingle import MingleSession
from wkctl.protocol.node import Inbound, Log, Node, NodeConfig, Publish, Synced


def test_session_ends_at_timeout_or_once_replies_settle() -> None:
    s = MingleSession("me@h", now=10.0, timeout=1.0, settle=0.2, ticket="t")
    assert s.deadline() == 11.0 and not s.is_over(10.9) and s.is_over(11.0)
    s.on_reply({"me@h": None}, now=10.01)
    assert s.deadline() == pytest.approx(10.21)
    assert s.on_reply({"p@h": {"clock": 1}}, now=10.05) == [("p@h", {"clock": 1})]
    assert s.on_reply({"p@h": {"clock": 2}}, now=10.06) == []  # one reply per node
    assert s.deadline() == pytest.approx(10.26) and s.is_over(10.27)
    s.on_reply({"q@h": {}}, now=10.95)
    assert s.deadline() == 11.0  # never beyond the hard timeout


def _started(name: str, **kw: object) -> tuple[Node, Publish]:
    node = Node(NodeConfig(name=name, pid=1, **kw))  # type: ignore[arg-type]
    hello = next(a for a in node.start(0.0) if isinstance(a, Publish))
    return node, hello


def _reply(node: Node, hello: Publish, body: dict, clock: int = 5) -> list:
    inbound = Inbound.json(body, {"ticket": hello.body["ticket"], "clock": clock})
    return node.receive_reply(inbound, 0.05)


def test_hello_request_is_celerys_broadcast() -> None:
    node, hello = _started("n@h")
    assert hello.target == "pidbox" and hello.routing_key == ""
    assert hello.body["method"] == "hello"
    assert hello.body["arguments"] == {"from_node": "n@h", "revoked": []}
    assert hello.body["reply_to"]["exchange"] == "reply.celery.pidbox"
    assert set(hello.headers) == {"clock", "expires"}
    assert hello.body["destination"] is None and "ticket" in hello.body


def test_replies_in_both_wire_forms_are_merged_and_clock_adjusted() -> None:
    node, hello = _started("n@h")
    _reply(node, hello, {"w57@h": {"clock": 500, "revoked": ["r1", "r2"]}})
    _reply(node, hello, {"w54@h": {"clock": 800, "revoked": {"r3": [123456.7, "r3"]}}})
    assert node.revoked.as_list() == ["r1", "r2", "r3"]
    assert node.clock.value > 800
    node.tick(5.0)
    assert node.last_sync is not None and node.last_sync.peers == ["w57@h", "w54@h"]
    assert node.clock.synced


def test_a_failing_reply_is_logged_and_skipped() -> None:
    node, hello = _started("n@h")
    out = _reply(node, hello, {"bad@h": "not an object"})
    out += _reply(node, hello, {"good@h": {"clock": 3, "revoked": ["g"]}})
    assert list(node.revoked) == ["g"]
    assert any(isinstance(a, Log) and "bad@h" in a.message for a in out)
    node.tick(5.0)
    assert node.last_sync is not None and "bad@h" in node.last_sync.failed


def test_our_own_reply_is_skipped_and_other_tickets_ignored() -> None:
    node, hello = _started("n@h")
    _reply(node, hello, {"n@h": {"clock": 99, "revoked": ["mine"]}})
    other = Inbound.json({"x@h": {"clock": 1, "revoked": ["x"]}}, {"ticket": "another", "clock": 1})
    node.receive_reply(other, 0.05)
    assert list(node.revoked) == [] and node.mingle is not None and not node.mingle.replies


def test_initial_sync_refuses_clocks_beyond_2_53() -> None:
    node, hello = _started("n@h")
    out = _reply(node, hello, {"evil@h": {"clock": MAX_SAFE_CLOCK + 10, "revoked": []}}, clock=3)
    assert node.clock.value < 100
    assert any(isinstance(a, Log) and "ignored clock from evil@h" in a.message for a in out)


def test_two_nodes_sync_and_the_second_finishes_before_the_timeout() -> None:
    bus = MemoryBus()
    a = bus.add("a@h", mingle_timeout=1.0, mingle_settle=0.2)
    a.revoke_local(["only-on-a"], 0.0)
    bus.start("a@h", 0.0)
    bus.deliver(0.0)
    # a answered its own hello with null, as Celery does
    own = [p for s, p in bus.published if s == "a@h" and p.target == "reply"]
    assert own and own[0].body == {"a@h": None}
    bus.run(0.0, 1.2)
    a.clock.adjust(1000)
    b = bus.add("b@h", mingle_timeout=1.0, mingle_settle=0.2)
    b.revoke_local(["only-on-b"], 1.3)
    bus.start("b@h", 1.3)
    bus.deliver(1.3)
    assert "only-on-b" in a.revoked  # a merged b's hello
    assert "sync with b@h" in bus.log_text("a@h")
    bus.run(1.35, 1.6)
    synced = [x for x in bus.other["b@h"] if isinstance(x, Synced)]
    assert synced and synced[0].result.peers == ["a@h"]
    assert "only-on-a" in b.revoked and b.clock.value > 1000
    assert "mingle: sync with 1 nodes" in bus.log_text("b@h")
    assert bus.events("worker-online")  # heartbeats start after the sync


def test_lone_node_says_all_alone_without_mingle_waiting_long() -> None:
    bus = MemoryBus()
    bus.add("solo@h", mingle_timeout=1.0, mingle_settle=0.2)
    bus.start("solo@h", 0.0)
    bus.run(0.0, 0.3)
    assert "mingle: all alone" in bus.log_text("solo@h")
