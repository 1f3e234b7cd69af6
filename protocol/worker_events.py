"""The worker events a node takes in (Gossip): heartbeats that make the
membership, and the ``worker-elect`` / ``worker-elect-ack`` events that
decide elections ([GOSSIP-*], [ELECT-*]).

:class:`WorkerEvents` is part of one :class:`~wkctl.protocol.core.Node`
(``node.events``); the node's ``receive_event`` / ``on_event`` hand it each
decoded event after the lifecycle check.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .actions import Action, Elected, Log, MemberChanged
from .election import Decision, ElectRequest
from .gossip import Change
from .inbound import INVALID, Decoded, Inbound, body_size, schema_problem
from .vocab import HEARTBEAT_TYPES
from .wire import printable

if TYPE_CHECKING:
    from .core import Node

__all__ = ["WorkerEvents"]

INFO, WARNING, ERROR = 20, 30, 40

_safe = printable  # peer-supplied text in log lines (see wire.printable)


class WorkerEvents:
    """Membership and elections of one node, fed with worker events."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def from_message(self, msg: Inbound, now: float, out: list[Action]) -> None:
        """One message of the event queue: decoded (or taken from the
        binding's shared decode), then :meth:`take`."""
        # On fanout event exchanges (Redis) task events reach us too; like
        # Celery, skip them by routing key before reading them at all.
        if msg.routing_key.split(".", 1)[0] == "task":
            return
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        sender = headers.get("hostname")
        sender = sender if isinstance(sender, str) else "unknown sender"
        shared = msg.decoded
        if shared is not None and (
            shared.limits is self.node.config.limits or shared.limits == self.node.config.limits
        ):
            body = shared.body
            if body is INVALID:
                self.node._reject(sender, "event", shared.error, now, out)
                return
        else:
            shared = None
            body = self.node._decode(msg, sender, "event", now, out)
        if body is INVALID or isinstance(body, list):
            return  # a task.multi batch published with another routing key
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            self.node._reject(sender, "event", "not an event object", now, out)
            return
        self.take(body, sender, now, out, body_size(msg), shared)

    def take(
        self,
        body: dict[str, Any],
        sender: str,
        now: float,
        out: list[Action],
        size: int | None = None,
        shared: Decoded | None = None,
    ) -> None:
        """One decoded event from ``sender``: schema-checked, the clock
        applied, then membership or elections."""
        type_: str = body["type"]
        if not type_.startswith("worker-"):
            return
        kind = {"worker-elect": "elect", "worker-elect-ack": "elect-ack"}.get(type_, "heartbeat")
        if kind == "heartbeat" and type_ not in HEARTBEAT_TYPES:
            return  # custom worker-* events: not membership
        if shared is not None:
            problem = shared.schema_problem(kind, size)
        else:
            problem = schema_problem(body, kind, size)
        if problem:
            self.node._reject(sender, f"event {_safe(type_, 50)}", problem, now, out)
            return
        hostname = body.get("hostname")
        if not isinstance(hostname, str):
            self.node._reject(sender, f"event {_safe(type_, 50)}", "no hostname", now, out)
            return
        if hostname == self.node.name:
            self.node.clock.forward()
        else:
            self.node._receive_clock(body.get("clock"), hostname, now, out)
        if type_ == "worker-elect":
            if shared is not None and "action" in body:
                # The action reaches election handlers: each node its own copy.
                body = {**body, "action": copy.deepcopy(body["action"])}
            self._on_elect(body, hostname, now, out)
        elif type_ == "worker-elect-ack":
            id_ = body.get("id")
            if isinstance(id_, str):
                decision = self.node.elections.on_ack(
                    id_, hostname, now, self.node.membership.alive(now)
                )
                if decision is not None:
                    self.decided(decision, now, out)
        elif hostname != self.node.name:
            for change in self.node.membership.on_event(body, now):
                self.member_change(change, out)

    def _on_elect(self, body: dict[str, Any], hostname: str, now: float, out: list[Action]) -> None:
        request = ElectRequest.from_event(body)
        if request is None:
            self.node._reject(
                hostname,
                "event worker-elect",
                "missing or invalid id/clock/hostname/pid/topic",
                now,
                out,
            )
            return
        ack, decision = self.node.elections.on_request(
            request, now, self.node.membership.alive(now)
        )
        if ack:
            out.append(self.node._event("worker-elect-ack", now, id=request.id))
        if decision is not None:
            self.decided(decision, now, out)

    def decided(self, decision: Decision, now: float, out: list[Action]) -> None:
        """Report a decision; the winner runs the built-in ``task`` topic or
        leaves the action to the host (``node.host_topics``)."""
        out.append(Elected(decision))
        if not decision.won:
            out.append(
                Log(INFO, f"node {_safe(decision.winner.node_id)} elected for {decision.id!r}")
            )
            return
        out.append(Log(INFO, f"I won the election {decision.id!r}"))
        if decision.topic in self.node.host_topics:
            return  # the host runs the action when it performs Elected
        if decision.topic == "task":
            out.extend(self.node.call_task(decision.action))
            return
        out.append(Log(ERROR, f"Unknown election topic {_safe(decision.topic, 100)!r}"))

    def member_change(self, change: Change, out: list[Action]) -> None:
        """Report a membership change; a peer gone no longer holds up the
        elections that waited for it."""
        worker = change.worker
        text = {
            "join": f"{_safe(worker.hostname)} joined the party",
            "leave": f"{_safe(worker.hostname)} left",
            "lost": f"missed heartbeat from {_safe(worker.hostname)}",
        }[change.kind]
        out.append(Log(INFO, text))
        out.append(MemberChanged(change))
        if change.kind in ("leave", "lost"):
            for decision in self.node.elections.forget(worker.hostname):
                self.decided(decision, 0.0, out)
