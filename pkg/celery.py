"""Harden real Celery workers: wkctl's Mingle and Gossip inside ``celery worker``.

One line in the Celery app turns it on::

    import wkctl.celery
    wkctl.celery.install(app)

``celery -A proj worker`` then runs :class:`Mingle` and :class:`Gossip`
below in place of Celery's own steps of the same names (Celery's are taken
out of the consumer blueprint, so there are never two).  Both are thin
adapters: every protocol rule (the ``hello`` round and when it ends,
merging revoked ids, the clock bounds, membership, elections) is the
sans-IO :class:`wkctl.protocol.node.Node`'s, the same core ``wkctl node``
runs.  The steps only carry messages between the worker (its broker
connection, event dispatcher, timer, ``app.clock`` and
``celery.worker.state.revoked``) and that core.

What stays Celery's: the pidbox (control commands, ``celery inspect``),
task consumption, task events and the ``Heart`` step (heartbeats keep
``sw_ident: "py-celery"`` and gain ``wkctl_ver``).  Only the ``hello``
control command, Mingle's reply side, is answered by the core, and a
control request kombu cannot dispatch is rejected before it reaches Celery
(which would reset, and on Redis with kombu 5.2-5.6 silence, its control
channel: [PIDBOX-21]).

Why a failure inside these steps never takes the worker down: every entry
point runs under :meth:`WorkerNode.run`, which logs the first internal error
of a step once, with its traceback, and stops that step; the worker keeps
consuming tasks.  Broker connection errors still propagate, so that Celery
reconnects as it always does.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

from kombu import Consumer as KombuConsumer
from kombu import Producer

from wkctl import __version__
from wkctl.protocol.binding import inbound_from_message
from wkctl.protocol.bootsteps import driver_type
from wkctl.protocol.broker import (
    gossip_consumer,
    names_from_conf,
    pidbox_exchange,
    reply_queue,
)
from wkctl.protocol.election import Decision
from wkctl.protocol.gossip import WorkerInfo
from wkctl.protocol.host import SharedClock, local_environment
from wkctl.protocol.mingle import SyncResult
from wkctl.protocol.node import (
    Action,
    Elected,
    Inbound,
    Log,
    MemberChanged,
    Node,
    NodeConfig,
    Publish,
    Synced,
)
from wkctl.protocol.vocab import CELERY_GOSSIP_DRIVERS, HARDENED_FIELD
from wkctl.protocol.wire import JSON_CONTENT_TYPE

try:
    import celery
    from celery import bootsteps
    from celery.worker import control as celery_control
    from celery.worker import state as worker_state
    from celery.worker.consumer.consumer import Consumer as CeleryConsumer
    from celery.worker.consumer.gossip import Gossip as CeleryGossip
    from celery.worker.consumer.mingle import Mingle as CeleryMingle
except ImportError as exc:  # pragma: no cover - wkctl installed without Celery
    raise ImportError("wkctl.celery needs Celery: pip install 'wkctl[celery]'") from exc

__all__ = [
    "SUPPORTED_CELERY",
    "Consumer",
    "Gossip",
    "Mingle",
    "UnsupportedCelery",
    "WorkerNode",
    "install",
]

logger = logging.getLogger("wkctl.celery")

#: Celery releases ``install`` supports: [lowest, first unsupported).  Each
#: release of the range runs the hardened steps on both brokers with the kombu
#: it was published with: 5.0.5, 5.1.2, 5.2.7, 5.3.6, 5.4.0, 5.5.3, 5.6.3, 5.7.0
#: (tests/integration/test_celery_harden_releases.py, ``--release-matrix``).
SUPPORTED_CELERY = ((5, 0), (5, 8))
SUPPORTED_TEXT = "Celery 5.0 to 5.7"

#: Transports the hardened steps run on (those tested with real workers):
#: Celery's Gossip drivers.  Celery's own Mingle also runs on ``gcpubsub``;
#: there the steps disable themselves with one log line and the worker
#: starts without them.
COMPATIBLE_TRANSPORTS = CELERY_GOSSIP_DRIVERS

#: Seconds between two timer runs of the core (election timeouts).
TICK_INTERVAL = 0.5


class UnsupportedCelery(RuntimeError):
    """``install`` was called with a Celery release it does not support."""


def _release_of(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0"])[:2]
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def install(app: Any) -> None:
    """Make ``celery -A <this app> worker`` run wkctl's Mingle and Gossip.

    Sets the app's ``worker_consumer`` to :class:`Consumer` and gives the app
    a clock with the spec's poisoning bounds.  Nothing else changes in a
    process that does not run a worker (clients importing the app).  Raises
    :class:`UnsupportedCelery` (one line, naming the supported range) on a
    release outside :data:`SUPPORTED_CELERY`.
    """
    release = _release_of(celery.__version__)
    low, high = SUPPORTED_CELERY
    if not low <= release < high:
        raise UnsupportedCelery(
            f"wkctl.celery supports {SUPPORTED_TEXT}; this is Celery {celery.__version__}"
        )
    if not isinstance(app.clock, BoundedClock):
        app.clock = BoundedClock(app.clock.value)
    app.conf.worker_consumer = f"{__name__}:Consumer"


# -- the clock ----------------------------------------------------------------


class BoundedClock(SharedClock):
    """``app.clock`` with the spec's bounds ([CLOCK-1], [CLOCK-6], [CLOCK-7]).

    Celery calls ``adjust`` only with values read from the wire (events,
    hello replies, the state db), so here ``adjust`` is the core's
    ``receive``: a value that is not a clock, or jumps too far, only moves
    the clock forward by one.  ``value``/``forward`` are kombu's.  Every
    thread of the worker uses it, so it is the locked
    :class:`~wkctl.protocol.host.SharedClock` (the core's clock has no lock).
    """

    def adjust(self, other: object) -> int:  # type: ignore[override]
        return self.receive(other).value

    def __str__(self) -> str:
        return str(self.value)


# -- one worker's node --------------------------------------------------------


class WorkerNode:
    """The core :class:`Node` of one Celery consumer, and the adapters
    around it: publishing the core's actions on the worker's connection,
    the revoked ids mirrored into ``celery.worker.state.revoked``, and the
    guard that stops a failing step (see the module docstring)."""

    def __init__(self, c: Any) -> None:
        self.c = c
        app = c.app
        if not isinstance(app.clock, BoundedClock):  # a worker built without install()
            app.clock = BoundedClock(app.clock.value)
        self.node = Node(
            NodeConfig(
                name=c.hostname,
                pid=c.pid,
                announce=False,  # Celery's Heart sends worker-online/heartbeat/offline
                names=names_from_conf(app.conf),
            ),
            env=local_environment(),
        )
        # One clock per worker process, as in Celery: the core's is app.clock.
        self.node.clock = app.clock
        # Threads meet here when the pool is not event-loop based.
        self.lock = threading.RLock()
        self.failed: dict[str, str] = {}
        self.decisions: deque[Decision] = deque(maxlen=100)
        self.last_sync: SyncResult | None = None
        self.producer: Producer | None = None  # set during a Mingle round
        #: the steps' callbacks on the core's notifications (the core runs
        #: no user code: elections won, membership changes reach them here)
        self.listeners: list[Callable[[Action], None]] = []
        #: the broker's kombu driver type, as Celery's steps compare it
        self.transport = driver_type(app)
        worker_state.SOFTWARE_INFO[HARDENED_FIELD] = __version__

    @classmethod
    def of(cls, c: Any) -> WorkerNode:
        """The consumer's node, created by the first step that needs it."""
        node = getattr(c, "wkctl", None)
        if node is None:
            node = c.wkctl = cls(c)
        return node

    # -- the guard ------------------------------------------------------

    def run(
        self, step: str, fn: Callable[[Node, float], Iterable[Action] | None]
    ) -> Iterable[Action] | None:
        """Run ``fn(node, now)`` and perform its actions, unless ``step``
        stopped.  The first internal error of a step is logged once with its
        traceback and stops the step; broker connection errors propagate so
        that Celery reconnects."""
        if step in self.failed:
            return None
        try:
            with self.lock:
                actions = list(fn(self.node, time.time()) or ())
                self.perform(actions)
            return actions
        except self._connection_errors():
            raise
        except Exception as exc:
            self.fail(step, exc)
            return None

    def fail(self, step: str, exc: BaseException) -> None:
        if step in self.failed:
            return
        self.failed[step] = repr(exc)
        logger.error(
            "wkctl %s step stopped after an internal error: %r; the worker keeps "
            "consuming tasks (restart it to run the step again)",
            step,
            exc,
            exc_info=exc,
        )

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        conn = getattr(self.c, "connection", None)
        errors = tuple(getattr(conn, "connection_errors", ()) or ())
        return errors + (socket.timeout,)

    def ensure_started(self, now: float) -> list[Action]:
        """Start the core once (Mingle's round starts it; without Mingle,
        Gossip does); later rounds are reconnections."""
        node = self.node
        if not node.started:
            logger.info(
                "wkctl %s: Mingle %s, Gossip %s (wkctl's steps)",
                __version__,
                "on" if node.config.mingle else "off",
                "on" if node.config.gossip else "off",
            )
            return node.start(now)
        return node.reconnected(now)

    # -- actions ----------------------------------------------------------

    def perform(self, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                self.publish(action)
            elif isinstance(action, Log):
                logger.log(action.level, "%s", action.message)
            elif isinstance(action, Elected):
                self.decisions.append(action.decision)
            elif isinstance(action, Synced):
                self.last_sync = action.result
            for listener in self.listeners:
                listener(action)

    def publish(self, action: Publish) -> None:
        if action.target == "event":
            dispatcher = getattr(self.c, "event_dispatcher", None)
            if dispatcher is None or not dispatcher.enabled or dispatcher.producer is None:
                logger.debug("event %s not sent: the event dispatcher is off", action.routing_key)
                return
            with dispatcher.mutex:
                dispatcher.producer.publish(
                    action.body,
                    routing_key=action.routing_key,
                    exchange=dispatcher.exchange.name,
                    declare=[dispatcher.exchange],
                    serializer="json",
                    headers=action.headers,
                    retry=True,
                )
        elif action.target == "pidbox" and self.producer is not None:
            names = self.node.config.names
            exchange = pidbox_exchange(names)
            self.producer.publish(
                action.body,
                exchange=exchange,
                routing_key=action.routing_key,
                declare=[exchange],
                headers=action.headers,
                serializer="json",
                delivery_mode=1,
            )
        else:
            logger.debug("not published by the worker: %s %s", action.target, action.routing_key)

    # -- revoked ids (celery.worker.state.revoked is what stops tasks) ----

    def pull_revoked(self, now: float) -> None:
        """Ids the worker revoked itself (``revoke`` control command, state
        db) into the core's set, oldest first, before they are sent."""
        ours = self.node.revoked
        new = [task_id for task_id in worker_state.revoked if task_id not in ours]
        ours.update(new, now)

    def push_revoked(self, now: float) -> int:
        """Ids the core accepted from peers into the worker's own set, so
        that Celery refuses to run those tasks ([REVOKED-3]: stamped now)."""
        theirs = worker_state.revoked
        added = 0
        for task_id in self.node.revoked.as_list(now):
            if task_id not in theirs:
                theirs.add(task_id)
                added += 1
        return added

    # -- Mingle's two sides -------------------------------------------------

    def mingle(self) -> SyncResult | None:
        """One ``hello`` round on the consumer's connection, driven by the
        core: it publishes the request, is fed the replies and says when
        the round is over (as soon as the peers answered, [MINGLE-2])."""
        c = self.c
        # A connection of the round's own: closing a Redis channel waits for
        # its pending BRPOP (up to 1 s), so it is released off the start-up
        # path, in the background, once the round is over.
        conn = c.app.connection_for_read()
        conn.ensure_connection(max_retries=3)
        channel = conn.channel()
        names = self.node.config.names
        oid = self.node.config.reply_routing_key
        queue = reply_queue(names, oid, exclusive=False)
        consumer = KombuConsumer(
            channel,
            queues=[queue],
            on_message=self._on_reply,
            accept=[JSON_CONTENT_TYPE],
            no_ack=True,
        )
        try:
            consumer.consume()
            self.producer = Producer(channel)

            def begin(node: Node, now: float) -> list[Action]:
                self.pull_revoked(now)
                return self.ensure_started(now)

            if self.run("Mingle", begin) is None:
                return None
            while self.node.mingle is not None and "Mingle" not in self.failed:
                wait = max(0.0, self.node.next_wakeup(time.time()) - time.time())
                try:
                    conn.drain_events(timeout=min(max(wait, 0.01), 0.1))
                except TimeoutError:
                    pass
                self.run("Mingle", lambda node, now: node.tick(now))
            self.run("Mingle", self._push_revoked)
            return self.last_sync
        finally:
            self.producer = None
            threading.Thread(
                target=_close_quietly, args=(conn,), name="wkctl-mingle-release", daemon=True
            ).start()

    def _push_revoked(self, node: Node, now: float) -> None:
        self.push_revoked(now)

    def _on_reply(self, message: Any) -> None:
        inbound = inbound_from_message(message)
        self.run("Mingle", lambda node, now: node.receive_reply(inbound, now))

    def answer_hello(self, from_node: Any, revoked: Any) -> Any:
        """The ``hello`` control command ([MINGLE-4], [MINGLE-5]): the
        core merges the asker's ids (bounded, checked) and builds the reply
        (list form, [REVOKED-5]); the ids then reach the worker's own set."""
        reply: list[Any] = [None]

        def answer(node: Node, now: float) -> list[Action]:
            self.pull_revoked(now)
            reply[0], actions = node.answer_hello(from_node, revoked, now)
            self.push_revoked(now)
            return actions

        self.run("Mingle", answer)
        return reply[0]


def _close_quietly(conn: Any) -> None:
    """Close a finished round's connection (a broker error there changes nothing)."""
    try:
        conn.release()
    except Exception as exc:  # the round is over; nothing depends on this close
        logger.debug("mingle: closing the round's connection: %r", exc)


_celery_hello = celery_control.Panel.data["hello"]


def _hello(state: Any, from_node: Any = None, revoked: Any = None, **kwargs: Any) -> Any:
    """Celery's ``hello`` control command, answered by the worker's core
    when the consumer is a hardened one (Celery's own otherwise)."""
    node = getattr(getattr(state, "consumer", None), "wkctl", None)
    if not isinstance(node, WorkerNode):
        return _celery_hello(state, from_node, revoked=revoked, **kwargs)
    return node.answer_hello(from_node, revoked)


# -- the steps ------------------------------------------------------------------


def _transport_ok(c: Any, step: str, without: bool) -> bool:
    if without:
        return False
    transport = WorkerNode.of(c).transport
    if transport in COMPATIBLE_TRANSPORTS:
        return True
    logger.warning(
        "wkctl %s disabled: transport %r is not one of %s; the worker starts without it",
        step,
        transport,
        ", ".join(sorted(COMPATIBLE_TRANSPORTS)),
    )
    return False


class Mingle(bootsteps.StartStopStep):  # type: ignore[misc]
    """Celery's Mingle step (``label``, ``requires``, ``start``, ``sync``,
    ``send_hello``, ``on_node_reply``, ``sync_with_node``,
    ``on_clock_event``, ``on_revoked_received``), each handing the work to
    the worker's core; see :class:`WorkerNode`."""

    label = "Mingle"
    requires = ("celery.worker.consumer.events:Events",)
    compatible_transports = COMPATIBLE_TRANSPORTS

    def __init__(self, c: Any, without_mingle: bool = False, **kwargs: Any) -> None:
        self.enabled = _transport_ok(c, "Mingle", without_mingle)
        self.node = WorkerNode.of(c)
        self.node.node.config.mingle = self.enabled
        super().__init__(c, without_mingle=without_mingle, **kwargs)

    def compatible_transport(self, app: Any) -> bool:
        return driver_type(app) in self.compatible_transports

    def start(self, c: Any) -> None:
        self.sync(c)

    def sync(self, c: Any) -> SyncResult | None:
        """Say hello and merge every usable reply ([MINGLE-1], [MINGLE-3]);
        returns the core's :class:`SyncResult` (``None`` if the step stopped)."""
        return self.send_hello(c)

    def send_hello(self, c: Any) -> SyncResult | None:
        return WorkerNode.of(c).mingle()

    def on_node_reply(self, c: Any, nodename: str, reply: Any) -> None:
        WorkerNode.of(c).run("Mingle", lambda node, now: node.on_node_reply(nodename, reply, now))

    def sync_with_node(self, c: Any, clock: Any = None, revoked: Any = None, **kwargs: Any) -> None:
        self.on_clock_event(c, clock)
        self.on_revoked_received(c, revoked)

    def on_clock_event(self, c: Any, clock: Any) -> None:
        def adjust(node: Node, now: float) -> None:
            node.on_clock_event(clock, now=now)

        WorkerNode.of(c).run("Mingle", adjust)

    def on_revoked_received(self, c: Any, revoked: Any) -> None:
        host = WorkerNode.of(c)

        def merge(node: Node, now: float) -> list[Action]:
            node.on_revoked_received(revoked, now)
            host.push_revoked(now)
            return []

        host.run("Mingle", merge)


class _HostTopics(set):  # type: ignore[type-arg]
    """``node.host_topics`` of a worker: every topic the step's
    ``election_handlers`` holds now (users add topics at any time)."""

    def __init__(self, handlers: Mapping[str, Callable[[Any], Any]]) -> None:
        super().__init__()
        self.handlers = handlers

    def __contains__(self, topic: object) -> bool:
        return topic in self.handlers


class Gossip(bootsteps.ConsumerStep):  # type: ignore[misc]
    """Celery's Gossip step, with its attributes and methods, driving the
    worker's core: membership from heartbeats ([GOSSIP-3], [GOSSIP-4]),
    elections decided only per [ELECT-3] .. [ELECT-7], JSON only
    ([MSG-1])."""

    label = "Gossip"
    requires = (Mingle,)
    compatible_transports = COMPATIBLE_TRANSPORTS

    def __init__(
        self,
        c: Any,
        without_gossip: bool = False,
        interval: float = 5.0,
        heartbeat_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        self.enabled = _transport_ok(c, "Gossip", without_gossip)
        self.app = c.app
        c.gossip = self
        self.hostname = c.hostname
        self.full_hostname = f"{c.hostname}.{c.pid}"
        self.on = _Bunch()
        self.timer = c.timer
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self._tref: Any = None
        self._tick_ref: Any = None
        self.event_handlers: dict[str, Callable[[Any], Any]] = {
            "worker.elect": self.on_elect,
            "worker.elect.ack": self.on_elect_ack,
        }
        self.clock = c.app.clock
        self.election_handlers: dict[str, Callable[[Any], Any]] = {"task": self.call_task}
        self.dispatcher: Any = None
        self.worker_node = host = WorkerNode.of(c)
        config = host.node.config
        config.gossip = self.enabled
        config.sweep_interval = interval
        host.node.host_topics = _HostTopics(self.election_handlers)
        host.listeners.append(self._on_core_action)
        super().__init__(c, **kwargs)

    def compatible_transport(self, app: Any) -> bool:
        return driver_type(app) in self.compatible_transports

    def start(self, c: Any) -> None:
        self.dispatcher = c.event_dispatcher
        host = self.worker_node
        if not host.node.started:  # Mingle is off: the core starts here
            host.run("Gossip", lambda node, now: host.ensure_started(now))
        super().start(c)

    def _run(self, fn: Callable[[Node, float], Iterable[Action] | None]) -> None:
        self.worker_node.run("Gossip", fn)

    # -- elections --------------------------------------------------------

    def election(self, id: str, topic: str, action: Any = None) -> None:
        """Stand in election ``id`` (the ``election`` control command)."""
        self._run(lambda node, now: node.election(id, topic, action, now))

    def call_task(self, task: Any) -> None:
        """The ``task`` topic: apply the signature with the app's routing."""
        try:
            if isinstance(task, Mapping):  # the wire form: {task, args, kwargs, options}
                task = self.app.signature(
                    task.get("task"),
                    args=task.get("args") or (),
                    kwargs=task.get("kwargs") or {},
                    **(task.get("options") or {}),
                )
            self.app.signature(task).apply_async()
        except Exception as exc:
            logger.exception("Could not call task: %r", exc)

    def on_elect(self, event: Any) -> None:
        self._run(lambda node, now: node.on_elect(event, now))

    def on_elect_ack(self, event: Any) -> None:
        self._run(lambda node, now: node.on_elect_ack(event, now))

    def _on_core_action(self, action: Action) -> None:
        """Run what the core reported: the won election's topic handler
        ([ELECT-8]) and the membership callbacks."""
        if isinstance(action, Elected):
            decision = action.decision
            handler = self.election_handlers.get(decision.topic)
            if decision.won and handler is not None:
                try:
                    handler(decision.action)
                except Exception as exc:  # the user's handler, not wkctl's
                    logger.error("election handler for topic %r failed: %r", decision.topic, exc)
        elif isinstance(action, MemberChanged):
            change = action.change
            callback = {
                "join": self.on_node_join,
                "leave": self.on_node_leave,
                "lost": self.on_node_lost,
            }[change.kind]
            callback(change.worker)

    # -- membership -------------------------------------------------------

    def on_node_join(self, worker: WorkerInfo) -> None:
        self._call_handlers(self.on.node_join, worker)

    def on_node_leave(self, worker: WorkerInfo) -> None:
        self._call_handlers(self.on.node_leave, worker)

    def on_node_lost(self, worker: WorkerInfo) -> None:
        self._call_handlers(self.on.node_lost, worker)

    def _call_handlers(self, handlers: set[Callable[..., Any]], *args: Any) -> None:
        for handler in list(handlers):
            try:
                handler(*args)
            except Exception as exc:  # the user's handler, not wkctl's
                logger.exception("Ignored error from handler %r: %r", handler, exc)

    def register_timer(self) -> None:
        for ref in (self._tref, self._tick_ref):
            if ref is not None:
                ref.cancel()
        self._tref = self.timer.call_repeatedly(self.interval, self.periodic)
        self._tick_ref = self.timer.call_repeatedly(TICK_INTERVAL, self._tick)

    def periodic(self) -> None:
        self._run(lambda node, now: node.periodic(now))

    def _tick(self) -> None:
        self._run(lambda node, now: node.tick(now))

    def get_consumers(self, channel: Any) -> list[KombuConsumer]:
        self.register_timer()
        return [
            gossip_consumer(
                channel,
                self.worker_node.node.config.names,
                self.worker_node.transport,
                f"{self.hostname}.{id(self):x}.{time.time():.0f}",
                partial(self.on_message, inbound_from_message),
                message_ttl=self.heartbeat_interval,
                exclusive=False,
            )
        ]

    def on_message(self, prepare: Callable[[Any], Inbound], message: Any) -> None:
        """One raw message of the event queue: the core decodes it (JSON
        only, bounded) and handles it; kombu never deserializes it."""
        inbound = prepare(message)
        self._run(lambda node, now: node.receive_event(inbound, now))

    def stop(self, c: Any) -> None:
        for ref in (self._tref, self._tick_ref):
            if ref is not None:
                ref.cancel()
        self._tref = self._tick_ref = None
        super().stop(c)


class _Bunch:
    """Celery's ``Gossip.on``: sets of join/leave/lost handlers."""

    def __init__(self) -> None:
        self.node_join: set[Callable[[WorkerInfo], Any]] = set()
        self.node_leave: set[Callable[[WorkerInfo], Any]] = set()
        self.node_lost: set[Callable[[WorkerInfo], Any]] = set()


# -- the consumer -----------------------------------------------------------------

_OURS: dict[Any, Any] = {CeleryMingle: Mingle, CeleryGossip: Gossip}
HEART_STEP = "celery.worker.consumer.heart.Heart"
CONTROL_STEP = "celery.worker.consumer.control.Control"


def _admitted_request(
    host: WorkerNode, celery_on_message: Callable[[Any, Any], None], body: Any, message: Any
) -> None:
    """Celery's ``Pidbox.on_message``, for the requests the core admits.

    Celery answers a request kombu cannot even dispatch (a body that is not
    an object, no ``method``, a ``destination`` that is not a list, an
    unknown ``matcher``, a ``reply_to`` that is not ours) by resetting its
    control channel, which on Redis with kombu 5.2-5.6 silences the worker
    for good (DEFECT-15, DEFECT-27).  Such a request is rejected with the
    reason instead ([PIDBOX-21]); every other one reaches Celery unchanged.
    If the check itself fails (a wkctl bug), the step stops and Celery sees
    every request again, as a stock worker does."""
    admitted = [True]

    def admit(node: Node, now: float) -> list[Action]:
        admitted[0], actions = node.admit_request(body, now)
        return actions

    host.run("Control", admit)
    if admitted[0]:
        celery_on_message(body, message)


class _Blueprint(CeleryConsumer.Blueprint):  # type: ignore[misc,name-defined]
    """Celery's consumer blueprint with its Mingle and Gossip replaced."""

    name = "Consumer"
    default_steps = [
        {
            "celery.worker.consumer.mingle:Mingle": f"{__name__}:Mingle",
            "celery.worker.consumer.gossip:Gossip": f"{__name__}:Gossip",
        }.get(step, step)
        for step in CeleryConsumer.Blueprint.default_steps
    ]

    def _firstpass(self, steps: dict[str, Any]) -> None:
        # Celery's other steps require Celery's Mingle/Gossip by class
        # (Tasks requires Mingle): point those requirements at ours, or the
        # graph would pull Celery's steps back in.
        from kombu.utils.imports import symbol_by_name

        for step in steps.values():
            step.requires = [
                _OURS.get(symbol_by_name(dep), symbol_by_name(dep)) for dep in step.requires
            ]
        # Celery's graph happens to start Heart last; with our steps it would
        # come before Mingle, and worker-online would carry the clock from
        # before the sync.  Heart after Gossip (after Mingle) keeps the order.
        heart = steps.get(HEART_STEP)
        if heart is not None and Gossip not in heart.requires:
            heart.requires = [*heart.requires, Gossip]
        super()._firstpass(steps)


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer with wkctl's Mingle and Gossip (``install`` makes
    it the app's ``worker_consumer``)."""

    Blueprint = _Blueprint

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        celery_control.Panel.data["hello"] = _hello
        worker_state.SOFTWARE_INFO[HARDENED_FIELD] = __version__
        app = kwargs.get("app")
        if app is not None:
            # kombu's pidbox adjusts a clock of its own from each request's
            # ``clock`` header, unbounded (a string header makes the worker
            # drop the request): give it the app's bounded clock, which is
            # also what [CLOCK-5] asks (DEFECT-11).  Done before the
            # blueprint builds the pidbox node, which binds ``adjust``.
            if not isinstance(app.clock, BoundedClock):
                app.clock = BoundedClock(app.clock.value)
            app.control.mailbox.clock = app.clock
        super().__init__(*args, **kwargs)
        # Celery's pidbox, behind the core's request check (see
        # _admitted_request); it binds ``on_message`` when it starts.
        box = getattr(self.blueprint.steps.get(CONTROL_STEP), "box", None)
        if box is not None:
            box.on_message = partial(_admitted_request, WorkerNode.of(self), box.on_message)
