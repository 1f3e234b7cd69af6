"""The sans-IO reference node: Mingle, Gossip and elections.

A :class:`Node` is a state machine.  The host (the binding, the Celery
bootsteps, a test) feeds it raw inbound messages (:class:`Inbound`: body
bytes, content type, headers, routing key) with the current time ``now``,
and calls :meth:`Node.tick` when :meth:`Node.next_wakeup` says so.  Every
call returns a list of actions (:mod:`wkctl.protocol.actions`).  There is
no broker, thread, socket, clock read or user callback inside: hostname,
pid, load average and ids come from an :class:`Environment`, so every
protocol rule is testable deterministically.

``now`` is wall-clock seconds (``time.time()`` in the binding): the pidbox
``expires`` header and event timestamps are wall-clock values on the wire,
so one time base serves every rule.

Errors: a peer's message that breaks a rule is rejected with a reason (a
rate-limited :class:`Log`) and dropped; a call that does not fit the
lifecycle raises :class:`LifecycleError`; anything else raised here is
wkctl's own bug and propagates to the host's loop, which logs it with its
traceback and counts it.  The control commands live in
:mod:`wkctl.protocol.commands`, the worker events (membership, elections)
in :mod:`wkctl.protocol.worker_events`, the lifecycle in
:mod:`wkctl.protocol.lifecycle`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from . import control
from .actions import Action, Log, Publish, Synced
from .clock import LamportClock
from .commands import ControlCommands
from .config import Environment, NodeConfig
from .election import Elections
from .gossip import Membership, WorkerInfo, heartbeat_fields
from .inbound import INVALID, Inbound, RejectLimiter, body_size, schema_problem
from .lifecycle import LifecycleError, NodeState, check_running, check_transition
from .mingle import MingleSession, SyncResult, sync_fields
from .revoked import MergeResult, RevokedSet
from .tasks import celery_task_message
from .wire import (
    Rejected,
    decode_body,
    event,
    event_routing_key,
    pidbox_request,
    pidbox_request_headers,
    printable,
)
from .worker_events import WorkerEvents

__all__ = ["LifecycleError", "Node", "NodeState"]

INFO, WARNING, ERROR, DEBUG = 20, 30, 40, 10

_safe = printable  # peer-supplied text in log lines (see wire.printable)


class Node:
    """One reference node of the worker-to-worker protocol (sans-IO)."""

    def __init__(
        self, config: NodeConfig | None = None, *, env: Environment | None = None, **overrides: Any
    ) -> None:
        if config is None:
            config = NodeConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a NodeConfig or keyword settings, not both")
        #: what the host supplies (hostname, pid, load average, ids...);
        #: the default is deterministic (see :class:`Environment`)
        self.env = env if env is not None else Environment()
        config.fill(self.env)
        self.config = config
        self.name = config.name
        # Unbounded until a peer's clock was adopted (a Mingle reply or a
        # worker event): until then only values up to 2**53-1 are adopted,
        # afterwards no jump beyond max_clock_jump (see clock.py).  A node
        # that Mingled alone, or without Mingle, anchors on its first peer.
        self.clock = LamportClock(max_jump=config.limits.max_clock_jump)
        self.revoked = RevokedSet(
            maxlen=min(config.revoked_max, config.limits.max_revoked),
            expires=config.revoked_expires,
        )
        self.membership = Membership(config.name)
        self.elections = Elections(config.name, timeout=config.election_timeout)
        #: election topics whose winning action the host runs (on
        #: :class:`Elected`); ``task`` is built in (:meth:`call_task`)
        #: unless the host claims it
        self.host_topics: set[str] = set()
        self.rejects = RejectLimiter(config.reject_log_interval)
        self.clock_rejects = RejectLimiter(config.reject_log_interval)
        self.mingle: MingleSession | None = None
        self.last_sync: SyncResult | None = None
        self.state = NodeState.NEW
        self._next_heartbeat: float | None = None
        self._next_sweep: float | None = None
        self._sync: SyncResult | None = None
        self.started_at: float | None = None
        self.commands = ControlCommands(self)
        self.events = WorkerEvents(self)

    # -- lifecycle (see wkctl.protocol.lifecycle) --------------------------

    @property
    def started(self) -> bool:
        """``start()`` was called (the node may be stopped since)."""
        return self.state is not NodeState.NEW

    @property
    def is_stopped(self) -> bool:
        return self.state is NodeState.STOPPED

    @property
    def online(self) -> bool:
        """Announced and gossiping: the initial Mingle round is over."""
        return self.state is NodeState.ONLINE and self.config.gossip

    def _move(self, target: NodeState, call: str) -> None:
        check_transition(self.name, self.state, target, call)
        self.state = target

    def _running(self, call: str) -> None:
        check_running(self.name, self.state, call)

    def start(self, now: float) -> list[Action]:
        """Begin: broadcast ``hello`` (Mingle), or announce at once without it.

        As in Celery, ``worker-online`` and the heartbeats start only once
        the Mingle round is over, so the first event already carries the
        synced clock.
        """
        out: list[Action] = []
        self._move(NodeState.MINGLING if self.config.mingle else NodeState.ONLINE, "start")
        self.started_at = now
        out.append(Log(INFO, f"node {self.name} starting (pid {self.config.pid})"))
        if self.config.gossip:
            self._next_sweep = now + self.config.sweep_interval
        if self.config.mingle:
            self._begin_mingle(now, out)
        else:
            self.clock.mark_synced(peer=False)
            self._go_online(now, out, "start")
            if self.config.announce:  # else the host says when it is ready
                out.append(Log(INFO, "ready."))
        return out

    def reconnected(self, now: float) -> list[Action]:
        """After a connection loss: Mingle again, then re-announce."""
        self._running("reconnected")
        out: list[Action] = [Log(INFO, "reconnected: re-announcing and syncing again")]
        self._next_heartbeat = None
        if self.config.mingle:
            self._move(NodeState.MINGLING, "reconnected")
            self._begin_mingle(now, out)
        else:
            self._go_online(now, out, "reconnected")
        return out

    def sync(self, now: float) -> list[Action]:
        """Begin another Mingle round while running (Celery's
        ``Mingle.sync`` called again); the node stays online, so the round
        ends without a second ``worker-online``.  A round in progress is
        left to finish."""
        self._running("sync")
        out: list[Action] = []
        if self.mingle is None:
            self._begin_mingle(now, out)
        return out

    def stop(self, now: float) -> list[Action]:
        """Clean stop: ``worker-offline`` (when we were announced)."""
        out: list[Action] = []
        if self.online and self.config.announce:
            out.append(self._worker_event("worker-offline", now))
        self._move(NodeState.STOPPED, "stop")
        self._next_heartbeat = None
        self.mingle = None
        out.append(Log(INFO, f"node {self.name} stopped"))
        return out

    def _begin_mingle(self, now: float, out: list[Action]) -> None:
        session = MingleSession(
            self.name,
            now,
            self.config.mingle_timeout,
            self.config.mingle_settle,
            ticket=self.env.new_id(),
        )
        self.mingle = session
        self._sync = SyncResult()
        names = self.config.names
        body = pidbox_request(
            "hello",
            session.arguments(self.revoked.as_list(now)),
            reply_exchange=names.reply_exchange,
            reply_routing_key=self.config.reply_routing_key,
            ticket=session.ticket,
        )
        headers = pidbox_request_headers(self.clock.forward(), self.config.mingle_timeout, now)
        headers["expires"] = now + self.config.mingle_timeout
        out.append(Log(INFO, "mingle: searching for neighbors"))
        out.append(Publish("pidbox", names.pidbox_exchange, "", body, headers))

    def _finish_mingle(self, now: float, out: list[Action]) -> None:
        session, result = self.mingle, self._sync or SyncResult()
        self.mingle = None
        if session is not None:
            session.finish()
        result.clock = self.clock.value
        self.clock.mark_synced(peer=bool(result.peers))
        if result.peers:
            out.append(Log(INFO, f"mingle: sync with {len(result.peers)} nodes"))
            out.append(Log(INFO, "mingle: sync complete"))
        else:
            out.append(Log(INFO, "mingle: all alone"))
        self.last_sync = result
        out.append(Synced(result))
        if self.state is NodeState.ONLINE:  # a round of a running node (sync)
            return
        self._go_online(now, out, "round over")
        if self.config.announce:  # else the host says when it is ready
            out.append(Log(INFO, "ready."))

    def _go_online(self, now: float, out: list[Action], call: str) -> None:
        if self.state is not NodeState.ONLINE:
            self._move(NodeState.ONLINE, call)
        if not self.config.gossip or not self.config.announce:
            return
        out.append(self._worker_event("worker-online", now))
        self._next_heartbeat = now + self.config.heartbeat

    # -- time -------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Run the timers due at ``now``: Mingle end, heartbeat, liveness
        sweep, election timeouts."""
        self._running("tick")
        out: list[Action] = []
        if self.mingle is not None and self.mingle.is_over(now):
            self._finish_mingle(now, out)
        if self._next_heartbeat is not None and now >= self._next_heartbeat and self.online:
            out.append(self._worker_event("worker-heartbeat", now))
            self._next_heartbeat = max(self._next_heartbeat + self.config.heartbeat, now)
        if self._next_sweep is not None and now >= self._next_sweep:
            self._next_sweep = now + self.config.sweep_interval
            self.revoked.purge(now)
            for change in self.membership.sweep(now):
                self.events.member_change(change, out)
        for id_, decision in self.elections.expire(now):
            if decision is None:
                out.append(Log(WARNING, f"election {id_!r} timed out with no requests; discarded"))
            else:
                out.append(
                    Log(
                        WARNING,
                        f"election {id_!r} timed out; deciding among {len(decision.participants)}"
                        f" requests (missing: {', '.join(map(_safe, decision.missing)) or 'none'})",
                    )
                )
                self.events.decided(decision, now, out)
        return out

    def next_wakeup(self, now: float) -> float:
        """The earliest time :meth:`tick` has something to do."""
        times = [now + 1.0]
        if self.mingle is not None:
            times.append(self.mingle.deadline())
        if self._next_heartbeat is not None:
            times.append(self._next_heartbeat)
        if self._next_sweep is not None:
            times.append(self._next_sweep)
        deadline = self.elections.next_deadline()
        if deadline is not None:
            times.append(deadline)
        return min(times)

    # -- rejections -------------------------------------------------------

    def _reject(self, sender: str, where: str, reason: str, now: float, out: list[Action]) -> None:
        suppressed = self.rejects.hit(sender, now)
        if suppressed is None:
            return
        more = f" ({suppressed} more from this sender suppressed)" if suppressed else ""
        out.append(
            Log(WARNING, f"rejected {where} from {_safe(sender)}: {_safe(reason, 300)}{more}")
        )

    def _receive_clock(
        self, value: object, sender: str, now: float, out: list[Action], peer: bool = True
    ) -> None:
        """Apply a received clock value; ``peer`` is False for values from
        pidbox clients (their clock is usually 1), which never end the
        initial sync."""
        if value is None or value == 0:
            self.clock.forward()
            return
        verdict = self.clock.receive(value)
        if verdict.adopted and peer and not self.clock.bounded and self.mingle is None:
            self.clock.anchor()
        if not verdict.adopted:
            suppressed = self.clock_rejects.hit(sender, now)
            if suppressed is not None:
                more = f" ({suppressed} more suppressed)" if suppressed else ""
                out.append(
                    Log(WARNING, f"ignored clock from {_safe(sender)}: {verdict.reason}{more}")
                )

    def _decode(self, msg: Inbound, sender: str, where: str, now: float, out: list[Action]) -> Any:
        try:
            return decode_body(msg.body, msg.content_type, msg.content_encoding, self.config.limits)
        except Rejected as exc:
            self._reject(sender, where, str(exc), now, out)
            return INVALID

    # -- pidbox (see wkctl.protocol.commands) ------------------------------

    def receive_pidbox(
        self, msg: Inbound, now: float, process: control.ProcessInfo | None = None
    ) -> list[Action]:
        """A control request from this node's pidbox queue (kombu's
        ``Node.handle_message``, with the checks Celery lacks).

        ``process`` carries what the host measured (resource usage) for
        ``stats`` and ``memsample``."""
        self._running("receive_pidbox")
        return self.commands.handle(msg, now, process)

    def admit_request(self, body: Any, now: float) -> tuple[bool, list[Action]]:
        """Whether a control request already decoded by a Celery worker's
        own pidbox may be handed to Celery ([PIDBOX-21]); a rejected one is
        logged like any rejection (rate-limited per sender)."""
        out: list[Action] = []
        return self.commands.admit(body, now, out), out

    def answer_hello(self, from_node: Any, revoked: Any, now: float) -> tuple[Any, list[Action]]:
        """Answer a ``hello`` whose arguments were decoded by the host (a
        Celery worker's pidbox); see :meth:`ControlCommands.answer_hello`."""
        return self.commands.answer_hello(from_node, revoked, now)

    def facts(self, now: float) -> control.NodeFacts:
        """This node's figures for ``stats``, ``conf`` and ``report``."""
        return self.commands.facts(now)

    # -- replies (Mingle) -------------------------------------------------

    def receive_reply(self, msg: Inbound, now: float) -> list[Action]:
        """A message from this node's reply queue: a ``hello`` reply while
        Mingle collects (others, e.g. late replies, are ignored)."""
        self._running("receive_reply")
        out: list[Action] = []
        self._reply(msg, now, out)
        return out

    def _reply(self, msg: Inbound, now: float, out: list[Action]) -> None:
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        session = self.mingle
        if session is None or headers.get("ticket") != session.ticket:
            return
        body = self._decode(msg, "reply", "hello reply", now, out)
        if body is INVALID:
            return
        sender = next(iter(body), "reply") if isinstance(body, dict) and body else "reply"
        sender = sender if isinstance(sender, str) else "reply"
        if not isinstance(body, dict):
            self._reject(sender, "hello reply", "not an object", now, out)
            return
        self._receive_clock(headers.get("clock"), sender, now, out)
        problem = schema_problem(body, "hello-reply", body_size(msg))
        result = self._sync or SyncResult()
        if problem and not all(v is None for v in body.values()):
            # One reply is one node's: rejecting it skips that node only.
            self._reject(sender, "hello reply", problem, now, out)
            for nodename in list(body)[:16]:
                if isinstance(nodename, str) and nodename != self.name:
                    result.failed[nodename] = f"invalid reply: {problem}"
            return
        for nodename, value in session.on_reply(body, now):
            self._sync_with_node(nodename, value, now, out, result)

    def on_node_reply(
        self, nodename: str, reply: Any, now: float, result: SyncResult | None = None
    ) -> list[Action]:
        """Apply one peer's ``hello`` reply value (Celery's
        ``Mingle.on_node_reply``): adjust the clock, merge the revoked ids;
        a reply that cannot be used is logged and skipped, never raised.
        ``result`` (default: the current round's) records the outcome."""
        out: list[Action] = []
        if result is None:
            result = self._sync or SyncResult()
        self._sync_with_node(nodename, reply, now, out, result)
        return out

    def _sync_with_node(
        self, nodename: str, value: Any, now: float, out: list[Action], result: SyncResult
    ) -> None:
        clock, revoked, error = sync_fields(value)
        if error:
            result.failed[nodename] = error
            out.append(Log(WARNING, f"mingle: sync with {_safe(nodename)} failed: {error}"))
            return
        self.on_clock_event(clock, nodename, now, out)
        merged = self.on_revoked_received(revoked, now)
        result.revoked_added += merged.added
        result.peers.append(nodename)
        out.append(Log(DEBUG, f"mingle: processed reply from {_safe(nodename)}"))

    def on_clock_event(
        self, clock: Any, sender: str = "peer", now: float = 0.0, out: list[Action] | None = None
    ) -> int:
        """Celery's ``Mingle.on_clock_event``: adjust when a clock is given
        (under the poisoning bounds), otherwise forward.  Returns the value."""
        if clock:
            self._receive_clock(clock, sender, now, out if out is not None else [])
        else:
            self.clock.forward()
        return self.clock.value

    def on_revoked_received(self, revoked: Any, now: float) -> MergeResult:
        """Celery's ``Mingle.on_revoked_received``: merge ids in either wire
        form, stamped with the local time ``now``."""
        return self.revoked.merge(revoked, now)

    # -- events (Gossip) --------------------------------------------------

    def receive_event(self, msg: Inbound, now: float) -> list[Action]:
        """A message from the event queue (bound to ``worker.#``)."""
        self._running("receive_event")
        out: list[Action] = []
        if not self.config.gossip:
            return out
        self.events.from_message(msg, now, out)
        return out

    def on_event(
        self, event: dict[str, Any], now: float, sender: str | None = None
    ) -> list[Action]:
        """Handle one decoded event (what Celery's ``Gossip.on_message`` does
        after deserializing): validated, then elections or membership."""
        self._running("on_event")
        out: list[Action] = []
        if not self.config.gossip:
            return out
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._reject(sender or "unknown sender", "event", "not an event object", now, out)
        else:
            hostname = event.get("hostname")
            who = sender or (hostname if isinstance(hostname, str) else "unknown sender")
            self.events.take(event, who, now, out)
        return out

    def on_elect(self, event: dict[str, Any], now: float) -> list[Action]:
        """A decoded ``worker-elect`` event (Celery's ``Gossip.on_elect``)."""
        return self.on_event(dict(event, type="worker-elect"), now)

    def on_elect_ack(self, event: dict[str, Any], now: float) -> list[Action]:
        """A decoded ``worker-elect-ack`` event (Celery's ``Gossip.on_elect_ack``)."""
        return self.on_event(dict(event, type="worker-elect-ack"), now)

    def election(self, id: str, topic: str, action: Any, now: float) -> list[Action]:
        """Take part in election ``id`` (Celery's ``Gossip.election``): send
        our ``worker-elect``; what the ``election`` control command does."""
        self._running("election")
        out: list[Action] = []
        self.commands._cmd_election({"id": id, "topic": topic, "action": action}, now, out)
        return out

    def periodic(self, now: float) -> list[Action]:
        """Sweep the peers whose heartbeats expired now (Celery's
        ``Gossip.periodic``; :meth:`tick` also runs it every ``sweep_interval``)."""
        out: list[Action] = []
        for change in self.membership.sweep(now):
            self.events.member_change(change, out)
        return out

    def call_task(self, action: Any) -> list[Action]:
        """The ``task`` topic's action (Celery's ``Gossip.call_task``): the
        task message to publish, or the logged reason it cannot be built."""
        try:
            message = celery_task_message(action, origin=self.name, new_id=self.env.new_id)
        except ValueError as exc:
            return [Log(ERROR, f"Could not call task: {exc}")]
        return [
            message,
            Log(INFO, f"calling task {message.headers['task']} as {message.headers['id']}"),
        ]

    # -- outbound helpers -------------------------------------------------

    def _event(self, type_: str, now: float, **fields: Any) -> Publish:
        body = event(
            type_,
            hostname=self.name,
            clock=self.clock.forward(),
            pid=self.config.pid,
            timestamp=now,
            utcoffset=self.env.utcoffset(),
            **fields,
        )
        return Publish(
            "event",
            self.config.names.event_exchange,
            event_routing_key(type_),
            body,
            {"hostname": self.name},
        )

    def _worker_event(self, type_: str, now: float) -> Publish:
        return self._event(
            type_,
            now,
            **heartbeat_fields(
                self.config.heartbeat, self.config.sw_ver, self.env.loadavg(), self.env.sw_sys
            ),
        )

    # -- local API (in-process callers) -----------------------------------

    def alive_peers(self, now: float) -> list[WorkerInfo]:
        return [w for w in self.membership.workers.values() if w.alive(now)]

    def revoke_local(self, task_ids: Iterable[str], now: float) -> None:
        """Flag ids as revoked on this node only (tests, seeding)."""
        self.revoked.update(task_ids, now)
