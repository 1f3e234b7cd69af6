"""The kombu binding: drives sans-IO :class:`~wkctl.protocol.node.Node`\\ s
over one real broker connection.

One :class:`Binding` hosts any number of nodes (hundreds, for scale tests)
on a single connection and a single thread:

* one consuming channel with, per node, its pidbox queue
  ``<name>.<control_exchange>.pidbox`` bound to the fanout pidbox exchange
  (declared exactly as kombu's ``Mailbox`` declares it, so Celery clients
  reach it), plus one event queue bound to ``worker.#`` on the event
  exchange and one reply queue on the reply exchange, both shared by the
  hosted nodes: events and ``hello`` replies are dispatched to the nodes in
  memory, instead of the broker copying every event into N queues; on
  RabbitMQ the event queue is consumed through a window of
  :data:`~wkctl.protocol.broker.EVENT_WINDOW` unacknowledged messages, so
  that a control request never waits behind an event flood (an election of
  50 nodes is 2,550 events) in the connection;
* one publishing channel;
* timers: the loop wakes up when the earliest node timer is due (Mingle
  end, heartbeat, liveness sweep, election timeout) and at least every
  ``tick`` seconds.

kombu connections are not thread-safe, so every broker operation happens
in the loop thread; other threads talk to nodes through
:meth:`NodeHandle.submit`, which queues a function for the loop.

On a connection loss the binding logs ``connection to <url> lost: ...;
reconnecting in ...``, retries with exponential backoff (0.1 s doubling to
5 s), logs ``reconnected``, declares everything again and lets every node
re-Mingle and re-announce itself (``worker-online``).

Messages are consumed raw (kombu ``on_message``): kombu never deserializes
them; the node core decodes JSON only.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import signal
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from kombu import Connection, Consumer, Exchange, Producer, Queue

from .broker import (
    EVENT_WINDOW,
    AckWindow,
    BrokerSettings,
    event_exchange,
    event_queue,
    pidbox_exchange,
    pidbox_queue,
    reply_exchange,
    reply_queue,
    task_queue,
    windowed_ttl,
)
from .control import ProcessInfo
from .election import Decision
from .gossip import Callbacks, Change, ChangeKind, WorkerInfo
from .host import local_environment
from .mingle import SyncResult
from .node import (
    Action,
    Elected,
    Inbound,
    Log,
    MemberChanged,
    Node,
    NodeConfig,
    Publish,
    ShutdownRequested,
    Synced,
)
from .reconnect import BACKOFF, Backoff
from .vocab import PER_NODE_PIDBOX_TRANSPORTS

__all__ = ["Binding", "BrokerUnavailable", "NodeHandle", "NodeNameInUse", "run_node"]

logger = logging.getLogger("wkctl.node")

BACKOFF_START = BACKOFF.start
BACKOFF_MAX = BACKOFF.max
#: Longest the loop sleeps between two looks at its timers and its inbox.
DEFAULT_TICK = 0.05
#: Notifications each handle keeps for observers (tests, ``wkctl demo``).
HISTORY = 1000


class BrokerUnavailable(ConnectionError):
    """The first connection to the broker failed (``run_node`` does not retry it)."""


class NodeNameInUse(RuntimeError):
    """Another process already runs a node with this name on this broker."""


@dataclass
class NodeHandle:
    """One hosted node, as other threads see it.

    ``syncs``, ``decisions``, ``changes`` and ``logs`` record what the node
    did (bounded); :meth:`wait_for` blocks until a predicate over the handle
    holds.
    """

    node: Node
    binding: Binding
    syncs: deque[SyncResult] = field(default_factory=lambda: deque(maxlen=HISTORY))
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=HISTORY))
    changes: deque[Change] = field(default_factory=lambda: deque(maxlen=HISTORY))
    logs: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))
    started: threading.Event = field(default_factory=threading.Event)
    failed: str | None = None
    consumer: Consumer | None = None
    wakeup: float = 0.0
    alive: bool = True
    #: internal errors (wkctl bugs) raised by this node's core, logged
    #: with their traceback by the loop
    internal_errors: int = 0
    #: membership callbacks (Celery's ``gossip.on``), run by the loop when
    #: the core reports a change (the core runs no user code)
    on: Callbacks = field(default_factory=Callbacks)
    #: ``{topic: handler(action, decision)}`` run by the loop when this
    #: node wins an election of a topic in ``node.host_topics``
    election_handlers: dict[str, Callable[[Any, Decision], Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.node.name

    def wait_for(self, predicate: Callable[[NodeHandle], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.binding.changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.binding.changed.wait(remaining)
        return True

    def wait_synced(self, timeout: float = 10.0) -> bool:
        """Until the first Mingle round (or start, without Mingle) is over."""
        return self.wait_for(
            lambda h: bool(h.syncs) or (h.started.is_set() and not h.node.config.mingle), timeout
        )

    def wait_decision(self, election_id: str, timeout: float = 15.0) -> Decision | None:
        found: list[Decision] = []

        def done(h: NodeHandle) -> bool:
            found[:] = [d for d in h.decisions if d.id == election_id]
            return bool(found)

        return found[0] if self.wait_for(done, timeout) else None

    def alive_peers(self) -> list[str]:
        with self.binding.lock:
            return sorted(self.node.membership.alive(time.time()))

    def log_text(self) -> str:
        return "\n".join(m for _, m in list(self.logs))

    def set_election_handler(self, topic: str, handler: Callable[[Any, Decision], Any]) -> None:
        """Run ``handler(action, decision)`` in the loop when this node wins
        an election of ``topic`` ([ELECT-8]); the core then leaves the
        topic's action to the host (``node.host_topics``)."""
        with self.binding.lock:
            self.election_handlers[topic] = handler
            self.node.host_topics.add(topic)

    def submit(self, fn: Callable[[Node, float], Iterable[Action] | None]) -> None:
        """Run ``fn(node, now)`` in the loop thread; its actions are performed."""
        self.binding._inbox.put((self, fn))

    def revoke_local(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        self.submit(lambda node, now: node.revoke_local(ids, now))

    def stop(self) -> None:
        """Stop this node cleanly (``worker-offline``)."""
        self.binding._inbox.put((self, "stop"))

    def kill(self) -> None:
        """Drop this node abruptly: no ``worker-offline`` (simulates a crash)."""
        self.binding._inbox.put((self, "kill"))


class Binding:
    """Hosts nodes on one broker connection, in one loop thread."""

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        tick: float = DEFAULT_TICK,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
        log: logging.Logger | None = None,
        on_action: Callable[[NodeHandle, Action], None] | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.names
        self.tick = tick
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.log = log or logger
        self.on_action = on_action
        self.oid = str(uuid.uuid4())
        #: what the hosted cores read of this process (hostname, pid, ids...)
        self.env = local_environment()
        #: internal errors (wkctl bugs) the loop caught, logged and survived
        self.internal_errors = 0
        self.handles: dict[str, NodeHandle] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.reconnects = 0
        self._inbox: queue_mod.Queue[tuple[NodeHandle, Any]] = queue_mod.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._consume_channel: Any = None
        self._producer: Producer | None = None
        self._shared_consumers: list[Consumer] = []
        self._event_exchange = event_exchange(self.names, settings.transport)
        self._pidbox_exchange = pidbox_exchange(self.names)
        self._reply_exchange = reply_exchange(self.names)
        self._declared_task_queues: set[str] = set()
        self._incoming: deque[tuple[Callable[[Any], None], Any]] = deque()
        #: On RabbitMQ every node gets its own pidbox queue, as Celery's
        #: workers do.  Transports that emulate fanout (Redis PUB/SUB, the
        #: filesystem broker) route a broadcast to one queue per exchange and
        #: channel and subscribe only at the first poll, so there the hosted
        #: nodes share one pidbox subscription, dispatched in memory (control
        #: requests are broadcasts; ``destination`` is checked by each node).
        self._shared_pidbox = settings.transport not in PER_NODE_PIDBOX_TRANSPORTS
        #: events through a window (RabbitMQ, where each queue is a queue)
        self._windowed = settings.transport in PER_NODE_PIDBOX_TRANSPORTS
        self._event_acks = AckWindow(EVENT_WINDOW)
        self.error: BaseException | None = None
        #: end the loop once a ``shutdown`` command stopped the last node
        #: (``run_node``: the process then exits 0, [CONTROL-9])
        self.exit_when_shut_down = False

    # -- public API -------------------------------------------------------

    def add_node(self, config: NodeConfig | str | None = None, **settings: Any) -> NodeHandle:
        """Host one more node; it starts (Mingle, then ``worker-online``) as
        soon as the loop runs.  ``config`` is a :class:`NodeConfig`, or a
        name with keyword settings."""
        if isinstance(config, str) or config is None:
            if config is not None:
                settings["name"] = config
            settings.setdefault("names", self.names)
            config = NodeConfig(**settings)
        config.reply_routing_key = self.oid
        config.names = self.names
        if not config.broker_info:
            config.broker_info = broker_info(self.settings)
        config.settings_info = {"broker_url": self.settings.masked_url, **config.settings_info}
        node = Node(config, env=self.env)
        handle = NodeHandle(node=node, binding=self)
        with self.lock:
            if node.name in self.handles:
                raise ValueError(f"a node named {node.name} is already hosted here")
            self.handles[node.name] = handle
        self._inbox.put((handle, "start"))
        return handle

    def start(self) -> Binding:
        """Run the loop in a background thread (returns once connected)."""
        if self._thread is not None:
            return self
        self._connect()
        self._thread = threading.Thread(target=self._loop, name="wkctl-binding", daemon=True)
        self._thread.start()
        return self

    def run(self, stop: threading.Event | None = None) -> None:
        """Run the loop in this thread until :meth:`shutdown` or ``stop`` is set."""
        if stop is not None:
            self._stop = stop
        self._connect()
        self._loop()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every node cleanly (``worker-offline``) and close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Binding:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- connection -------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        conn = self._conn
        base: tuple[type[BaseException], ...] = (OSError, ConnectionError)
        if conn is None:
            return base
        return tuple(conn.connection_errors) + tuple(conn.channel_errors) + base

    def _connect(self) -> None:
        self._conn = self.settings.connection()
        self._conn.ensure_connection(max_retries=1 + self.settings.failover_retries)
        self._setup()

    def _setup(self) -> None:
        assert self._conn is not None
        conn = self._conn
        self._producer = Producer(conn.channel(), auto_declare=False)
        pchan = self._producer.channel
        for exchange in (self._event_exchange, self._pidbox_exchange, self._reply_exchange):
            exchange(pchan).declare()
        self._declared_task_queues.clear()
        self._consume_channel = conn.channel()
        self._shared_consumers = []
        reply_q = reply_queue(self.names, self.oid)
        reply_consumer = Consumer(
            self._consume_channel, [reply_q], no_ack=True, on_message=self._defer(self._on_reply)
        )
        reply_consumer.consume()
        self._shared_consumers.append(reply_consumer)
        event_q = event_queue(
            self.names,
            self.settings.transport,
            f"wkctl-{self.oid}",
            "worker.#",
            message_ttl=windowed_ttl(self.names) if self._windowed else None,
        )
        self._event_acks.reset()
        # On RabbitMQ events come through a window, so that control requests
        # (their own queues, no window) never wait behind an election's
        # N x N acks in the connection: the backlog stays in the broker.
        event_consumer = Consumer(
            self._consume_channel,
            [event_q],
            no_ack=not self._windowed,
            prefetch_count=EVENT_WINDOW if self._windowed else None,
            on_message=self._defer(self._on_event, acked=self._windowed),
        )
        event_consumer.consume()
        self._shared_consumers.append(event_consumer)
        if self._shared_pidbox:
            pidbox_q = self._pidbox_queue(f"wkctl-{self.oid}")
            pidbox_consumer = Consumer(
                self._consume_channel,
                [pidbox_q],
                no_ack=True,
                on_message=self._defer(self._on_pidbox),
            )
            pidbox_consumer.consume()
            self._shared_consumers.append(pidbox_consumer)
        for handle in list(self.handles.values()):
            if handle.started.is_set() and handle.alive:
                self._attach(handle)
        # Let the transport subscribe now: on Redis, fanout queues are
        # PUB/SUB subscriptions made at the first poll, and a hello published
        # before them would miss this process's own nodes.
        try:
            conn.drain_events(timeout=0.01)
        except TimeoutError:
            pass

    def _defer(self, fn: Callable[[Any], None], acked: bool = False) -> Callable[[Any], None]:
        """Queue an inbound message for the loop instead of handling it inside
        kombu's callback: py-amqp runs callbacks from within any blocking
        call (a queue declaration, a channel open), and a handler that
        publishes from there re-enters the connection.  ``acked``: the
        consumer has a window; acknowledge every half window (one frame,
        no reply awaited)."""

        def on_message(message: Any) -> None:
            self._incoming.append((fn, message))
            if acked:
                self._event_acks.taken(self._consume_channel, message.delivery_tag)

        return on_message

    def _process_incoming(self) -> None:
        while self._incoming:
            fn, message = self._incoming.popleft()
            fn(message)

    def _pidbox_queue(self, name: str) -> Queue:
        return pidbox_queue(self.names, name)

    def _attach(self, handle: NodeHandle) -> None:
        """Declare the node's pidbox queue and consume it.

        The queue is first declared on a scratch channel: on RabbitMQ an
        exclusive queue held by another connection (a node of the same name
        elsewhere) fails with RESOURCE_LOCKED and closes the channel, which
        must not be the shared consuming one.
        """
        assert self._conn is not None
        if self._shared_pidbox:
            return
        q = self._pidbox_queue(handle.name)
        scratch = self._conn.channel()
        try:
            q(scratch).declare()
        except self._conn.channel_errors as exc:
            raise NodeNameInUse(
                f"a node named {handle.name} is already running on {self.settings.masked_url}: {exc}"
            ) from None
        finally:
            try:
                scratch.close()
            except Exception:
                pass

        def on_message(message: Any, handle: NodeHandle = handle) -> None:
            self._incoming.append((lambda m: self._deliver(handle, "pidbox", m), message))

        consumer = Consumer(self._consume_channel, [q], no_ack=True, on_message=on_message)
        consumer.consume()
        handle.consumer = consumer

    def _reconnect(self, exc: BaseException) -> None:
        reason = str(exc).strip() or type(exc).__name__
        delay = self.backoff_start
        self.log.warning(
            "connection to %s lost: %s; reconnecting in %.1f s",
            self.settings.masked_url,
            reason,
            delay,
        )
        self._close_connection()
        while not self._stop.is_set():
            if self._stop.wait(delay):
                return
            try:
                self._conn = self.settings.connection()
                self._conn.ensure_connection(max_retries=1 + self.settings.failover_retries)
                self._setup()
            except Exception as again:
                self._close_connection()
                delay = Backoff(self.backoff_start, self.backoff_max).next(delay)
                self.log.warning(
                    "reconnect to %s failed: %s; retrying in %.1f s",
                    self.settings.masked_url,
                    str(again).strip() or type(again).__name__,
                    delay,
                )
                continue
            self.reconnects += 1
            self.log.warning("reconnected to %s", self.settings.masked_url)
            now = time.time()
            for handle in list(self.handles.values()):
                if handle.started.is_set() and handle.alive:
                    self._perform(handle, self._drive(handle, Node.reconnected, now))
            return

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._producer = None
        self._consume_channel = None
        self._shared_consumers = []
        for handle in self.handles.values():
            handle.consumer = None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                pass

    # -- the loop ---------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self._conn is None:  # a reconnect was interrupted
                        raise ConnectionError("not connected")
                    self._process_inbox()
                    try:
                        self._conn.drain_events(timeout=self._timeout())
                    except TimeoutError:
                        # Idle: acknowledge what the window holds, or a
                        # quiet cluster would keep a few events unacked for
                        # hours (RabbitMQ's consumer_timeout closes the channel).
                        self._event_acks.flush(self._consume_channel)
                    self._process_incoming()
                    self._run_timers()
                except self._errors() as exc:
                    # Publishing fails the same way as consuming when the
                    # broker goes away: either way, reconnect.
                    self._incoming.clear()
                    self._reconnect(exc)
            self._stop_all()
            # One line, always: what the fuzz suite and operators read to
            # know whether wkctl hit a bug of its own while running.
            self.log.info("binding stopped: %d internal error(s)", self.internal_errors)
        except BaseException as exc:  # pragma: no cover - reported to the owner
            self.error = exc
            self.log.error("node loop failed: %r", exc)
            raise
        finally:
            self._close_connection()
            with self.changed:
                self.changed.notify_all()

    def _timeout(self) -> float:
        now = time.time()
        soonest = now + self.tick
        for handle in self.handles.values():
            if handle.alive and handle.started.is_set():
                soonest = min(soonest, handle.wakeup)
        return max(0.0, soonest - now)

    def _run_timers(self) -> None:
        now = time.time()
        for handle in list(self.handles.values()):
            if handle.alive and handle.started.is_set() and now >= handle.wakeup:
                actions = self._drive(handle, Node.tick, now)
                self._perform(handle, actions)

    def _drive(
        self,
        handle: NodeHandle,
        fn: Callable[[Node, float], Iterable[Action] | None],
        now: float,
    ) -> list[Action]:
        """Run ``fn(node, now)`` under the lock.  What it raises is wkctl's own
        bug (peer input is rejected inside the core, never raised): logged
        with its traceback, counted (``internal_errors``) and survived, so
        one bad path does not take down every hosted node."""
        with self.lock:
            try:
                return list(fn(handle.node, now) or ())
            except Exception as exc:
                self.internal_errors += 1
                handle.internal_errors += 1
                handle.logs.append((logging.ERROR, f"internal error: {exc!r}"))
                self.log.error("%s: internal error: %r", handle.name, exc, exc_info=exc)
                return []

    def _process_inbox(self) -> None:
        while True:
            try:
                handle, op = self._inbox.get_nowait()
            except queue_mod.Empty:
                return
            now = time.time()
            if op == "start":
                if handle.started.is_set():
                    continue
                try:
                    self._attach(handle)
                except Exception as exc:
                    handle.failed = str(exc)
                    handle.alive = False
                    self.log.error("%s", exc)
                    with self.changed:
                        self.changed.notify_all()
                    handle.started.set()
                    continue
                actions = self._drive(handle, Node.start, now)
                handle.started.set()
                self._perform(handle, actions)
                with self.changed:
                    self.changed.notify_all()
            elif op in ("stop", "kill"):
                if not handle.alive:
                    continue
                if op == "stop":
                    actions = self._drive(handle, Node.stop, now)
                    self._perform(handle, actions)
                handle.alive = False
                self._detach(handle)
                if self.exit_when_shut_down and not any(h.alive for h in self.handles.values()):
                    self._stop.set()
            else:
                if not handle.alive:
                    continue
                actions = self._drive(handle, op, now)
                self._perform(handle, actions)

    def _detach(self, handle: NodeHandle) -> None:
        consumer, handle.consumer = handle.consumer, None
        if consumer is not None:
            try:
                consumer.cancel()
            except Exception:
                pass
        with self.changed:
            self.changed.notify_all()

    def _stop_all(self) -> None:
        now = time.time()
        for handle in list(self.handles.values()):
            if handle.alive and handle.started.is_set() and not handle.failed:
                actions = self._drive(handle, Node.stop, now)
                try:
                    self._perform(handle, actions)
                except Exception as exc:
                    self.log.warning("could not announce %s offline: %r", handle.name, exc)
                handle.alive = False

    # -- inbound ----------------------------------------------------------

    def _deliver(self, handle: NodeHandle, where: str, message: Any) -> None:
        if not handle.alive:
            return
        inbound = inbound_from_message(message)
        now = time.time()
        if where == "pidbox":
            process = process_info()
            actions = self._drive(
                handle, lambda node, now: node.receive_pidbox(inbound, now, process), now
            )
        elif where == "event":
            actions = self._drive(handle, lambda node, now: node.receive_event(inbound, now), now)
        else:
            actions = self._drive(handle, lambda node, now: node.receive_reply(inbound, now), now)
        self._perform(handle, actions)

    def _on_event(self, message: Any) -> None:
        inbound = inbound_from_message(message)
        if inbound.routing_key.split(".", 1)[0] == "task":
            return
        now = time.time()
        # Decode (and schema-check) once per message, not once per hosted
        # node: one copy per distinct set of limits, usually just one.
        decoded: list[Inbound] = []
        for handle in list(self.handles.values()):
            if handle.alive and handle.started.is_set():
                limits = handle.node.config.limits
                msg = next((m for m in decoded if m.decoded and m.decoded.limits == limits), None)
                if msg is None:
                    msg = inbound.predecoded(limits)
                    decoded.append(msg)
                actions = self._drive(handle, partial(_receive_event, msg), now)
                self._perform(handle, actions)

    def _on_pidbox(self, message: Any) -> None:
        for handle in list(self.handles.values()):
            if handle.alive and handle.started.is_set():
                self._deliver(handle, "pidbox", message)

    def _on_reply(self, message: Any) -> None:
        ticket = (message.headers or {}).get("ticket")
        for handle in list(self.handles.values()):
            session = handle.node.mingle
            if handle.alive and session is not None and session.ticket == ticket:
                self._deliver(handle, "reply", message)
                return

    # -- outbound ---------------------------------------------------------

    def _perform(self, handle: NodeHandle, actions: Iterable[Action]) -> None:
        notify = False
        for action in actions:
            if isinstance(action, Publish):
                self._publish(handle, action)
            elif isinstance(action, Log):
                handle.logs.append((action.level, action.message))
                self.log.log(action.level, "%s: %s", handle.name, action.message)
            elif isinstance(action, Synced):
                handle.syncs.append(action.result)
                notify = True
            elif isinstance(action, Elected):
                handle.decisions.append(action.decision)
                self._run_election_handler(handle, action.decision)
                notify = True
            elif isinstance(action, MemberChanged):
                handle.changes.append(action.change)
                self._run_member_handlers(handle, action.change.kind, action.change.worker)
                notify = True
            elif isinstance(action, ShutdownRequested):
                # After this batch (the reply is published first): a clean
                # stop, worker-offline included.
                self._inbox.put((handle, "stop"))
            if self.on_action is not None:
                try:
                    self.on_action(handle, action)
                except Exception as exc:
                    self.log.error("on_action callback failed: %r", exc)
        handle.wakeup = handle.node.next_wakeup(time.time())
        if notify:
            with self.changed:
                self.changed.notify_all()

    def _run_election_handler(self, handle: NodeHandle, decision: Decision) -> None:
        """The host's part of [ELECT-8]: the winner runs the topic's action."""
        if not decision.won or decision.topic not in handle.node.host_topics:
            return
        handler = handle.election_handlers.get(decision.topic)
        if handler is None:
            self.log.error("%s: no handler for election topic %r", handle.name, decision.topic)
            return
        try:
            with self.lock:  # as the loop holds it while it runs the node
                handler(decision.action, decision)
        except Exception as exc:  # the user's handler, not wkctl's
            self.log.error(
                "%s: election handler for topic %r failed: %r", handle.name, decision.topic, exc
            )

    def _run_member_handlers(
        self, handle: NodeHandle, kind: ChangeKind, worker: WorkerInfo
    ) -> None:
        for handler in list(handle.on.for_kind(kind)):
            try:
                with self.lock:  # as the loop holds it while it runs the node
                    handler(worker)
            except Exception as exc:  # the user's handler, not wkctl's
                handle.logs.append(
                    (logging.ERROR, f"Ignored error from handler {handler!r}: {exc!r}")
                )
                self.log.error("%s: Ignored error from handler %r: %r", handle.name, handler, exc)

    def _publish(self, handle: NodeHandle, action: Publish) -> None:
        producer = self._producer
        if producer is None:
            return
        if action.target == "event":
            exchange: Exchange | str = self._event_exchange
            delivery_mode = 1
        elif action.target == "pidbox":
            exchange, delivery_mode = self._pidbox_exchange, 1
        elif action.target == "reply":
            exchange, delivery_mode = self._reply_exchange, 1
        else:
            exchange, delivery_mode = (
                action.exchange,
                int(action.properties.get("delivery_mode", 2)),
            )
            if action.declare_queue and action.declare_queue not in self._declared_task_queues:
                q = action.declare_queue
                task_queue(q)(producer.channel).declare()
                self._declared_task_queues.add(q)
        props = {k: v for k, v in action.properties.items() if k != "delivery_mode"}
        try:
            producer.publish(
                action.body,
                exchange=exchange,
                routing_key=action.routing_key,
                headers=action.headers,
                serializer="json",
                delivery_mode=delivery_mode,
                **props,
            )
        except self._errors():
            raise
        except Exception as exc:  # e.g. a reply queue that is gone already
            self.log.debug("%s: publish to %s failed: %r", handle.name, action.exchange, exc)


def _receive_event(msg: Inbound, node: Node, now: float) -> list[Action]:
    return node.receive_event(msg, now)


def process_info() -> ProcessInfo:
    """This process's resource usage, for ``stats`` and ``memsample``
    (Celery's field names; ``ru_maxrss`` is KiB on Linux)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return ProcessInfo()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    fields = (
        "utime stime maxrss ixrss idrss isrss minflt majflt nswap inblock oublock "
        "msgsnd msgrcv nsignals nvcsw nivcsw"
    ).split()
    rusage = {name: getattr(usage, f"ru_{name}") for name in fields}
    rss = None
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            rss = int(statm.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        pass
    return ProcessInfo(rusage=rusage, rss=rss)


def broker_info(settings: BrokerSettings) -> dict[str, Any]:
    """The broker connection as Celery's ``stats`` reports it (kombu's
    ``Connection.info()`` without the password)."""
    parts = urlsplit(settings.url if "://" in settings.url else f"{settings.url}://")
    return {
        "hostname": parts.hostname,
        "userid": parts.username,
        "virtual_host": parts.path[1:] if parts.path.startswith("/") else parts.path,
        "port": parts.port,
        "insist": False,
        "ssl": bool(settings.ssl),
        "transport": settings.transport,
        "connect_timeout": settings.connect_timeout,
        "transport_options": dict(settings.transport_options),
        "login_method": None,
        "uri_prefix": None,
        "heartbeat": None,
        "failover_strategy": "round-robin",
        "alternates": [],
    }


def inbound_from_message(message: Any) -> Inbound:
    """A raw kombu message as the node core takes it: body bytes, content
    type, headers and routing key; nothing is deserialized here."""
    info = getattr(message, "delivery_info", None) or {}
    return Inbound(
        body=message.body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=message.headers or {},
        routing_key=str(info.get("routing_key") or ""),
    )


def run_node(
    settings: BrokerSettings,
    name: str | None = None,
    *,
    heartbeat: float = 2.0,
    mingle: bool = True,
    gossip: bool = True,
    election_timeout: float = 10.0,
    mingle_timeout: float = 1.0,
    stop: threading.Event | None = None,
    install_signals: bool = True,
    revoked: Iterable[str] = (),
    on_action: Callable[[NodeHandle, Action], None] | None = None,
    **config: Any,
) -> int:
    """Run one node in the foreground until SIGINT/SIGTERM (or ``stop``).

    Returns the exit status: 0 after a clean stop (``worker-offline`` sent).
    Raises :class:`NodeNameInUse` when the name is taken on this broker and
    lets connection errors of the first connect propagate (the caller turns
    them into a one-line error).
    """
    stop = stop or threading.Event()
    binding = Binding(settings, on_action=on_action)
    binding.exit_when_shut_down = True
    kwargs: dict[str, Any] = dict(
        heartbeat=heartbeat,
        mingle=mingle,
        gossip=gossip,
        election_timeout=election_timeout,
        mingle_timeout=mingle_timeout,
        **config,
    )
    if name:
        kwargs["name"] = name
    handle = binding.add_node(None, **kwargs)
    seed = list(revoked)
    if seed:  # before the start, so the hello already carries them
        handle.node.revoke_local(seed, time.time())
    previous: dict[signal.Signals, Any] = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        binding._stop = stop
        try:
            binding._connect()
        except Exception as exc:  # kombu raises many types; all mean "unreachable"
            raise BrokerUnavailable(str(exc).strip() or type(exc).__name__) from exc
        binding._process_inbox()
        if handle.failed:
            raise NodeNameInUse(handle.failed)
        binding._loop()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0
