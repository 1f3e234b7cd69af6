"""Errors: a peer breaking a rule is rejected with a reason; wkctl's own bug
propagates out of the core (never a log string, never fail-open) to the
host's loop, which logs it with its traceback and counts it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wkctl.protocol import inbound, validation
from wkctl.protocol.binding import Binding
from wkctl.protocol.broker import embedded_settings
from wkctl.protocol.node import Inbound, Log, Node, NodeConfig
from wkctl.protocol.wire import pidbox_request

HEARTBEAT = Inbound.json(
    {
        "type": "worker-heartbeat",
        "hostname": "p@h",
        "clock": 1,
        "timestamp": 1.0,
        "utcoffset": 0,
        "pid": 7,
        "freq": 2.0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.0, 0.0, 0.0],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
    },
    {"hostname": "p@h"},
    "worker.heartbeat",
)


def started() -> Node:
    node = Node(NodeConfig(name="n@h", pid=1, mingle=False))
    node.start(1.0)
    return node


def test_a_peer_breaking_a_rule_is_rejected_with_a_reason() -> None:
    out = started().receive_event(Inbound.json({"type": 5}, {"hostname": "p@h"}), 2.0)
    assert any(isinstance(a, Log) and "rejected event" in a.message for a in out), out


def test_a_validator_fault_propagates_instead_of_passing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old adapter treated a validator crash as "valid" (fail-open)."""

    def broken(body: object, kind: str) -> bool:
        raise RuntimeError("validator bug")

    monkeypatch.setattr(inbound.validation, "is_valid", broken)
    assert inbound.validation is validation
    node = started()
    with pytest.raises(RuntimeError, match="validator bug"):
        node.receive_event(HEARTBEAT, 2.0)


def test_a_bug_in_a_command_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A control command that raises is wkctl's bug: it is not answered
    with ``{"error": repr(exc)}`` and a log line any more."""
    node = started()

    def broken(args: object, now: float, out: object) -> object:
        raise ZeroDivisionError("command bug")

    monkeypatch.setitem(node.commands._handlers, "ping", broken)
    body = pidbox_request(
        "ping", reply_exchange="reply.celery.pidbox", reply_routing_key="k", ticket="t"
    )
    request = Inbound.json(body, {"clock": 1})
    with pytest.raises(ZeroDivisionError):
        node.receive_pidbox(request, 2.0)


def test_the_binding_logs_counts_and_survives_a_bug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    binding = Binding(embedded_settings(tmp_path / "broker")).start()
    try:
        handle = binding.add_node("bug@h", mingle=False, heartbeat=1.0)
        assert handle.wait_synced(10)
        with caplog.at_level(logging.ERROR, logger="wkctl.node"):
            handle.submit(lambda node, now: [1 / 0])  # a bug reached from the loop
            assert handle.wait_for(lambda h: h.internal_errors == 1, 5)
        assert binding.internal_errors == 1
        record = next(r for r in caplog.records if "internal error" in r.getMessage())
        assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
        # the loop and the node carry on
        handle.submit(lambda node, now: node.sync(now))
        assert handle.wait_for(lambda h: len(h.syncs) >= 1, 10)
    finally:
        binding.shutdown()
