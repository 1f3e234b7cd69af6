"""The one home of queue declarations (protocol/broker.py): every queue the
binding, the client, the bootsteps, the hardened steps and the conformance
kit declare comes from these factories, with the arguments kombu's Mailbox
and Celery's consumers use."""

from __future__ import annotations

import ast
from pathlib import Path

from wkctl.protocol.broker import event_queue, pidbox_queue, reply_queue, task_queue
from wkctl.protocol.wire import Names

REPO = Path(__file__).resolve().parents[2]


def test_reply_pidbox_and_event_queues_carry_the_mailbox_arguments() -> None:
    names = Names()
    reply = reply_queue(names, "oid-1")
    assert reply.name == names.reply_queue("oid-1") and reply.routing_key == "oid-1"
    assert reply.exchange.name == names.reply_exchange and reply.exchange.type == "direct"
    assert (reply.durable, reply.exclusive, reply.auto_delete) == (False, True, True)
    assert reply.expires == names.control_queue_expires
    assert reply.message_ttl == names.control_queue_ttl
    assert reply_queue(names, "oid-1", exclusive=False).exclusive is False

    pidbox = pidbox_queue(names, "n1@h")
    assert pidbox.name == names.node_queue("n1@h")
    assert pidbox.exchange.name == names.pidbox_exchange and pidbox.exchange.type == "fanout"
    assert (pidbox.durable, pidbox.exclusive, pidbox.auto_delete) == (False, True, True)

    amqp = event_queue(names, "amqp", "x", "worker.#")
    assert amqp.exchange.type == "topic" and amqp.routing_key == "worker.#"
    assert amqp.message_ttl == names.event_queue_ttl and amqp.expires == names.event_queue_expires
    assert event_queue(names, "redis", "x").exchange.type == "fanout"
    assert event_queue(names, "amqp", "x", message_ttl=2.0).message_ttl == 2.0

    task = task_queue("elected")
    assert task.exchange.name == "elected" and task.routing_key == "elected"


def test_no_queue_is_declared_outside_the_factories() -> None:
    """A ``kombu.Queue(...)`` built anywhere else is a second home of a
    queue's arguments (they drifted before: one copy lacked the TTLs)."""
    offenders = []
    for folder in ("protocol", "cli", "conform", "pkg"):
        for path in (REPO / folder).glob("*.py"):
            if path.name == "broker.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id == "Queue"
                ):
                    offenders.append(f"{folder}/{path.name}:{node.lineno}")
    assert offenders == []
