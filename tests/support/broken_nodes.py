"""Small kombu-based nodes for the conformance kit's own tests.

:class:`ProbeTarget` is a from-scratch implementation of the node side of
the protocol, written the way a third party would write one: its own
pidbox queue and event queue, raw JSON decoding, a bounded Lamport clock.
With ``breaks=None`` it follows the spec and passes every check of
``wkctl conform --strict``; with ``breaks=<rule>`` it breaks exactly that
one rule (see :data:`BREAKS`), so a test can assert that the kit fails
exactly the checks for that rule and says why.

Each node runs on a thread of its own with its own connection.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from fnmatch import fnmatchcase
from typing import Any

from kombu import Connection, Consumer, Producer, Queue

from wkctl.protocol.broker import event_exchange, pidbox_exchange, transport_of
from wkctl.protocol.clock import LamportClock
from wkctl.protocol.host import local_event as event
from wkctl.protocol.host import new_id
from wkctl.protocol.node import celery_task_message
from wkctl.protocol.validation import is_valid
from wkctl.protocol.wire import (
    Names,
    Rejected,
    decode_body,
    event_routing_key,
    pidbox_reply,
)

#: rule broken -> what the node does wrong
BREAKS: dict[str, str] = {
    "clock-type": "sends its reply clock header as a string",
    "no-ticket": "replies without the ticket header",
    "no-acks": "never sends worker-elect-ack",
    "ignores-revoke": "does nothing on revoke",
    "other-destinations": "answers requests addressed to other nodes",
    "no-heartbeats": "sends no heartbeat at all",
    "stale-clock": "never adjusts its clock from received clocks",
    "drops-hello-revoked": "does not merge the revoked ids of a hello",
    "list-form-only": "merges hello revoked ids only in the list form",
    "hello-no-revoked": "answers hello with an empty revoked list",
    "no-elect": "does not stand on the election command",
    "no-expiry": "runs requests whose expires header has passed",
    "freq-lie": "advertises a heartbeat freq four times shorter than its real one (run it with freq >= 2)",
    "acks-twice": "acknowledges a repeated worker-elect again",
    "garbage": "answers every request with a body that is not JSON",
    "silent": "consumes requests and never answers",
    "stats-no-pool": "answers stats without pool (what breaks the Prometheus exporter)",
    "conf-secret": "answers conf with its broker URL, password included",
    "tasks-error": "answers the task lists with an error, as it runs no tasks",
}


#: Request methods with a schema of their own: invalid ones are dropped (spec MSG-5).
_SCHEMA_METHODS = frozenset({"hello", "clock", "revoked", "ping", "revoke", "election"})
#: Celery's alias names of the control vocabulary (spec section 16).
_ALIASES = {
    "dump_active": "active",
    "dump_conf": "conf",
    "dump_reserved": "reserved",
    "dump_revoked": "revoked",
    "dump_schedule": "scheduled",
    "dump_tasks": "registered",
}


class ProbeTarget:
    """One node; ``start()`` returns once it consumes, ``stop()`` says goodbye."""

    def __init__(
        self,
        url: str,
        name: str | None = None,
        *,
        breaks: str | None = None,
        freq: float = 0.5,
        names: Names | None = None,
    ) -> None:
        if breaks is not None and breaks not in BREAKS:
            raise ValueError(f"unknown rule to break: {breaks}")
        self.url = url
        self.name = name or f"target-{uuid.uuid4().hex[:6]}@wkctl-test"
        self.breaks = breaks
        self.freq = freq
        self.names = names or Names()
        self.transport = transport_of(url)
        self.clock = LamportClock(synced=True)
        self.revoked: dict[str, None] = {}
        self.acked: set[tuple[str, str]] = set()
        #: hostname -> local time of its last heartbeat
        self.peers: dict[str, float] = {}
        #: election id -> {"expected", "requests": {host: (clock, host.pid, topic, action)}, "ackers"}
        self.elections: dict[str, dict[str, Any]] = {}
        #: election ids this node won and ran
        self.won: list[str] = []
        self.errors: list[str] = []
        self.pid = os.getpid()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"target-{self.name}", daemon=True)
        self._producer: Producer | None = None

    # -- life cycle -----------------------------------------------------------

    def start(self, timeout: float = 10.0) -> ProbeTarget:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self.name} did not start: {self.errors}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def __enter__(self) -> ProbeTarget:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        conn = Connection(self.url)
        try:
            conn.ensure_connection(max_retries=3)
            channel = conn.channel()
            self._producer = Producer(channel, auto_declare=False)
            pidbox = Queue(
                self.names.node_queue(self.name),
                exchange=pidbox_exchange(self.names),
                routing_key="",
                durable=False,
                auto_delete=True,
                expires=self.names.control_queue_expires,
                message_ttl=self.names.control_queue_ttl,
            )
            events = Queue(
                self.names.event_queue(uuid.uuid4().hex),
                exchange=event_exchange(self.names, self.transport),
                routing_key="worker.#",
                durable=False,
                exclusive=True,
                auto_delete=True,
                message_ttl=self.freq * 2,
                expires=self.names.event_queue_expires,
            )
            consumers = [
                Consumer(channel, [pidbox], no_ack=True, on_message=self._on_pidbox),
                Consumer(channel, [events], no_ack=True, on_message=self._on_event),
            ]
            for consumer in consumers:
                consumer.consume()
            self._heartbeat("worker-online")
            self._ready.set()
            next_beat = time.monotonic() + self._real_freq
            while not self._stop.is_set():
                try:
                    conn.drain_events(timeout=0.02)
                except TimeoutError:
                    pass
                if time.monotonic() >= next_beat:
                    self._heartbeat("worker-heartbeat")
                    next_beat += self._real_freq
            self._heartbeat("worker-offline")
        except Exception as exc:  # the test sees it in .errors
            self.errors.append(repr(exc))
            self._ready.set()
        finally:
            try:
                conn.release()
            except Exception:
                pass

    # -- sending --------------------------------------------------------------

    @property
    def _real_freq(self) -> float:
        return self.freq

    def _publish_event(self, type_: str, **fields: Any) -> None:
        assert self._producer is not None
        body = event(type_, hostname=self.name, clock=self.clock.forward(), pid=self.pid, **fields)
        self._producer.publish(
            body,
            exchange=self.names.event_exchange,
            routing_key=event_routing_key(type_),
            headers={"hostname": self.name},
            serializer="json",
        )

    def _heartbeat(self, type_: str) -> None:
        if self.breaks == "no-heartbeats":
            return
        advertised = self.freq / 4 if self.breaks == "freq-lie" else self.freq
        self._publish_event(
            type_,
            freq=advertised,
            sw_ident="probe-target",
            sw_ver="1.0",
            sw_sys="Linux",
            active=0,
            processed=0,
            loadavg=[0.0, 0.0, 0.0],
        )

    def _reply(self, request: dict[str, Any], value: Any) -> None:
        reply_to, ticket = request.get("reply_to"), request.get("ticket")
        if not isinstance(reply_to, dict) or not isinstance(ticket, str):
            return
        assert self._producer is not None
        clock = self.clock.forward()
        headers: dict[str, Any] = {"ticket": ticket, "clock": clock}
        if self.breaks == "no-ticket":
            del headers["ticket"]
        if self.breaks == "clock-type":
            headers["clock"] = str(clock)
        if self.breaks == "garbage":
            self._producer.publish(
                "garbage, not JSON",
                exchange=reply_to.get("exchange"),
                routing_key=reply_to.get("routing_key"),
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
            )
            return
        self._producer.publish(
            pidbox_reply(self.name, value),
            exchange=reply_to.get("exchange"),
            routing_key=reply_to.get("routing_key"),
            headers=headers,
            serializer="json",
        )

    # -- receiving ------------------------------------------------------------

    def _decode(self, message: Any) -> Any:
        try:
            return decode_body(message.body, message.content_type, message.content_encoding)
        except Rejected as exc:
            self.errors.append(f"dropped: {exc}")
            return None

    def _receive_clock(self, value: Any) -> None:
        if self.breaks == "stale-clock" or value is None:
            self.clock.forward()
        else:
            self.clock.receive(value)

    def _addressed(self, body: dict[str, Any]) -> bool:
        if self.breaks == "other-destinations":
            return True
        destination = body.get("destination")
        if destination:
            return isinstance(destination, list) and self.name in destination
        pattern, matcher = body.get("pattern"), body.get("matcher")
        if pattern:
            return matcher in (None, "glob") and fnmatchcase(self.name, str(pattern))
        return True

    def _on_pidbox(self, message: Any) -> None:
        body = self._decode(message)
        if not isinstance(body, dict) or not isinstance(body.get("method"), str):
            return
        headers = message.headers or {}
        self.clock.forward()
        self._receive_clock(headers.get("clock"))
        if not self._addressed(body):
            return
        expires = headers.get("expires")
        if (
            self.breaks != "no-expiry"
            and isinstance(expires, (int, float))
            and expires
            and time.time() > expires
        ):
            return
        if self.breaks == "silent":
            return
        method = body["method"]
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict):
            return
        if method in _SCHEMA_METHODS and not is_valid(body, method):
            self.errors.append(f"dropped: {method} request invalid against its schema")
            return
        method = _ALIASES.get(method, method)
        assert method is not None  # a request without one returned above
        handler = getattr(self, "cmd_" + method.replace("-", "_"), None)
        value = handler(arguments) if handler else {"error": f"unknown command {method}"}
        self._reply(body, value)

    def _on_event(self, message: Any) -> None:
        routing_key = (message.delivery_info or {}).get("routing_key") or ""
        if routing_key.startswith("task."):
            return
        body = self._decode(message)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            return
        type_ = body["type"]
        if not type_.startswith("worker-"):
            return
        kind = {"worker-elect": "elect", "worker-elect-ack": "elect-ack"}.get(type_, "heartbeat")
        if type_ in ("worker-online", "worker-heartbeat", "worker-offline", "worker-elect"):
            if not is_valid(body, kind):
                return  # malformed: dropped, not fatal
        if body.get("hostname") == self.name:
            self.clock.forward()
        else:
            self._receive_clock(body.get("clock"))
        hostname = str(body.get("hostname"))
        if type_ in ("worker-online", "worker-heartbeat") and hostname != self.name:
            self.peers[hostname] = time.monotonic()
        elif type_ == "worker-offline":
            self.peers.pop(hostname, None)
        elif type_ == "worker-elect":
            election = self._election(str(body["id"]))
            election["requests"].setdefault(
                hostname,
                (
                    body.get("clock"),
                    f"{hostname}.{body.get('pid')}",
                    body.get("topic"),
                    body.get("action"),
                ),
            )
            key = (str(body.get("id")), hostname)
            if self.breaks != "no-acks" and (key not in self.acked or self.breaks == "acks-twice"):
                self.acked.add(key)
                self._publish_event("worker-elect-ack", id=body["id"])
            self._decide(str(body["id"]))
        elif type_ == "worker-elect-ack" and isinstance(body.get("id"), str):
            self._election(body["id"])["ackers"].add(hostname)
            self._decide(body["id"])

    def _election(self, id_: str) -> dict[str, Any]:
        """An election's state; participants fixed when it starts here."""
        if id_ not in self.elections:
            now = time.monotonic()
            alive = {h for h, seen in self.peers.items() if now - seen < 4 * self.freq + 2}
            self.elections[id_] = {
                "expected": alive | {self.name},
                "requests": {},
                "ackers": set(),
                "done": False,
            }
        return self.elections[id_]

    def _decide(self, id_: str) -> None:
        election = self.elections[id_]
        if election["done"]:
            return
        expected = election["expected"]
        if not (expected <= election["requests"].keys() and expected <= election["ackers"]):
            return
        election["done"] = True
        clock, ident, topic, action = min(election["requests"].values(), key=lambda r: (r[0], r[1]))
        if ident != f"{self.name}.{self.pid}" or topic != "task":
            return
        self.won.append(id_)
        message = celery_task_message(action, origin=self.name, new_id=new_id)
        assert self._producer is not None
        if message.declare_queue:
            from kombu import Exchange

            q = message.declare_queue
            Queue(q, Exchange(q, type="direct"), routing_key=q)(self._producer.channel).declare()
        self._producer.publish(
            message.body,
            exchange=message.exchange,
            routing_key=message.routing_key,
            headers=message.headers,
            serializer="json",
            **message.properties,
        )

    # -- commands -------------------------------------------------------------

    def _merge(self, revoked: Any) -> None:
        if self.breaks == "drops-hello-revoked":
            return
        if isinstance(revoked, list):
            ids = [i for i in revoked if isinstance(i, str)]
        elif isinstance(revoked, dict) and self.breaks != "list-form-only":
            ids = [
                key
                for key, entry in revoked.items()
                if isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], (int, float))
            ]
        else:
            ids = []
        for task_id in ids:
            self.revoked[task_id] = None

    def cmd_ping(self, args: dict[str, Any]) -> Any:
        return {"ok": "pong"}

    def cmd_clock(self, args: dict[str, Any]) -> Any:
        return {"clock": self.clock.value}

    def cmd_revoked(self, args: dict[str, Any]) -> Any:
        return list(self.revoked)

    def cmd_hello(self, args: dict[str, Any]) -> Any:
        if args.get("from_node") == self.name:
            return None
        self._merge(args.get("revoked"))
        revoked = [] if self.breaks == "hello-no-revoked" else list(self.revoked)
        return {"clock": self.clock.forward(), "revoked": revoked}

    def cmd_revoke(self, args: dict[str, Any]) -> Any:
        task_id = args.get("task_id")
        ids = [task_id] if isinstance(task_id, str) else task_id
        if not isinstance(ids, list):
            return {"error": "task_id must be an id or a list of ids"}
        if self.breaks != "ignores-revoke":
            for i in ids:
                if isinstance(i, str):
                    self.revoked[i] = None
        return {"ok": "revoked"}

    def cmd_election(self, args: dict[str, Any]) -> Any:
        if self.breaks != "no-elect":
            self._publish_event(
                "worker-elect",
                id=args.get("id"),
                topic=args.get("topic"),
                action=args.get("action"),
                cver=1,
            )
        return None

    def cmd_heartbeat(self, args: dict[str, Any]) -> Any:
        self._heartbeat("worker-heartbeat")
        return None

    # The control vocabulary monitors poll (spec section 16), for a node
    # that runs no tasks.

    def cmd_stats(self, args: dict[str, Any]) -> Any:
        stats: dict[str, Any] = {
            "total": {},
            "pid": self.pid,
            "clock": str(self.clock.value),
            "uptime": 1,
            "pool": {"processes": []},
            "broker": {"transport": self.transport},
            "prefetch_count": 0,
            "rusage": "N/A",
        }
        if self.breaks == "stats-no-pool":
            del stats["pool"]
        return stats

    def cmd_conf(self, args: dict[str, Any]) -> Any:
        url = (
            "amqp://guest:guest@localhost//"
            if self.breaks == "conf-secret"
            else "amqp://guest:**@localhost//"
        )
        return {"broker_url": url, "control_exchange": self.names.control_exchange}

    def cmd_report(self, args: dict[str, Any]) -> Any:
        return {"ok": f"target {self.name}"}

    def _no_tasks(self, value: Any) -> Any:
        return {"error": "no tasks here"} if self.breaks == "tasks-error" else value

    def cmd_active(self, args: dict[str, Any]) -> Any:
        return self._no_tasks([])

    def cmd_reserved(self, args: dict[str, Any]) -> Any:
        return self._no_tasks([])

    def cmd_scheduled(self, args: dict[str, Any]) -> Any:
        return self._no_tasks([])

    def cmd_registered(self, args: dict[str, Any]) -> Any:
        return self._no_tasks([])

    def cmd_active_queues(self, args: dict[str, Any]) -> Any:
        return self._no_tasks([])

    def cmd_query_task(self, args: dict[str, Any]) -> Any:
        return self._no_tasks({})

    def cmd_memsample(self, args: dict[str, Any]) -> Any:
        return None

    def cmd_enable_events(self, args: dict[str, Any]) -> Any:
        return {"ok": "no task events here"}

    def cmd_rate_limit(self, args: dict[str, Any]) -> Any:
        return {"error": "unknown task"}

    def cmd_time_limit(self, args: dict[str, Any]) -> Any:
        return {"error": "unknown task"}
