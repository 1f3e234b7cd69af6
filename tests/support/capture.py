"""Record real protocol traffic off a broker, the way a third party would see it.

:class:`Capture` binds its own queues to the control exchange
(``celery.pidbox``, fanout), the reply exchange (``reply.celery.pidbox``,
direct; one binding per reply routing key it is told about or sees in a
request) and the event exchange (``celeryev``: topic ``#`` on RabbitMQ,
fanout on Redis) and records every message as a capture record::

    {"kind": "pidbox-request:hello" | "pidbox-reply:hello" | "event:worker-heartbeat"
             | "event-batch",
     "transport": "amqp" | "redis", "exchange": ..., "routing_key": ...,
     "headers": {...}, "content_type": ..., "body": <decoded JSON>}

Only JSON is decoded: a body of any other content type is recorded with
``"body": null`` and its content type, never deserialized.  Consuming runs
on two threads with connections of their own (broadcasts; replies), so the
test drives Celery from the main thread while the capture listens.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kombu import Connection, Consumer, Exchange, Queue


def exchanges(
    transport: str, control_exchange: str = "celery", event_exchange: str = "celeryev"
) -> tuple[Exchange, Exchange, Exchange]:
    """The three exchanges declared exactly as kombu's Mailbox and Celery declare them.

    The attributes must match (durable, type) or RabbitMQ refuses the
    redeclaration; the event exchange is a fanout on Redis (Celery's
    ``get_exchange``), a topic elsewhere.
    """
    pidbox = Exchange(
        f"{control_exchange}.pidbox", type="fanout", durable=False, delivery_mode="transient"
    )
    reply = Exchange(
        f"reply.{control_exchange}.pidbox",
        type="direct",
        durable=False,
        delivery_mode="transient",
    )
    events = Exchange(event_exchange, type="fanout" if transport == "redis" else "topic")
    return pidbox, reply, events


class Capture:
    """Records pidbox requests, pidbox replies and events until stopped."""

    def __init__(
        self,
        url: str,
        control_exchange: str = "celery",
        event_exchange: str = "celeryev",
        reply_keys: Iterable[str] = (),
        follow_replies: bool = True,
    ) -> None:
        self.url = url
        self.conn = Connection(url)
        self.reply_conn = Connection(url)
        self.transport = self.conn.transport.driver_type
        self.pidbox, self.reply, self.events = exchanges(
            self.transport, control_exchange, event_exchange
        )
        self.tag = f"wkctl-capture-{uuid.uuid4().hex[:8]}"
        self.records: list[dict[str, Any]] = []
        self.errors: list[str] = []
        #: follow the reply routing key of every request seen (replies to
        #: other askers, e.g. a worker's own Mingle hello); best effort:
        #: replies that beat the binding are missed
        self.follow_replies = follow_replies
        self._methods: dict[str, str] = {}  # ticket -> method
        self._reply_keys: set[str] = set()
        self._pending_keys: list[str] = list(reply_keys)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._replies_ready = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life cycle -------------------------------------------------------

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 15.0) -> None:
        # Two consumers on two connections: kombu's Redis channel that mixes
        # PUB/SUB (fanout) and BRPOP (direct) consumption was seen to stop
        # delivering the direct messages now and then, so replies get a
        # connection of their own (on both transports, for symmetry).
        self._threads = [
            threading.Thread(target=self._run_broadcast, name=self.tag, daemon=True),
            threading.Thread(target=self._run_replies, name=f"{self.tag}-r", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not (self._ready.wait(timeout) and self._replies_ready.wait(timeout)):
            raise RuntimeError(f"capture did not start within {timeout} s: {self.errors}")
        if self.errors:
            raise RuntimeError(f"capture failed to start: {self.errors[0]}")

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for conn in (self.conn, self.reply_conn):
            try:
                conn.release()
            except Exception:  # pragma: no cover - best effort on teardown
                pass

    def follow(self, routing_key: str) -> None:
        """Also record replies published with ``routing_key`` (an asker's oid)."""
        with self._lock:
            self._pending_keys.append(routing_key)

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Wait until ``predicate(records)`` is true (polling), or time out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return False

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            for record in self.records:
                # a reply can be consumed (on the reply connection) before its
                # request (on the broadcast connection): resolve it now
                if record["kind"] == "pidbox-reply:unknown":
                    method = self._methods.get(str(record["headers"].get("ticket")))
                    if method is not None:
                        record["kind"] = f"pidbox-reply:{method}"
            return list(self.records)

    def write_ndjson(self, path: Path) -> Path:
        with open(path, "w", encoding="utf-8") as out:
            for record in self.snapshot():
                out.write(json.dumps(record, sort_keys=True) + "\n")
        return path

    # -- consumer thread --------------------------------------------------

    def _queue(self, suffix: str, exchange: Exchange, routing_key: str) -> Queue:
        return Queue(
            f"{self.tag}.{suffix}",
            exchange=exchange,
            routing_key=routing_key,
            durable=False,
            auto_delete=True,
        )

    def _run_broadcast(self) -> None:
        queues = [
            self._queue("pidbox", self.pidbox, ""),
            self._queue("events", self.events, "#"),
        ]
        self._consume(self.conn, queues, self._ready, bind_pending=False)

    def _run_replies(self) -> None:
        # wait for a first reply key: a consumer without queues cannot drain
        while not self._stop.is_set():
            with self._lock:
                if self._pending_keys:
                    break
            self._replies_ready.set()
            time.sleep(0.05)
        self._consume(self.reply_conn, [], self._replies_ready, bind_pending=True)

    def _consume(
        self, conn: Connection, queues: list[Queue], ready: threading.Event, bind_pending: bool
    ) -> None:
        try:
            consumer = Consumer(conn.channel(), queues=queues, on_message=self._on_message)
            if bind_pending:
                self._bind_pending(consumer)
            consumer.consume()
        except Exception as exc:  # the test reports it
            self.errors.append(f"{type(exc).__name__}: {exc}")
            ready.set()
            return
        ready.set()
        rebound = time.monotonic()
        while not self._stop.is_set():
            try:
                if bind_pending:
                    self._bind_pending(consumer)
                    if self.transport == "redis" and time.monotonic() - rebound > 0.5:
                        # Redis keeps direct bindings in plain keys: anything
                        # that flushes the database (another test run sharing
                        # it) silently unbinds us.  kombu's queue_bind is a
                        # no-op for a binding it remembers, so re-add the
                        # binding member itself (an idempotent SADD).
                        rebound = time.monotonic()
                        channel = consumer.channel
                        assert channel is not None  # the consumer is declared
                        for queue in consumer.queues or ():
                            channel._queue_bind(self.reply.name, queue.routing_key, "", queue.name)
                conn.drain_events(timeout=0.5)
            except TimeoutError:
                continue
            except Exception as exc:
                if not self._stop.is_set():
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                return
        try:
            consumer.cancel()
        except Exception:  # pragma: no cover
            pass

    def _bind_pending(self, consumer: Consumer) -> None:
        with self._lock:
            keys, self._pending_keys = self._pending_keys, []
        for key in keys:
            if key in self._reply_keys:
                continue
            self._reply_keys.add(key)
            queue = self._queue(f"reply.{len(self._reply_keys)}", self.reply, key)
            consumer.add_queue(queue)
            consumer.consume()

    def _on_message(self, message: Any) -> None:
        info = message.delivery_info or {}
        exchange = info.get("exchange", "")
        routing_key = info.get("routing_key", "")
        content_type = message.content_type
        body: Any = None
        if (content_type or "").split(";")[0].strip() == "application/json":
            raw = message.body
            try:
                body = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            except ValueError as exc:
                self.errors.append(f"undecodable JSON on {exchange}/{routing_key}: {exc}")
        headers = dict(message.headers or {})
        kind = self._kind(exchange, body, headers)
        record = {
            "kind": kind,
            "transport": self.transport,
            "exchange": exchange,
            "routing_key": routing_key,
            "headers": headers,
            "content_type": content_type,
            "body": body,
        }
        if message.content_encoding:
            record["content_encoding"] = message.content_encoding
        with self._lock:
            self.records.append(record)
        try:
            message.ack()
        except Exception:  # no_ack channels, redis fanout: nothing to ack
            pass

    def _kind(self, exchange: str, body: Any, headers: dict[str, Any]) -> str:
        if exchange == self.pidbox.name and isinstance(body, dict):
            method = str(body.get("method"))
            ticket = body.get("ticket")
            if isinstance(ticket, str):
                with self._lock:
                    self._methods[ticket] = method
                    reply_to = body.get("reply_to")
                    if self.follow_replies and isinstance(reply_to, dict):
                        key = reply_to.get("routing_key")
                        if isinstance(key, str) and key not in self._reply_keys:
                            self._pending_keys.append(key)
            return f"pidbox-request:{method}"
        if exchange == self.reply.name:
            with self._lock:
                method = self._methods.get(str(headers.get("ticket")), "unknown")
            return f"pidbox-reply:{method}"
        if isinstance(body, list):
            return "event-batch"
        if isinstance(body, dict):
            return f"event:{body.get('type')}"
        return "unknown"


def fixed_reply_key(app: Any) -> str:
    """Give a Celery app's control mailbox one stable reply routing key; return it.

    kombu derives the reply routing key (the "oid") from ``id()`` of a bound
    mailbox copy made per broadcast, so it cannot be known before a request
    is sent, and a capture binding made after seeing the request races the
    replies.  Pinning the key on the driving client (never on a worker)
    lets the capture bind first; what the workers send is unchanged.
    """
    mailbox = app.control.mailbox
    key = str(uuid.uuid4())

    class _PinnedOid(type(mailbox)):  # type: ignore[misc]
        @property
        def oid(self) -> str:
            return key

    mailbox.__class__ = _PinnedOid
    return key


def kinds_seen(records: Iterable[dict[str, Any]]) -> set[str]:
    return {record["kind"] for record in records}
