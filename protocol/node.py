"""The sans-IO reference node: Mingle, Gossip, elections and control commands.

A :class:`Node` is a state machine.  The binding (or a test) feeds it raw
inbound messages (:class:`Inbound`: body bytes, content type, headers,
routing key) with the current time ``now``, and calls :meth:`Node.tick`
when :meth:`Node.next_wakeup` says so.  Every call returns a list of
actions: :class:`Publish` (a message to send), :class:`Log` (a log record)
and the notifications :class:`Synced`, :class:`Elected` and
:class:`MemberChanged`.  There is no broker, thread, socket or clock read
inside, so every protocol rule is testable deterministically.

``now`` is wall-clock seconds (``time.time()`` in the binding): the pidbox
``expires`` header and event timestamps are wall-clock values on the wire,
so one time base serves every rule.

Every inbound message is decoded with :func:`wkctl.protocol.wire.decode_body`
(JSON only, bounded size and depth; other content types are refused
unread) and validated against the spec's schemas before any handler sees
it.  A rejected message is logged with its reason at most once per sender
per ``reject_log_interval`` and dropped; no handler raises.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from . import control
from .clock import LamportClock
from .election import DEFAULT_ELECTION_TIMEOUT, Decision, Elections, ElectRequest
from .gossip import (
    DEFAULT_HEARTBEAT,
    DEFAULT_SWEEP_INTERVAL,
    Callbacks,
    Change,
    Membership,
    WorkerInfo,
    heartbeat_fields,
)
from .mingle import (
    DEFAULT_MINGLE_SETTLE,
    DEFAULT_MINGLE_TIMEOUT,
    MingleSession,
    SyncResult,
    sync_fields,
)
from .revoked import DEFAULT_REVOKED_EXPIRES, DEFAULT_REVOKED_MAX, MergeResult, RevokedSet
from .vocab import METHOD_ALIASES, request_kind
from .wire import (
    JSON_CONTENT_TYPE,
    Limits,
    Names,
    Rejected,
    decode_body,
    event,
    event_routing_key,
    pidbox_reply,
    pidbox_reply_headers,
    pidbox_request,
    pidbox_request_headers,
    printable,
    request_problem,
)

__all__ = [
    "Action",
    "Decoded",
    "Elected",
    "Inbound",
    "Log",
    "MemberChanged",
    "Node",
    "NodeConfig",
    "Publish",
    "ShutdownRequested",
    "Synced",
    "celery_task_message",
    "default_nodename",
]

INFO, WARNING, ERROR, DEBUG = logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG

#: Default interval between two logged rejections of one sender.
DEFAULT_REJECT_LOG_INTERVAL = 60.0
#: Senders remembered by the reject rate limiter.
MAX_REJECT_SENDERS = 1024
#: Method names whose error reply was logged (once each, [CONTROL-8]).
MAX_LOGGED_METHODS = 1024


def default_nodename() -> str:
    """``wkctl@<hostname>``, the way Celery names a worker ``celery@<hostname>``."""
    return f"wkctl@{socket.gethostname()}"


def _sw_ver() -> str:
    try:
        from wkctl import __version__
    except Exception:  # pragma: no cover - partial install
        return "0+unknown"
    return __version__


_safe = printable  # peer-supplied text in log lines (see wire.printable)


# -- schema validation adapter -------------------------------------------


#: Bodies up to this size get a detailed schema error in the log; larger
#: invalid ones only a summary, since the detailed (jsonschema) pass over a
#: multi-megabyte body takes seconds: one such message must not stall a node.
DETAIL_LIMIT = 64 * 1024


def _load_validator() -> Callable[[object, str, int | None], str] | None:
    try:
        from . import validation
    except Exception:  # pragma: no cover - the module is part of the package
        return None

    def check(body: object, kind: str, size: int | None) -> str:
        try:
            if validation.is_valid(body, kind):
                return ""
            if size is None or size > DETAIL_LIMIT:
                shown = "a large body" if size is None else f"a {size}-byte body"
                return f"not a valid {kind} message (details not computed for {shown})"
            issues = validation.validate(body, kind)
        except Exception:  # unknown kind or a validator fault: don't block traffic
            return ""
        return "; ".join(_safe(str(i), 200) for i in issues[:3])

    return check


_VALIDATE = _load_validator()


def schema_problem(body: object, kind: str, size: int | None = None) -> str:
    """Why ``body`` is not a valid ``kind`` message per the spec schemas, or ``""``.

    ``size`` is the length of the raw body: the detailed explanation is only
    computed for bodies up to ``DETAIL_LIMIT`` bytes (the fast check always
    runs)."""
    if _VALIDATE is None:
        return ""
    return _VALIDATE(body, kind, size)


# -- inputs and outputs ---------------------------------------------------


_INVALID = object()


class Decoded:
    """An inbound body decoded, and schema-checked on demand, once for all
    the nodes of a process.

    A binding hosting many nodes hands every event to each of them; decoding
    and validating the same bytes once per node was a third of such a
    process's time.  Only a node with equal :class:`Limits` uses it (the
    limits decide what is rejected), and the body is shared: nodes only
    read it (what reaches election handlers is copied).
    """

    __slots__ = ("limits", "body", "error", "_problems")

    def __init__(self, msg: Inbound, limits: Limits) -> None:
        self.limits = limits
        #: The decoded body, or ``_INVALID`` with ``error`` saying why.
        self.body: Any = _INVALID
        self.error = ""
        try:
            self.body = decode_body(msg.body, msg.content_type, msg.content_encoding, limits)
        except Rejected as exc:
            self.error = str(exc)
        self._problems: dict[tuple[str, int | None], str] = {}

    def schema_problem(self, kind: str, size: int | None) -> str:
        """:func:`schema_problem` of the body, computed once per ``kind``."""
        key = (kind, size)
        problem = self._problems.get(key)
        if problem is None:
            problem = self._problems[key] = schema_problem(self.body, kind, size)
        return problem


@dataclass(frozen=True)
class Inbound:
    """One message as it came off the broker, not yet decoded (or decoded
    once for many nodes: ``decoded``, see :meth:`predecoded`)."""

    body: bytes | str | None
    content_type: str | None = JSON_CONTENT_TYPE
    content_encoding: str | None = "utf-8"
    headers: Mapping[str, Any] = field(default_factory=dict)
    routing_key: str = ""
    decoded: Decoded | None = field(default=None, compare=False, repr=False)

    def predecoded(self, limits: Limits) -> Inbound:
        """This message with its body decoded once under ``limits``: nodes
        with those limits skip their own decode and schema checks."""
        return replace(self, decoded=Decoded(self, limits))

    @classmethod
    def json(
        cls, obj: Any, headers: Mapping[str, Any] | None = None, routing_key: str = ""
    ) -> Inbound:
        """An inbound JSON message built from a Python object (tests, in-process use)."""
        import json

        return cls(
            json.dumps(obj).encode(), JSON_CONTENT_TYPE, "utf-8", dict(headers or {}), routing_key
        )


@dataclass(frozen=True)
class Publish:
    """A message to publish.

    ``target`` tells the binding which declared exchange to use: ``event``
    (the event exchange), ``pidbox`` (the broadcast exchange), ``reply``
    (the reply exchange) or ``task`` (a Celery task message: ``exchange``
    ``""`` routes straight to ``declare_queue``).
    """

    target: str
    exchange: str
    routing_key: str
    body: Any
    headers: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    declare_queue: str | None = None


@dataclass(frozen=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True)
class Synced:
    """The Mingle round finished (the node is synced; heartbeats start)."""

    result: SyncResult


@dataclass(frozen=True)
class Elected:
    """This node decided an election."""

    decision: Decision


@dataclass(frozen=True)
class MemberChanged:
    """A peer joined, left or was lost."""

    change: Change


@dataclass(frozen=True)
class ShutdownRequested:
    """The ``shutdown`` command addressed this node: the host stops it
    cleanly (``worker-offline``) and, for a node run alone, exits 0."""

    reason: str


Action = Publish | Log | Synced | Elected | MemberChanged | ShutdownRequested

#: An election topic handler: called with the elected action and the
#: decision on the winning node; may return actions to perform (e.g. the
#: task message for topic ``task``).
TopicHandler = Callable[[Any, Decision], "Iterable[Action] | None"]


# -- configuration --------------------------------------------------------


@dataclass
class NodeConfig:
    """Everything that parameterises one node.  Defaults follow Celery."""

    name: str = field(default_factory=default_nodename)
    pid: int = field(default_factory=os.getpid)
    heartbeat: float = DEFAULT_HEARTBEAT
    mingle: bool = True
    gossip: bool = True
    #: the node sends its own ``worker-online``/``-heartbeat``/``-offline``;
    #: False when its host does (a Celery worker's ``Heart`` step, which
    #: reports the worker's real task counts), so there are never two.
    announce: bool = True
    mingle_timeout: float = DEFAULT_MINGLE_TIMEOUT
    mingle_settle: float = DEFAULT_MINGLE_SETTLE
    election_timeout: float = DEFAULT_ELECTION_TIMEOUT
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    revoked_max: int = DEFAULT_REVOKED_MAX
    revoked_expires: float | None = DEFAULT_REVOKED_EXPIRES
    reject_log_interval: float = DEFAULT_REJECT_LOG_INTERVAL
    limits: Limits = field(default_factory=Limits)
    names: Names = field(default_factory=Names)
    sw_ver: str = field(default_factory=_sw_ver)
    #: routing key of this node's reply queue (kombu's ``oid``)
    reply_routing_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: the broker connection as Celery's ``stats`` reports it (no password;
    #: secret-looking keys are masked again when replying)
    broker_info: dict[str, Any] = field(default_factory=dict)
    #: the settings ``conf`` reports, under Celery's names (masked URL)
    settings_info: dict[str, Any] = field(default_factory=dict)


class RejectLimiter:
    """At most one log line per sender per interval, counting the rest."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.total = 0

    def hit(self, sender: str, now: float) -> int | None:
        """``None`` to stay silent, else how many were suppressed before."""
        self.total += 1
        last = self._last.get(sender)
        if last is not None and now - last[0] < self.interval:
            self._last[sender] = (last[0], last[1] + 1)
            return None
        self._last[sender] = (now, 0)
        self._last.move_to_end(sender)
        while len(self._last) > MAX_REJECT_SENDERS:
            self._last.popitem(last=False)
        return 0 if last is None else last[1]


