"""The node's lifecycle: NEW -> MINGLING -> ONLINE -> STOPPED; a call that
does not fit the state raises LifecycleError (the host's bug), never is
ignored."""

from __future__ import annotations

import pytest

from wkctl.protocol.lifecycle import TRANSITIONS
from wkctl.protocol.node import Inbound, LifecycleError, Node, NodeConfig, NodeState
from wkctl.protocol.wire import pidbox_request

PING = Inbound.json(pidbox_request("ping"), {"clock": 1})
EVENT = Inbound.json(
    {"type": "worker-heartbeat", "hostname": "p@h", "clock": 1, "timestamp": 1.0},
    {"hostname": "p@h"},
    "worker.heartbeat",
)
REPLY = Inbound.json({"p@h": {"clock": 1, "revoked": []}}, {"ticket": "t", "clock": 1})

INPUTS = {
    "tick": lambda n: n.tick(5.0),
    "receive_pidbox": lambda n: n.receive_pidbox(PING, 5.0),
    "receive_event": lambda n: n.receive_event(EVENT, 5.0),
    "receive_reply": lambda n: n.receive_reply(REPLY, 5.0),
    "on_event": lambda n: n.on_event({"type": "worker-heartbeat"}, 5.0),
    "election": lambda n: n.election("e", "t", None, 5.0),
    "sync": lambda n: n.sync(5.0),
    "reconnected": lambda n: n.reconnected(5.0),
}


def node(mingle: bool = True) -> Node:
    return Node(NodeConfig(name="n@h", pid=1, mingle=mingle))


def test_the_states_in_order() -> None:
    n = node()
    assert n.state is NodeState.NEW and not n.started
    n.start(1.0)
    assert n.state is NodeState.MINGLING
    n.tick(3.0)  # the Mingle round is over (1 s timeout)
    assert n.state is NodeState.ONLINE and n.online
    n.stop(4.0)
    assert n.state is NodeState.STOPPED and n.is_stopped
    assert not [pair for pair in TRANSITIONS if pair[0] is NodeState.STOPPED]


def test_without_mingle_start_goes_online() -> None:
    n = node(mingle=False)
    n.start(1.0)
    assert n.state is NodeState.ONLINE


def test_start_twice_raises() -> None:
    n = node()
    n.start(1.0)
    with pytest.raises(LifecycleError, match=r"start\(\) is not allowed in state MINGLING"):
        n.start(2.0)


def test_start_after_stop_raises() -> None:
    n = node(mingle=False)
    n.start(1.0)
    n.stop(2.0)
    with pytest.raises(LifecycleError, match="STOPPED"):
        n.start(3.0)


def test_stop_before_start_and_twice_raise() -> None:
    with pytest.raises(LifecycleError, match="NEW"):
        node().stop(1.0)
    n = node(mingle=False)
    n.start(1.0)
    n.stop(2.0)
    with pytest.raises(LifecycleError, match="STOPPED"):
        n.stop(3.0)


@pytest.mark.parametrize("call", sorted(INPUTS))
def test_input_before_start_raises(call: str) -> None:
    n = node()
    with pytest.raises(LifecycleError, match=r"call start\(\) first"):
        INPUTS[call](n)
    assert n.state is NodeState.NEW  # nothing happened


@pytest.mark.parametrize("call", sorted(INPUTS))
def test_input_after_stop_raises(call: str) -> None:
    n = node(mingle=False)
    n.start(1.0)
    n.stop(2.0)
    with pytest.raises(LifecycleError, match="the node was stopped"):
        INPUTS[call](n)


def test_local_api_works_in_any_state() -> None:
    """Seeding revoked ids before start (``wkctl node --revoked``) and
    reading figures are not input: allowed in every state."""
    n = node()
    n.revoke_local(["a"], 0.5)
    assert n.facts(0.5).name == "n@h"
    n.start(1.0)
    n.stop(2.0)
    n.revoke_local(["b"], 3.0)
    assert "b" in n.revoked


def test_reconnect_mingles_again_then_announces() -> None:
    n = node()
    n.start(1.0)
    n.tick(3.0)
    n.reconnected(4.0)
    assert n.state is NodeState.MINGLING and not n.online
    n.tick(6.0)
    assert n.state is NodeState.ONLINE
