"""Probing primitives: raw pidbox calls and a recorder of the event stream.

The conformance kit needs more control than an operator's client: it must
send a request with a chosen ``clock`` header, a wrong destination, an
unknown method or a non-JSON content type, and it must see each reply's
headers exactly as they arrived (a missing ``ticket`` is a finding, not a
reason to drop the reply).  So every call here gets a reply queue of its
own: whatever arrives on it is the node's answer to that request, whatever
its headers say, and nothing is filtered before a check has looked at it.

Bodies are decoded as JSON only (:func:`wkctl.protocol.wire.decode_body`);
a reply of any other content type is recorded with the reason it was
refused, never deserialized.

Events are recorded for the whole run by a thread with a connection of its
own (kombu connections are not thread-safe), so that heartbeats keep being
collected while the pidbox checks run on the main thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection, Consumer, Producer

from wkctl.protocol.broker import (
    BrokerSettings,
    event_exchange,
    event_queue,
    pidbox_exchange,
    pidbox_queue,
    reply_exchange,
    reply_queue,
    task_queue,
)
from wkctl.protocol.host import local_event as event
from wkctl.protocol.wire import (
    Rejected,
    decode_body,
    event_routing_key,
    pidbox_request,
)

__all__ = ["CallResult", "EventRecorder", "Probe", "RecordedEvent", "Reply", "UNSET"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: Marks "use the default" where ``None`` is a meaningful value (a
#: ``destination`` of ``None`` means broadcast).
UNSET: Any = _Unset()


@dataclass
class Reply:
    """One message that arrived on a call's reply queue."""

    headers: dict[str, Any]
    content_type: str | None
    #: the decoded JSON body, or ``None`` when it was refused (see ``refused``)
    body: Any
    refused: str | None
    #: seconds from publishing the request to the arrival of this reply
    after: float


@dataclass
class CallResult:
    """A request as sent and every reply to it."""

    method: str
    ticket: str | None
    #: the ``clock`` header the request carried
    clock: Any
    body: Any
    replies: list[Reply] = field(default_factory=list)
    waited: float = 0.0
    #: with ``fence``: whether the node answered the ping sent after the request
    fenced: bool | None = None

    def reply_from(self, node: str) -> Reply | None:
        """The first decoded reply whose body names ``node``."""
        for reply in self.replies:
            if isinstance(reply.body, dict) and node in reply.body:
                return reply
        return None

    def value_from(self, node: str, default: Any = None) -> Any:
        reply = self.reply_from(node)
        return default if reply is None else reply.body[node]


@dataclass
class RecordedEvent:
    """One event off the event exchange (batches expanded)."""

    at: float
    routing_key: str
    headers: dict[str, Any]
    content_type: str | None
    body: Any
    refused: str | None = None

    @property
    def type(self) -> str | None:
        return self.body.get("type") if isinstance(self.body, dict) else None

    @property
    def hostname(self) -> str | None:
        return self.body.get("hostname") if isinstance(self.body, dict) else None