# -- Celery task messages (the ``task`` election topic) ------------------


def celery_task_message(signature: Any, origin: str) -> Publish:
    """A Celery task message (protocol 2) applying ``signature``, as
    ``app.signature(task).apply_async()`` publishes it with default routing.

    ``signature`` is the dict form of a Celery signature (``task``, ``args``,
    ``kwargs``, ``options``).  Routing follows ``send_task_message``: the
    ``queue`` option (default ``celery``) through the default exchange
    ``""`` with the queue name as routing key, or an explicit ``exchange``
    and ``routing_key``.  Raises ``ValueError`` for an unusable signature.
    """
    if isinstance(signature, str):
        signature = {"task": signature}
    if not isinstance(signature, Mapping) or not isinstance(signature.get("task"), str):
        raise ValueError("the action is not a task signature (an object with a 'task' name)")
    name: str = signature["task"]
    args = signature.get("args") or []
    kwargs = signature.get("kwargs") or {}
    options = signature.get("options") or {}
    if (
        not isinstance(args, list)
        or not isinstance(kwargs, Mapping)
        or not isinstance(options, Mapping)
    ):
        raise ValueError("task signature args/kwargs/options have the wrong types")
    task_id = (
        options.get("task_id") if isinstance(options.get("task_id"), str) else str(uuid.uuid4())
    )
    queue = options.get("queue") if isinstance(options.get("queue"), str) else "celery"
    exchange = options.get("exchange") if isinstance(options.get("exchange"), str) else ""
    routing_key = options.get("routing_key") if isinstance(options.get("routing_key"), str) else ""
    if not exchange or not routing_key:
        exchange, routing_key = "", queue
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": repr(dict(kwargs)),
        "origin": origin,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    body = [
        list(args),
        dict(kwargs),
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    properties: dict[str, Any] = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2}
    priority = options.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        properties["priority"] = priority
    return Publish(
        "task",
        exchange,
        routing_key,
        body,
        headers,
        properties,
        declare_queue=queue if not exchange else None,
    )


