"""The pidbox control channel of a node: which requests it answers, and
how (Celery's ``celery.worker.control`` commands with the same replies,
[CONTROL-1] to [CONTROL-9]).

:class:`ControlCommands` is part of one :class:`~wkctl.protocol.core.Node`
(``node.commands``); the node's :meth:`~wkctl.protocol.core.Node.receive_pidbox`
hands it every request after the lifecycle check.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from . import control
from .actions import Action, Log, Publish, ShutdownRequested
from .election import ElectRequest
from .inbound import INVALID, Inbound, body_size, schema_problem
from .vocab import METHOD_ALIASES, request_kind
from .wire import pidbox_reply, pidbox_reply_headers, pidbox_request, printable, request_problem

if TYPE_CHECKING:
    from .core import Node

__all__ = ["MAX_LOGGED_METHODS", "ControlCommands"]

INFO, WARNING, DEBUG = 20, 30, 10

#: Method names whose error reply was logged (once each, [CONTROL-8]).
MAX_LOGGED_METHODS = 1024

_safe = printable  # peer-supplied text in log lines (see wire.printable)

Handler = Callable[[dict[str, Any], float, list[Action]], Any]


class ControlCommands:
    """The control requests one node answers."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: what the host measured for the request being handled (stats)
        self._process = control.ProcessInfo()
        #: methods whose error reply was logged already ([CONTROL-7])
        self._logged_methods: set[str] = set()
        self._handlers: dict[str, Handler] = {
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

    def handle(
        self, msg: Inbound, now: float, process: control.ProcessInfo | None = None
    ) -> list[Action]:
        """A control request from this node's pidbox queue (kombu's
        ``Node.handle_message``, with the checks Celery lacks).

        ``process`` carries what the host measured (resource usage) for
        ``stats`` and ``memsample``."""
        out: list[Action] = []
        self._process = process or control.ProcessInfo()
        self._pidbox(msg, now, out)
        return out

    def _pidbox(self, msg: Inbound, now: float, out: list[Action]) -> None:
        headers = msg.headers if isinstance(msg.headers, Mapping) else {}
        body = self.node._decode(msg, "pidbox client", "control request", now, out)
        if body is INVALID:
            return
        if not self.admit(body, now, out):
            return
        method: str = body["method"]
        arguments: dict[str, Any] = body.get("arguments") or {}  # an object: admit
        sender = _request_sender(body)
        # [MSG-5]: every request is checked, known methods against their own
        # schema, any other against the generic request schema (which is
        # also what lets an unknown method get its error reply).
        kind = request_kind(method)
        problem = schema_problem(body, kind, body_size(msg))
        if problem:
            self.node._reject(sender, f"control request {_safe(method, 50)}", problem, now, out)
            return
        # Celery's Pidbox.on_message forwards the clock (clients seldom have
        # a meaningful one), then kombu's Node adjusts from the header.
        self.node.clock.forward()
        self.node._receive_clock(headers.get("clock"), sender, now, out, peer=False)
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
            reply = handler(arguments, now, out)
        self._maybe_reply(body, reply, sender, now, out)

    def admit(self, body: Any, now: float, out: list[Action]) -> bool:
        """Whether a decoded request can be run at all ([PIDBOX-21],
        :func:`wkctl.protocol.wire.request_problem`); a rejected one is
        logged like any rejection (rate-limited per sender)."""
        problem = request_problem(body, self.node.config.names.reply_exchange)
        if problem:
            sender = _request_sender(body) if isinstance(body, dict) else "pidbox client"
            self.node._reject(sender, "control request", problem, now, out)
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
            return isinstance(destination, list) and self.node.name in destination
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if pattern and matcher:
            # kombu supports "glob" and "pcre"; wkctl runs no peer-supplied
            # regular expression (catastrophic backtracking), so pcre-targeted
            # requests are ignored.
            if matcher == "glob" and isinstance(pattern, str):
                return fnmatchcase(self.node.name, pattern)
            return False
        return True

    def _maybe_reply(
        self, body: Mapping[str, Any], reply: Any, sender: str, now: float, out: list[Action]
    ) -> None:
        reply_to, ticket = body.get("reply_to"), body.get("ticket")
        if not reply_to or not ticket:
            return
        if not isinstance(reply_to, dict) or not isinstance(ticket, str):
            self.node._reject(sender, "control request", "reply_to/ticket malformed", now, out)
            return
        exchange, routing_key = reply_to.get("exchange"), reply_to.get("routing_key")
        if exchange != self.node.config.names.reply_exchange or not isinstance(routing_key, str):
            # Replying to any exchange a peer names would let it make us
            # declare (and on RabbitMQ clash with) arbitrary exchanges.
            self.node._reject(
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
                pidbox_reply(self.node.name, reply),
                pidbox_reply_headers(ticket, self.node.clock.forward()),
            )
        )

    # -- the commands (Celery's celery.worker.control, same replies) ------

    def _cmd_hello(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        from_node = args.get("from_node")
        if not isinstance(from_node, str) or from_node == self.node.name:
            return None
        out.append(Log(INFO, f"sync with {_safe(from_node)}"))
        merged = self.node.revoked.merge(args.get("revoked"), now)
        if merged.skipped or merged.truncated:
            out.append(
                Log(
                    WARNING,
                    f"hello from {_safe(from_node)}: skipped {merged.skipped} bad ids, truncated {merged.truncated}",
                )
            )
        return {"revoked": self.node.revoked.as_list(now), "clock": self.node.clock.forward()}

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
            reply_exchange=self.node.config.names.reply_exchange,
            reply_routing_key="host",
            ticket="host",
        )
        problem = schema_problem(request, "hello")
        if problem:
            # [MSG-5]: an invalid request changes nothing; the host's pidbox
            # still sends a reply, so it is null (skipped by askers).
            self.node._reject(sender, "control request hello", problem, now, out)
            return None, out
        reply = self._cmd_hello(args, now, out)
        return reply, out

    def _cmd_clock(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return {"clock": self.node.clock.value}

    def _cmd_revoked(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return self.node.revoked.as_list(now)

    def _cmd_ping(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return {"ok": "pong"}

    def _cmd_revoke(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        task_id = args.get("task_id")
        ids = [task_id] if isinstance(task_id, str) else task_id
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            return {"error": "task_id must be a task id or a list of task ids"}
        ids = list(dict.fromkeys(ids))[-self.node.revoked.maxlen :]
        self.node.revoked.update(ids, now)
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
        if not self.node.config.gossip:
            out.append(Log(INFO, f"election {id_!r} ignored: gossip is disabled"))
            return None
        action = args.get("action")
        alive = self.node.membership.alive(now)
        self.node.elections.start(id_, now, alive)
        ev = self.node._event("worker-elect", now, id=id_, topic=topic, action=action, cver=1)
        clock = ev.body["clock"]
        self.node.elections.record_own(
            ElectRequest(id_, clock, self.node.name, self.node.config.pid, topic, action),
            now,
            alive,
        )
        out.append(ev)
        return None

    def _cmd_heartbeat(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        if self.node.config.gossip and self.node.config.announce and not self.node.is_stopped:
            out.append(self.node._worker_event("worker-heartbeat", now))
        return None

    def _cmd_terminate(self, args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return self._cmd_revoke({**args, "terminate": True}, now, out)

    def facts(self, now: float) -> control.NodeFacts:
        """This node's figures for ``stats``, ``conf`` and ``report``."""
        env = self.node.env
        return control.NodeFacts(
            name=self.node.name,
            pid=self.node.config.pid,
            clock=self.node.clock.value,
            uptime=max(
                0.0, now - (self.node.started_at if self.node.started_at is not None else now)
            ),
            sw_ver=self.node.config.sw_ver,
            broker=self.node.config.broker_info,
            settings=self._settings(),
            process=self._process,
            python_version=env.python_version,
            system=env.sw_sys,
            machine=env.machine,
            implementation=env.implementation,
        )

    def _settings(self) -> dict[str, Any]:
        names = self.node.config.names
        info: dict[str, Any] = {
            "control_exchange": names.control_exchange,
            "event_exchange": names.event_exchange,
            "event_serializer": "json",
            "accept_content": ["json"],
            "worker_enable_remote_control": True,
            "worker_send_task_events": False,
            "wkctl_heartbeat": self.node.config.heartbeat,
            "wkctl_mingle": self.node.config.mingle,
            "wkctl_gossip": self.node.config.gossip,
        }
        info.update(self.node.config.settings_info)
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


def _constant(value: Any) -> Handler:
    """A handler answering a fresh copy of ``value`` (empty task lists)."""

    def handler(args: dict[str, Any], now: float, out: list[Action]) -> Any:
        return copy.deepcopy(value)

    return handler


def _request_sender(body: Mapping[str, Any]) -> str:
    """Who sent a control request, for logs: pidbox requests carry no sender,
    so use ``from_node`` (hello) or the asker's reply routing key."""
    args = body.get("arguments")
    from_node = args.get("from_node") if isinstance(args, dict) else None
    if isinstance(from_node, str):
        return from_node
    reply_to = body.get("reply_to")
    if isinstance(reply_to, dict) and isinstance(reply_to.get("routing_key"), str):
        return f"client {reply_to['routing_key']}"
    return "pidbox client"