class EventRecorder:
    """Records every event published while the run lasts, on its own thread."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.events: list[RecordedEvent] = []
        self.error: str | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conform-events", daemon=True)
        self._conn: Connection | None = None

    def start(self, timeout: float) -> None:
        """Start consuming; returns once the queue is bound (or raises)."""
        self._thread.start()
        if not self._ready.wait(timeout + self.settings.connect_timeout):
            self.error = self.error or "event queue not ready in time"
        if self.error:
            raise ConnectionError(self.error)

    def _run(self) -> None:
        names = self.settings.names
        try:
            conn = self._conn = self.settings.connection()
            conn.ensure_connection(max_retries=1 + self.settings.failover_retries)
            channel = conn.channel()
            queue = event_queue(names, self.settings.transport, "conform." + uuid.uuid4().hex)
            consumer = Consumer(
                channel, [queue], no_ack=True, on_message=self._on_message, accept=["json"]
            )
            consumer.consume()
        except Exception as exc:  # reported by start(); the run fails cleanly
            self.error = f"cannot consume events: {str(exc).strip() or type(exc).__name__}"
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    conn.drain_events(timeout=0.05)
                except TimeoutError:
                    continue
        except Exception as exc:
            if not self._stop.is_set():
                self.error = f"event stream lost: {str(exc).strip() or type(exc).__name__}"
        finally:
            try:
                conn.release()
            except Exception:
                pass

    def _on_message(self, message: Any) -> None:
        now = time.monotonic()
        headers = dict(message.headers or {})
        routing_key = (message.delivery_info or {}).get("routing_key") or ""
        try:
            body = decode_body(message.body, message.content_type, message.content_encoding)
        except Rejected as exc:
            item = RecordedEvent(now, routing_key, headers, message.content_type, None, str(exc))
            items = [item]
        else:
            bodies = body if isinstance(body, list) else [body]
            items = [
                RecordedEvent(now, routing_key, headers, message.content_type, b) for b in bodies
            ]
        with self._cond:
            self.events.extend(items)
            self._cond.notify_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def snapshot(self) -> list[RecordedEvent]:
        with self._cond:
            return list(self.events)

    def wait_for(
        self, predicate: Callable[[list[RecordedEvent]], Any], timeout: float
    ) -> tuple[Any, list[RecordedEvent]]:
        """Wait until ``predicate(events)`` is truthy; returns (its value, events)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                value = predicate(self.events)
                if value:
                    return value, list(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.error:
                    return value, list(self.events)
                self._cond.wait(min(remaining, 0.1))


class Probe:
    """Talks to one node over the broker, as raw as the checks need."""

    def __init__(self, settings: BrokerSettings, node: str, *, timeout: float = 1.0) -> None:
        self.settings = settings
        self.names = settings.names
        self.node = node
        self.timeout = timeout
        #: our own Lamport clock: raised past every clock we see
        self.clock = 0
        #: the synthetic peer the probe impersonates on the event exchange
        self.peer = f"wkctl-conform-{uuid.uuid4().hex[:8]}@probe"
        self.peer_pid = 4_000_000 + (uuid.uuid4().int % 100_000)
        self._pidbox = pidbox_exchange(self.names)
        self._reply = reply_exchange(self.names)
        self._events = event_exchange(self.names, settings.transport)
        self.conn: Connection = settings.connection()
        self.conn.ensure_connection(
            max_retries=1 + settings.failover_retries, timeout=settings.connect_timeout
        )
        self.channel = self.conn.channel()
        self.producer = Producer(self.channel, auto_declare=False)
        self._pidbox(self.channel).declare()
        self._reply(self.channel).declare()
        self._events(self.channel).declare()
        # One reply queue for the whole run, consumed from start to end; each
        # call binds it with a routing key of its own and tells its replies
        # by that key.  (Redis blocks on the queues being consumed for up to
        # a second: a queue per call would cost that on every call.)
        #: every reply received during the run, in arrival order
        self.log: list[Reply] = []
        #: the node's own ``hello`` requests, when the probe answers them
        self.hellos: list[dict[str, Any]] = []
        self._hello_consumer: Consumer | None = None
        self._task_queues: dict[str, tuple[Any, Any, Consumer]] = {}
        self._oid = str(uuid.uuid4())
        self._inbox: dict[str, tuple[CallResult, float]] = {}
        self._replies = reply_queue(self.names, self._oid)(self.channel)
        self._replies.declare()
        self._consumer = Consumer(
            self.channel,
            [self._replies],
            no_ack=True,
            on_message=self._on_reply,
            accept=["json"],
        )
        self._consumer.consume()

    def answer_hellos(self, replies: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
        r"""Consume the pidbox as the synthetic peer and answer ``hello``\ s.

        Used when the probe launches the node itself: the node's Mingle
        ``hello`` at start is recorded in :attr:`hellos` (body, headers,
        routing key, content type), and ``replies(request)`` gives the
        reply bodies to publish to its ``reply_to``, each ``{name: value}``.
        """
        queue = pidbox_queue(self.names, self.peer, exclusive=False)(self.channel)
        queue.declare()

        def on_request(message: Any) -> None:
            try:
                body = decode_body(message.body, message.content_type, message.content_encoding)
            except Rejected:
                return
            if not isinstance(body, dict) or body.get("method") != "hello":
                return
            destination = body.get("destination")
            if destination and self.peer not in destination:
                return  # not addressed to the synthetic peer
            arguments = body.get("arguments")
            if not isinstance(arguments, dict) or arguments.get("from_node") != self.node:
                return
            self.hellos.append(
                {
                    "body": body,
                    "headers": dict(message.headers or {}),
                    "routing_key": (message.delivery_info or {}).get("routing_key"),
                    "content_type": message.content_type,
                    "at": time.monotonic(),
                }
            )
            reply_to = body.get("reply_to")
            if not isinstance(reply_to, dict) or not isinstance(body.get("ticket"), str):
                return
            for reply in replies(body):
                self.producer.publish(
                    reply,
                    exchange=self._reply.name,
                    routing_key=reply_to.get("routing_key"),
                    headers={"ticket": body["ticket"], "clock": self.next_clock()},
                    serializer="json",
                    retry=True,
                )

        self._hello_consumer = Consumer(
            self.channel, [queue], no_ack=True, on_message=on_request, accept=["json"]
        )
        self._hello_consumer.consume()

    def watch_task_queue(self, name: str) -> list[dict[str, Any]]:
        """Declare a task queue as Celery routes ``options.queue`` (direct
        exchange and routing key of the same name) and record what lands in
        it: the task messages an election winner publishes.  Nothing ever
        runs them; :meth:`drop_task_queue` deletes the queue."""
        queue = task_queue(name)(self.channel)
        queue.declare()
        landed: list[dict[str, Any]] = []

        def on_task(message: Any) -> None:
            landed.append({"headers": dict(message.headers or {}), "at": time.monotonic()})

        consumer = Consumer(self.channel, [queue], no_ack=True, on_message=on_task)
        consumer.consume()
        self._task_queues[name] = (queue, queue.exchange, consumer)
        return landed

    def drop_task_queue(self, name: str) -> None:
        entry = self._task_queues.pop(name, None)
        if entry is None:
            return
        queue, exchange, consumer = entry
        for closer in (consumer.cancel, queue.delete, lambda: exchange(self.channel).delete()):
            try:
                closer()
            except Exception:
                pass

    def pump(self, seconds: float) -> None:
        """Handle whatever arrives for ``seconds`` (answers hellos meanwhile)."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self.conn.drain_events(timeout=min(remaining, 0.1))
            except TimeoutError:
                continue

    def close(self) -> None:
        for name in list(self._task_queues):
            self.drop_task_queue(name)
        if self._hello_consumer is not None:
            try:
                self._hello_consumer.cancel()
            except Exception:
                pass
        for closer in (
            self._consumer.cancel,
            self._replies.delete,
            self.channel.close,
            self.conn.release,
        ):
            try:
                closer()
            except Exception:
                pass

    # -- clocks -------------------------------------------------------------

    def see_clock(self, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value > self.clock:
            self.clock = value

    def next_clock(self) -> int:
        self.clock += 1
        return self.clock

    # -- pidbox ---------------------------------------------------------------

    def _on_reply(self, message: Any) -> None:
        routing_key = (message.delivery_info or {}).get("routing_key")
        target = self._inbox.get(routing_key) if isinstance(routing_key, str) else None
        if target is None:
            return  # a late reply to an earlier call
        result, start = target
        headers = dict(message.headers or {})
        self.see_clock(headers.get("clock"))
        try:
            decoded = decode_body(message.body, message.content_type, message.content_encoding)
            refused = None
        except Rejected as exc:
            decoded, refused = None, str(exc)
        result.replies.append(
            Reply(headers, message.content_type, decoded, refused, time.monotonic() - start)
        )
        self.log.append(result.replies[-1])

    def _route(self, result: CallResult, start: float) -> str:
        """A fresh routing key to the run's reply queue, for one call."""
        key = str(uuid.uuid4())
        self._replies.bind_to(self._reply, routing_key=key)
        self._inbox[key] = (result, start)
        return key

    def _publish_request(
        self,
        body: Any,
        *,
        clock: Any,
        expires: Any,
        content_type: str,
        raw: Callable[[dict[str, Any]], bytes] | None,
    ) -> None:
        headers = {"clock": clock, "expires": expires}
        if raw is not None:
            self.producer.publish(
                raw(body),
                exchange=self._pidbox.name,
                routing_key="",
                headers=headers,
                content_type=content_type,
                content_encoding="binary",
                retry=True,
            )
        else:
            self.producer.publish(
                body,
                exchange=self._pidbox.name,
                routing_key="",
                headers=headers,
                serializer="json",
                retry=True,
            )

    def call(
        self,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        destination: Sequence[str] | None = UNSET,
        clock: Any = UNSET,
        expires: Any = UNSET,
        timeout: float | None = None,
        until: Callable[[CallResult], bool] | None = None,
        content_type: str = "application/json",
        raw: Callable[[dict[str, Any]], bytes] | None = None,
        fence: bool = False,
        pattern: str | None = None,
        matcher: str | None = None,
        extra: Mapping[str, Any] | None = None,
        legacy: bool = False,
    ) -> CallResult:
        """Send one request wanting a reply and collect what comes back.

        Returns as soon as ``until(result)`` holds (default: the node
        replied), or after ``timeout`` seconds.  With ``fence``, a ``ping``
        addressed to the node follows the request, and collection ends once
        the node answered the ping: a node handles its pidbox queue in
        order, so a reply to the request would have come first.  That makes
        "the node did not reply" fast to establish.  ``raw`` encodes the
        body itself (with ``content_type``), to send what a JSON client
        never would.  ``pattern``/``matcher`` address by pattern, ``extra``
        adds body members, ``legacy`` leaves ``pattern``/``matcher`` out (as
        kombu before 4.5 did).
        """
        timeout = self.timeout if timeout is None else timeout
        if destination is UNSET:
            destination = [self.node]
        start = time.monotonic()
        ticket = str(uuid.uuid4())
        sent_clock = self.next_clock() if clock is UNSET else clock
        result = CallResult(method, ticket, sent_clock, None)
        key = self._route(result, start)
        result.body = pidbox_request(
            method,
            arguments,
            destination=destination,
            reply_exchange=self._reply.name,
            reply_routing_key=key,
            ticket=ticket,
            pattern=pattern,
            matcher=matcher,
        )
        if legacy:
            result.body.pop("pattern", None)
            result.body.pop("matcher", None)
        if extra:
            result.body.update(extra)
        fence_result: CallResult | None = None
        fence_key = None
        if fence:
            fence_result = CallResult("ping", str(uuid.uuid4()), None, None)
            fence_key = self._route(fence_result, start)

        def done() -> bool:
            if fence_result is not None:
                return fence_result.reply_from(self.node) is not None
            if until is not None:
                return until(result)
            return bool(result.replies)

        try:
            self._publish_request(
                result.body,
                clock=sent_clock,
                expires=(time.time() + timeout + 5.0) if expires is UNSET else expires,
                content_type=content_type,
                raw=raw,
            )
            if fence_result is not None:
                fence_body = pidbox_request(
                    "ping",
                    {},
                    destination=[self.node],
                    reply_exchange=self._reply.name,
                    reply_routing_key=fence_key,
                    ticket=fence_result.ticket,
                )
                self._publish_request(
                    fence_body,
                    clock=self.next_clock(),
                    expires=time.time() + timeout + 5.0,
                    content_type="application/json",
                    raw=None,
                )
            deadline = start + timeout
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self.conn.drain_events(timeout=min(remaining, 0.25))
                except TimeoutError:
                    continue
            if fence_result is not None and done():
                # Let anything already delivered behind the fence reply land.
                try:
                    self.conn.drain_events(timeout=0.02)
                except TimeoutError:
                    pass
        finally:
            result.waited = time.monotonic() - start
            self._inbox.pop(key, None)
            if fence_key is not None:
                self._inbox.pop(fence_key, None)
        if fence_result is not None:
            result.fenced = fence_result.reply_from(self.node) is not None
        return result

    def cast(
        self,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        destination: Sequence[str] | None = UNSET,
    ) -> None:
        """A request without ``reply_to``/``ticket`` (``revoke``, ``election``, ``heartbeat``)."""
        if destination is UNSET:
            destination = [self.node]
        self._publish_request(
            pidbox_request(method, arguments, destination=destination),
            clock=self.next_clock(),
            expires=time.time() + self.timeout + 5.0,
            content_type="application/json",
            raw=None,
        )

    # -- the synthetic peer ---------------------------------------------------

    def peer_event(
        self,
        type_: str,
        *,
        clock: Any = UNSET,
        overrides: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Publish one event as the synthetic peer; returns its body.

        ``clock`` defaults to the probe's next clock (``None`` sends a blind
        event); ``overrides`` replace common fields after they are built.
        """
        body = event(
            type_,
            hostname=self.peer,
            clock=self.next_clock() if clock is UNSET else clock,
            pid=self.peer_pid,
            **fields,
        )
        if overrides:
            body.update(overrides)
        self.producer.publish(
            body,
            exchange=self._events.name,
            routing_key=event_routing_key(type_),
            headers={"hostname": self.peer},
            serializer="json",
            retry=True,
        )
        return body

    def peer_heartbeat(
        self, type_: str = "worker-heartbeat", *, clock: Any = UNSET, **overrides: Any
    ) -> dict[str, Any]:
        """A heartbeat of the synthetic peer, as complete as Celery's.

        Only the checks of malformed input pass ``overrides`` that break
        it, and never where a Celery worker would receive it: one malformed
        heartbeat kills every Celery worker on the broker.
        """
        return self.peer_event(
            type_,
            clock=clock,
            overrides=overrides,
            freq=2.0,
            sw_ident="wkctl-conform",
            sw_ver="1",
            sw_sys="Linux",
            active=0,
            processed=0,
            loadavg=[0.0, 0.0, 0.0],
        )