# -- the node -------------------------------------------------------------


class Node:
    """One reference node of the worker-to-worker protocol (sans-IO)."""

    def __init__(self, config: NodeConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = NodeConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a NodeConfig or keyword settings, not both")
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
        self.on = Callbacks()
        self.election_handlers: dict[str, TopicHandler] = {"task": self._task_topic}
        self.rejects = RejectLimiter(config.reject_log_interval)
        self.clock_rejects = RejectLimiter(config.reject_log_interval)
        self.mingle: MingleSession | None = None
        self.last_sync: SyncResult | None = None
        self.started = False
        self.stopped = False
        self.online = False
        self._next_heartbeat: float | None = None
        self._next_sweep: float | None = None
        self._sync: SyncResult | None = None
        self.started_at: float | None = None
        #: what the host measured for the request being handled (stats)
        self._process = control.ProcessInfo()
        #: methods whose error reply was logged already ([CONTROL-7])
        self._logged_methods: set[str] = set()
        self._handlers: dict[str, Callable[[dict[str, Any], float, list[Action]], Any]] = {
            "hello": self._cmd_hello,
            "clock": self._cmd_clock,
            "revoked": self._cmd_revoked,
            "ping": self._cmd_ping,
            "revoke": self._cmd_revoke,
            "terminate": self._cmd_terminate,
            "election": self._cmd_election,
            "heartbeat": self._cmd_heartbeat,
            "stats": self._cmd_stats,
            "conf": self._cmd_conf,
            "report": self._cmd_report,
            "memsample": self._cmd_memsample,
            "enable_events": self._cmd_enable_events,
            "disable_events": self._cmd_disable_events,
            "shutdown": self._cmd_shutdown,
        }
        for method, value in control.NO_TASK_METHODS.items():
            self._handlers[method] = _constant(value)
        for alias, method in METHOD_ALIASES.items():
            self._handlers[alias] = self._handlers[method]

    # -- lifecycle --------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin: broadcast ``hello`` (Mingle), or announce at once without it.

        As in Celery, ``worker-online`` and the heartbeats start only once
        the Mingle round is over, so the first event already carries the
        synced clock.
        """
        out: list[Action] = []
        self.started, self.stopped = True, False
        if self.started_at is None:
            self.started_at = now
        out.append(Log(INFO, f"node {self.name} starting (pid {self.config.pid})"))
        if self.config.gossip:
            self._next_sweep = now + self.config.sweep_interval
        if self.config.mingle:
            self._begin_mingle(now, out)
        else:
            self.clock.mark_synced(peer=False)
            self._go_online(now, out)
            if self.config.announce:  # else the host says when it is ready
                out.append(Log(INFO, "ready."))
        return out

    def reconnected(self, now: float) -> list[Action]:
        """After a connection loss: Mingle again, then re-announce."""
        out: list[Action] = [Log(INFO, "reconnected: re-announcing and syncing again")]
        self.online = False
        self._next_heartbeat = None
        if self.config.mingle:
            self._begin_mingle(now, out)
        else:
            self._go_online(now, out)
        return out

    def sync(self, now: float) -> list[Action]:
        """Begin another Mingle round while running (Celery's
        ``Mingle.sync`` called again); the node stays online, so the round
        ends without a second ``worker-online``.  A round in progress is
        left to finish."""
        out: list[Action] = []
        if self.mingle is None:
            self._begin_mingle(now, out)
        return out

    def stop(self, now: float) -> list[Action]:
        """Clean stop: ``worker-offline`` (when we were announced)."""
        out: list[Action] = []
        if self.online and self.config.gossip and self.config.announce:
            out.append(self._worker_event("worker-offline", now))
        self.online = False
        self.stopped = True
        self._next_heartbeat = None
        self.mingle = None
        out.append(Log(INFO, f"node {self.name} stopped"))
        return out

    def _begin_mingle(self, now: float, out: list[Action]) -> None:
        session = MingleSession(
            self.name, now, self.config.mingle_timeout, self.config.mingle_settle
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
        headers = pidbox_request_headers(self.clock.forward(), self.config.mingle_timeout)
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
        if self.online:  # a round of a running node (sync): already announced
            return
        self._go_online(now, out)
        if self.config.announce:  # else the host says when it is ready
            out.append(Log(INFO, "ready."))

    def _go_online(self, now: float, out: list[Action]) -> None:
        if not self.config.gossip or self.stopped:
            return
        self.online = True
        if not self.config.announce:
            return
        out.append(self._worker_event("worker-online", now))
        self._next_heartbeat = now + self.config.heartbeat

    # -- time -------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Run the timers due at ``now``: Mingle end, heartbeat, liveness
        sweep, election timeouts."""
        out: list[Action] = []
        try:
            if self.mingle is not None and self.mingle.is_over(now):
                self._finish_mingle(now, out)
            if self._next_heartbeat is not None and now >= self._next_heartbeat and self.online:
                out.append(self._worker_event("worker-heartbeat", now))
                self._next_heartbeat = max(self._next_heartbeat + self.config.heartbeat, now)
            if self._next_sweep is not None and now >= self._next_sweep:
                self._next_sweep = now + self.config.sweep_interval
                self.revoked.purge(now)
                for change in self.membership.sweep(now):
                    self._member_change(change, out)
            for id_, decision in self.elections.expire(now):
                if decision is None:
                    out.append(
                        Log(WARNING, f"election {id_!r} timed out with no requests; discarded")
                    )
                else:
                    out.append(
                        Log(
                            WARNING,
                            f"election {id_!r} timed out; deciding among {len(decision.participants)}"
                            f" requests (missing: {', '.join(map(_safe, decision.missing)) or 'none'})",
                        )
                    )
                    self._decided(decision, now, out)
        except Exception as exc:  # never let a timer fault stop the node
            out.append(Log(ERROR, f"internal error in timers: {exc!r}"))
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
            return _INVALID

    # -- pidbox -----------------------------------------------------------

    def receive_pidbox(
        self, msg: Inbound, now: float, process: control.ProcessInfo | None = None
    ) -> list[Action]:
        """A control request from this node's pidbox queue (kombu's
        ``Node.handle_message``, with the checks Celery lacks).

        ``process`` carries what the host measured (resource usage) for
        ``stats`` and ``memsample``."""
        out: list[Action] = []
        self._process = process or control.ProcessInfo()
        try:
            self._pidbox(msg, now, out)
        except Exception as exc:
            out.append(Log(ERROR, f"internal error handling a control request: {exc!r}"))
        return out

    def _pidbox(self, msg: Inbound, now: float, out: list[Action]) -> None:
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        body = self._decode(msg, "pidbox client", "control request", now, out)
        if body is _INVALID:
            return
        if not self._admit(body, now, out):
            return
        method: str = body["method"]
        arguments: dict[str, Any] = body.get("arguments") or {}  # an object: _admit
        sender = _request_sender(body)
        # [MSG-5]: every request is checked, known methods against their own
        # schema, any other against the generic request schema (which is
        # also what lets an unknown method get its error reply).
        kind = request_kind(method)
        problem = schema_problem(body, kind, _size(msg))
        if problem:
            self._reject(sender, f"control request {_safe(method, 50)}", problem, now, out)
            return
        # Celery's Pidbox.on_message forwards the clock (clients seldom have
        # a meaningful one), then kombu's Node adjusts from the header.
        self.clock.forward()
        self._receive_clock(headers.get("clock"), sender, now, out, peer=False)
        if not self._addressed_to_me(body):
            return
        expires = headers.get("expires")
        if (
            isinstance(expires, (int, float))
            and not isinstance(expires, bool)
            and expires
            and now > expires
        ):
            out.append(Log(DEBUG, f"dropped expired control request {_safe(method, 50)}"))
            return
        handler = self._handlers.get(method)
        unsupported = control.UNSUPPORTED.get(method)
        if unsupported is not None:
            reply: Any = {"error": unsupported}
            self._log_once(
                method, INFO, f"control command {method} answered with an error: {unsupported}", out
            )
        elif handler is None:
            reply = {"error": f"unknown command {_safe(method, 100)}"}
            self._log_once(method, WARNING, f"unknown control command {_safe(method, 100)}", out)
        else:
            try:
                reply = handler(arguments, now, out)
            except Exception as exc:
                out.append(Log(ERROR, f"control command {method} failed: {exc!r}"))
                reply = {"error": repr(exc)}
        self._maybe_reply(body, reply, sender, now, out)

    def admit_request(self, body: Any, now: float) -> tuple[bool, list[Action]]:
        """Whether a control request already decoded by a Celery worker's
        own pidbox may be handed to Celery ([PIDBOX-21]); a rejected one is
        logged like any rejection (rate-limited per sender)."""
        out: list[Action] = []
        return self._admit(body, now, out), out

    def _admit(self, body: Any, now: float, out: list[Action]) -> bool:
        problem = request_problem(body, self.config.names.reply_exchange)
        if problem:
            sender = _request_sender(body) if isinstance(body, dict) else "pidbox client"
            self._reject(sender, "control request", problem, now, out)
        return not problem

    def _log_once(self, method: str, level: int, text: str, out: list[Action]) -> None:
        """Log about ``method`` only the first time ([CONTROL-7]): monitors
        poll, and a line per poll would flood the log."""
        if method in self._logged_methods or len(self._logged_methods) >= MAX_LOGGED_METHODS:
            return  # a flood of invented method names stays bounded and quiet
        self._logged_methods.add(method)
        out.append(Log(level, text + " (logged once per method)"))

    def _addressed_to_me(self, body: Mapping[str, Any]) -> bool:
        destination = body.get("destination")
        if destination:
            return isinstance(destination, list) and self.name in destination
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if pattern and matcher:
            # kombu supports "glob" and "pcre"; wkctl runs no peer-supplied
            # regular expression (catastrophic backtracking), so pcre-targeted
            # requests are ignored.
            if matcher == "glob" and isinstance(pattern, str):
                return fnmatchcase(self.name, pattern)
            return False
        return True

    def _maybe_reply(
        self, body: Mapping[str, Any], reply: Any, sender: str, now: float, out: list[Action]
    ) -> None:
        reply_to, ticket = body.get("reply_to"), body.get("ticket")
        if not reply_to or not ticket:
            return
        if not isinstance(reply_to, dict) or not isinstance(ticket, str):
            self._reject(sender, "control request", "reply_to/ticket malformed", now, out)
            return
        exchange, routing_key = reply_to.get("exchange"), reply_to.get("routing_key")
        if exchange != self.config.names.reply_exchange or not isinstance(routing_key, str):
            # Replying to any exchange a peer names would let it make us
            # declare (and on RabbitMQ clash with) arbitrary exchanges.
            self._reject(
                sender,
                "control request",
                f"reply_to exchange {_safe(exchange, 100)} is not ours",
                now,
                out,
            )
            return
        out.append(
            Publish(
                "reply",
                exchange,
                routing_key,
                pidbox_reply(self.name, reply),
                pidbox_reply_headers(ticket, self.clock.forward()),
            )
        )

    # control commands (Celery's celery.worker.control, same replies)

    def _cmd_hello(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        from_node = args.get("from_node")
        if not isinstance(from_node, str) or from_node == self.name:
            return None
        out.append(Log(INFO, f"sync with {_safe(from_node)}"))
        merged = self.revoked.merge(args.get("revoked"), now)
        if merged.skipped or merged.truncated:
            out.append(
                Log(
                    WARNING,
                    f"hello from {_safe(from_node)}: skipped {merged.skipped} bad ids, truncated {merged.truncated}",
                )
            )
        return {"revoked": self.revoked.as_list(now), "clock": self.clock.forward()}

    def answer_hello(self, from_node: Any, revoked: Any, now: float) -> tuple[Any, list[Action]]:
        """Answer a ``hello`` whose arguments were decoded by the host
        (a Celery worker's pidbox): ``(reply, actions)``, the reply being
        what the control command returns ([MINGLE-4], [MINGLE-5])."""
        out: list[Action] = []
        args = {"from_node": from_node, "revoked": revoked}
        sender = from_node if isinstance(from_node, str) else "pidbox client"
        # The host routed the request (ticket, reply_to); only its arguments
        # are checked here, in a request shaped as the schema wants it.
        request = pidbox_request(
            "hello",
            args,
            reply_exchange=self.config.names.reply_exchange,
            reply_routing_key="host",
            ticket="host",
        )
        problem = schema_problem(request, "hello")
        if problem:
            # [MSG-5]: an invalid request changes nothing; the host's pidbox
            # still sends a reply, so it is null (skipped by askers).
            self._reject(sender, "control request hello", problem, now, out)
            return None, out
        reply = self._cmd_hello(args, now, out)
        return reply, out

    def _cmd_clock(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return {"clock": self.clock.value}

    def _cmd_revoked(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return self.revoked.as_list(now)

    def _cmd_ping(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return {"ok": "pong"}

    def _cmd_revoke(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        task_id = args.get("task_id")
        ids = [task_id] if isinstance(task_id, str) else task_id
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            return {"error": "task_id must be a task id or a list of task ids"}
        ids = list(dict.fromkeys(ids))[-self.revoked.maxlen :]
        self.revoked.update(ids, now)
        if args.get("terminate"):
            # A wkctl node runs no tasks, so there is nothing to terminate;
            # this is Celery's answer when none of the ids is running.
            return {"ok": "terminate: tasks unknown"}
        shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} ids)" if len(ids) > 20 else "")
        out.append(Log(INFO, f"Tasks flagged as revoked: {_safe(shown, 400)}"))
        flagged = ", ".join(repr(i) for i in ids)  # Celery prints a Python set
        return {"ok": "tasks {" + flagged + "} flagged as revoked"}

    def _cmd_election(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        id_, topic = args.get("id"), args.get("topic")
        if not isinstance(id_, str) or not isinstance(topic, str):
            return {"error": "election needs a string id and topic"}
        if not self.config.gossip:
            out.append(Log(INFO, f"election {id_!r} ignored: gossip is disabled"))
            return None
        action = args.get("action")
        alive = self.membership.alive(now)
        self.elections.start(id_, now, alive)
        ev = self._event("worker-elect", now, id=id_, topic=topic, action=action, cver=1)
        clock = ev.body["clock"]
        self.elections.record_own(
            ElectRequest(id_, clock, self.name, self.config.pid, topic, action), now, alive
        )
        out.append(ev)
        return None

    def _cmd_heartbeat(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        if self.config.gossip and self.config.announce and not self.stopped:
            out.append(self._worker_event("worker-heartbeat", now))
        return None

    def _cmd_terminate(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return self._cmd_revoke({**args, "terminate": True}, now, out)

    def facts(self, now: float) -> control.NodeFacts:
        """This node's figures for ``stats``, ``conf`` and ``report``."""
        return control.NodeFacts(
            name=self.name,
            pid=self.config.pid,
            clock=self.clock.value,
            uptime=max(0.0, now - (self.started_at if self.started_at is not None else now)),
            sw_ver=self.config.sw_ver,
            broker=self.config.broker_info,
            settings=self._settings(),
            process=self._process,
        )

    def _settings(self) -> dict[str, Any]:
        names = self.config.names
        info: dict[str, Any] = {
            "control_exchange": names.control_exchange,
            "event_exchange": names.event_exchange,
            "event_serializer": "json",
            "accept_content": ["json"],
            "worker_enable_remote_control": True,
            "worker_send_task_events": False,
            "wkctl_heartbeat": self.config.heartbeat,
            "wkctl_mingle": self.config.mingle,
            "wkctl_gossip": self.config.gossip,
        }
        info.update(self.config.settings_info)
        return info

    def _cmd_stats(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.stats(self.facts(now))

    def _cmd_conf(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.conf(self.facts(now))

    def _cmd_report(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.report(self.facts(now))

    def _cmd_memsample(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.memsample(self._process)

    def _cmd_enable_events(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.events_toggle(True)

    def _cmd_disable_events(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return control.events_toggle(False)

    def _cmd_shutdown(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        msg = args.get("msg")
        reason = msg if isinstance(msg, str) and msg else "Got shutdown from remote"
        out.append(Log(INFO, f"shutdown requested: {_safe(reason, 200)}"))
        out.append(ShutdownRequested(reason))
        return {"ok": "shutting down"}

    # -- replies (Mingle) -------------------------------------------------

    def receive_reply(self, msg: Inbound, now: float) -> list[Action]:
        """A message from this node's reply queue: a ``hello`` reply while
        Mingle collects (others, e.g. late replies, are ignored)."""
        out: list[Action] = []
        try:
            self._reply(msg, now, out)
        except Exception as exc:
            out.append(Log(ERROR, f"internal error handling a reply: {exc!r}"))
        return out

    def _reply(self, msg: Inbound, now: float, out: list[Action]) -> None:
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        session = self.mingle
        if session is None or headers.get("ticket") != session.ticket:
            return
        body = self._decode(msg, "reply", "hello reply", now, out)
        if body is _INVALID:
            return
        sender = next(iter(body), "reply") if isinstance(body, dict) and body else "reply"
        sender = sender if isinstance(sender, str) else "reply"
        if not isinstance(body, dict):
            self._reject(sender, "hello reply", "not an object", now, out)
            return
        self._receive_clock(headers.get("clock"), sender, now, out)
        problem = schema_problem(body, "hello-reply", _size(msg))
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
        try:
            self._sync_with_node(nodename, reply, now, out, result)
        except Exception as exc:
            out.append(Log(ERROR, f"mingle: sync with {_safe(nodename)} failed: {exc!r}"))
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
        out: list[Action] = []
        if not self.config.gossip:
            return out
        try:
            self._event_in(msg, now, out)
        except Exception as exc:
            out.append(Log(ERROR, f"internal error handling an event: {exc!r}"))
        return out

    def _event_in(self, msg: Inbound, now: float, out: list[Action]) -> None:
        # On fanout event exchanges (Redis) task events reach us too; like
        # Celery, skip them by routing key before reading them at all.
        if msg.routing_key.split(".", 1)[0] == "task":
            return
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        sender = headers.get("hostname")
        sender = sender if isinstance(sender, str) else "unknown sender"
        shared = msg.decoded
        if shared is not None and (
            shared.limits is self.config.limits or shared.limits == self.config.limits
        ):
            body = shared.body
            if body is _INVALID:
                self._reject(sender, "event", shared.error, now, out)
                return
        else:
            shared = None
            body = self._decode(msg, sender, "event", now, out)
        if body is _INVALID or isinstance(body, list):
            return  # a task.multi batch published with another routing key
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            self._reject(sender, "event", "not an event object", now, out)
            return
        self._worker_event_in(body, sender, now, out, _size(msg), shared)

    def on_event(
        self, event: dict[str, Any], now: float, sender: str | None = None
    ) -> list[Action]:
        """Handle one decoded event (what Celery's ``Gossip.on_message`` does
        after deserializing): validated, then elections or membership."""
        out: list[Action] = []
        if not self.config.gossip:
            return out
        try:
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                self._reject(sender or "unknown sender", "event", "not an event object", now, out)
            else:
                hostname = event.get("hostname")
                who = sender or (hostname if isinstance(hostname, str) else "unknown sender")
                self._worker_event_in(event, who, now, out)
        except Exception as exc:
            out.append(Log(ERROR, f"internal error handling an event: {exc!r}"))
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
        out: list[Action] = []
        self._cmd_election({"id": id, "topic": topic, "action": action}, now, out)
        return out

    def periodic(self, now: float) -> list[Action]:
        """Sweep the peers whose heartbeats expired now (Celery's
        ``Gossip.periodic``; :meth:`tick` also runs it every ``sweep_interval``)."""
        out: list[Action] = []
        for change in self.membership.sweep(now):
            self._member_change(change, out)
        return out

    def _worker_event_in(
        self,
        body: dict[str, Any],
        sender: str,
        now: float,
        out: list[Action],
        size: int | None = None,
        shared: Decoded | None = None,
    ) -> None:
        type_: str = body["type"]
        if not type_.startswith("worker-"):
            return
        kind = {"worker-elect": "elect", "worker-elect-ack": "elect-ack"}.get(type_, "heartbeat")
        if kind == "heartbeat" and type_ not in (
            "worker-online",
            "worker-heartbeat",
            "worker-offline",
        ):
            return  # custom worker-* events: not membership
        if shared is not None:
            problem = shared.schema_problem(kind, size)
        else:
            problem = schema_problem(body, kind, size)
        if problem:
            self._reject(sender, f"event {_safe(type_, 50)}", problem, now, out)
            return
        hostname = body.get("hostname")
        if not isinstance(hostname, str):
            self._reject(sender, f"event {_safe(type_, 50)}", "no hostname", now, out)
            return
        if hostname == self.name:
            self.clock.forward()
        else:
            self._receive_clock(body.get("clock"), hostname, now, out)
        if type_ == "worker-elect":
            if shared is not None and "action" in body:
                # The action reaches election handlers: each node its own copy.
                body = {**body, "action": copy.deepcopy(body["action"])}
            self._on_elect(body, hostname, now, out)
        elif type_ == "worker-elect-ack":
            id_ = body.get("id")
            if isinstance(id_, str):
                decision = self.elections.on_ack(id_, hostname, now, self.membership.alive(now))
                if decision is not None:
                    self._decided(decision, now, out)
        elif hostname != self.name:
            for change in self.membership.on_event(body, now):
                self._member_change(change, out)

    def _on_elect(self, body: dict[str, Any], hostname: str, now: float, out: list[Action]) -> None:
        request = ElectRequest.from_event(body)
        if request is None:
            self._reject(
                hostname,
                "event worker-elect",
                "missing or invalid id/clock/hostname/pid/topic",
                now,
                out,
            )
            return
        ack, decision = self.elections.on_request(request, now, self.membership.alive(now))
        if ack:
            out.append(self._event("worker-elect-ack", now, id=request.id))
        if decision is not None:
            self._decided(decision, now, out)

    def _decided(self, decision: Decision, now: float, out: list[Action]) -> None:
        out.append(Elected(decision))
        if not decision.won:
            out.append(
                Log(INFO, f"node {_safe(decision.winner.node_id)} elected for {decision.id!r}")
            )
            return
        out.append(Log(INFO, f"I won the election {decision.id!r}"))
        handler = self.election_handlers.get(decision.topic)
        if handler is None:
            out.append(Log(ERROR, f"Unknown election topic {_safe(decision.topic, 100)!r}"))
            return
        try:
            actions = handler(decision.action, decision)
            if actions:
                out.extend(actions)
        except Exception as exc:
            out.append(Log(ERROR, f"election handler for topic {decision.topic!r} failed: {exc!r}"))

    def _task_topic(self, action: Any, decision: Decision) -> list[Action]:
        return self.call_task(action)

    def call_task(self, action: Any) -> list[Action]:
        """The ``task`` topic's action (Celery's ``Gossip.call_task``): the
        task message to publish, or the logged reason it cannot be built."""
        try:
            message = celery_task_message(action, origin=self.name)
        except ValueError as exc:
            return [Log(ERROR, f"Could not call task: {exc}")]
        return [
            message,
            Log(INFO, f"calling task {message.headers['task']} as {message.headers['id']}"),
        ]

    def _member_change(self, change: Change, out: list[Action]) -> None:
        worker = change.worker
        text = {
            "join": f"{_safe(worker.hostname)} joined the party",
            "leave": f"{_safe(worker.hostname)} left",
            "lost": f"missed heartbeat from {_safe(worker.hostname)}",
        }[change.kind]
        out.append(Log(INFO, text))
        out.append(MemberChanged(change))
        if change.kind in ("leave", "lost"):
            for decision in self.elections.forget(worker.hostname):
                self._decided(decision, 0.0, out)
        for handler in list(self.on.for_kind(change.kind)):
            try:
                handler(worker)
            except Exception as exc:
                out.append(Log(ERROR, f"Ignored error from handler {handler!r}: {exc!r}"))

    # -- outbound helpers -------------------------------------------------

    def _event(self, type_: str, now: float, **fields: Any) -> Publish:
        body = event(
            type_,
            hostname=self.name,
            clock=self.clock.forward(),
            pid=self.config.pid,
            timestamp=now,
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
            type_, now, **heartbeat_fields(self.config.heartbeat, self.config.sw_ver)
        )

    # -- local API (in-process callers) -----------------------------------

    def alive_peers(self, now: float) -> list[WorkerInfo]:
        return [w for w in self.membership.workers.values() if w.alive(now)]

    def revoke_local(self, task_ids: Iterable[str], now: float) -> None:
        """Flag ids as revoked on this node only (tests, seeding)."""
        self.revoked.update(task_ids, now)


def _constant(value: Any) -> Callable[[dict[str, Any], float, list[Action]], Any]:
    """A handler answering a fresh copy of ``value`` (empty task lists)."""

    def handler(args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return copy.deepcopy(value)

    return handler


def _size(msg: Inbound) -> int | None:
    return len(msg.body) if msg.body is not None else None


def _request_sender(body: Mapping[str, Any]) -> str:
    """Who sent a control request, for logs: pidbox requests carry no sender,
    so use ``from_node`` (hello) or the asker's reply routing key."""
    args = body.get("arguments")
    if isinstance(args, dict) and isinstance(args.get("from_node"), str):
        return args["from_node"]
    reply_to = body.get("reply_to")
    if isinstance(reply_to, dict) and isinstance(reply_to.get("routing_key"), str):
        return f"client {reply_to['routing_key']}"
    return "pidbox client"
