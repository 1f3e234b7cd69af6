"""The ``Gossip`` step (Celery: ``celery.worker.consumer.gossip.Gossip``)
over the sans-IO core; see :mod:`wkctl.protocol.bootsteps`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

from kombu import Consumer

from .binding import inbound_from_message
from .broker import BrokerSettings, gossip_consumer
from .gossip import Callbacks, WorkerInfo
from .host import SharedClock
from .node import Inbound, Log, Publish
from .vocab import CELERY_GOSSIP_DRIVERS, WKCTL_EXTENSION_DRIVERS
from .wire import Rejected, decode_body, pidbox_request

if TYPE_CHECKING:
    from .binding import NodeHandle
from .steps_common import (
    DEFAULT_WAIT,
    _configure,
    _in_loop,
    _log,
    _node,
    _step_enabled,
    driver_type,
)
from .steps_mingle import Mingle

#: What an election topic runs when this node wins: called with the action.
ElectionHandler = Callable[[Any], Any]


class ElectionHandlers(MutableMapping[str, ElectionHandler]):
    """Celery's ``election_handlers``: ``{topic: handler(action)}``.

    Registering a topic here claims it for the host (``node.host_topics``)
    and registers it with the binding's handle, whose handlers take
    ``(action, decision)``: the winner's loop runs it once when the core
    reports the decision ([ELECT-8]).  A topic without a handler is logged
    by the core and its action not run.
    """

    def __init__(self, gossip: Gossip) -> None:
        self._gossip = gossip
        self._handlers: dict[str, ElectionHandler] = {}

    def __getitem__(self, topic: str) -> ElectionHandler:
        return self._handlers[topic]

    def __setitem__(self, topic: str, handler: ElectionHandler) -> None:
        self._handlers[topic] = handler
        gossip = self._gossip

        def run(action: Any, decision: Any, topic: str = topic) -> None:
            gossip._run_election_handler(topic, action)

        gossip.c.election_handlers[topic] = run
        _node(gossip.c).host_topics.add(topic)

    def __delitem__(self, topic: str) -> None:
        del self._handlers[topic]
        self._gossip.c.election_handlers.pop(topic, None)
        _node(self._gossip.c).host_topics.discard(topic)

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"ElectionHandlers({self._handlers!r})"


class Gossip:
    """Bootstep consuming events from other nodes.

    It keeps the logical clock up to date from every worker event, tracks
    which peers are alive from their heartbeats ([GOSSIP-3], [GOSSIP-4]),
    calls the ``on.node_join`` / ``on.node_leave`` / ``on.node_lost``
    handlers, and takes part in elections ([ELECT-1] .. [ELECT-10]).
    """

    label = "Gossip"
    requires: tuple[Any, ...] = (Mingle,)
    #: Celery's ``{'amqp', 'redis'}`` plus wkctl's extensions (the embedded
    #: ``filesystem`` broker), see [TRANSPORT-10].
    compatible_transports: frozenset[str] = CELERY_GOSSIP_DRIVERS | WKCTL_EXTENSION_DRIVERS

    def __init__(
        self,
        c: NodeHandle,
        without_gossip: bool = False,
        interval: float = 5.0,
        heartbeat_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        """Decide whether the step runs and wire it to the node.

        ``interval`` is how often dead peers are swept ([GOSSIP-4], Celery:
        5 s); ``heartbeat_interval`` is, as in Celery, the message TTL of
        the event queue :meth:`get_consumers` declares (a heartbeat older
        than that is stale, [TRANSPORT-7]).  ``wait`` (keyword) bounds how
        long the methods that hand work to the binding's loop wait for it.
        Like Celery, this sets ``c.gossip = self``.
        """
        node = _node(c)
        self.c = c
        self.app = None  # Celery's app: wkctl nodes have none
        self.wait: float | None = kwargs.pop("wait", DEFAULT_WAIT)
        self.kwargs = kwargs
        self.hostname = node.name
        self.full_hostname = f"{node.name}.{node.config.pid}"
        self.on = Callbacks()
        self.interval = float(interval)
        self.heartbeat_interval = float(heartbeat_interval)
        # Celery code reads and forwards gossip.clock from any thread, while
        # the loop uses the same clock: from here on it is the locked one.
        with c.binding.lock:
            node.clock = SharedClock.adopt(node.clock)
        self.clock = node.clock
        self.timer: threading.Thread | None = None
        self._timer_stop: threading.Event | None = None
        self.event_handlers: dict[str, Callable[[Any], Any]] = {
            "worker.elect": self.on_elect,
            "worker.elect.ack": self.on_elect_ack,
        }
        self.enabled = _step_enabled(
            c,
            "Gossip",
            without_gossip,
            self.compatible_transports,
            "heartbeats are not routed there",
        )
        _configure(c, "gossip", self.enabled, "Gossip")
        self.election_handlers: ElectionHandlers = ElectionHandlers(self)
        if self.enabled:
            if not (getattr(c, "started", None) and c.started.is_set()):
                node.config.sweep_interval = self.interval
            c.on.node_join.add(self.on_node_join)
            c.on.node_leave.add(self.on_node_leave)
            c.on.node_lost.add(self.on_node_lost)
            self.election_handlers["task"] = self.call_task
        c.gossip = self  # type: ignore[attr-defined]

    def compatible_transport(self, app: Any) -> bool:
        """Whether the broker's transport is one this step runs on (same
        arguments as :meth:`Mingle.compatible_transport`)."""
        return driver_type(app) in self.compatible_transports

    def start(self, c: NodeHandle) -> bool:
        """Celery's ``start``: begin following the cluster.  The binding
        already consumes the node's worker events (:meth:`get_consumers`
        builds a consumer for a connection of your own), so this starts the
        sweep timer (:meth:`register_timer`).  Does nothing (returns False)
        when the step is disabled, as Celery's blueprint skips a disabled
        step; :meth:`stop` undoes it."""
        if not self.enabled:
            _log(c, logging.DEBUG, "gossip: step disabled, not starting")
            return False
        self.register_timer()
        return True

    # -- elections --------------------------------------------------------

    def election(self, id: str, topic: str, action: Any = None) -> bool:
        """Stand in election ``id``: publish this node's ``worker-elect``
        ``{id, topic, action, cver: 1}`` with its clock forwarded ([ELECT-1]).

        This is what the ``election`` control command does on each node;
        the request is handed to the node core exactly as that command
        reaches it.  The core fixes the set of expected participants now
        (alive peers plus itself, [ELECT-4]).  Returns whether the loop
        published it within ``wait`` seconds.
        """
        request = Inbound.json(
            pidbox_request(
                "election",
                {"id": id, "topic": topic, "action": action},
                destination=[self.hostname],
            )
        )
        return _in_loop(self.c, lambda node, now: node.receive_pidbox(request, now), self.wait)

    def call_task(self, task: Any) -> bool:
        """Apply a task signature (the ``task`` election topic, [ELECT-8]):
        the core's ``call_task`` builds the Celery task message (protocol
        2, JSON, routed as ``app.signature(task).apply_async()`` routes it
        without custom routes) and the loop publishes it.

        ``task`` is a signature in dict form (``{"task": name, "args": [...],
        "kwargs": {...}, "options": {...}}``; a Celery ``Signature`` is one)
        or a task name.  An unusable signature is logged ("Could not call
        task"), as in Celery.  Returns False for an unusable signature or
        when the loop did not publish it within ``wait`` seconds.
        """
        actions = _node(self.c).call_task(task)
        if not any(isinstance(a, Publish) for a in actions):
            for action in actions:
                if isinstance(action, Log):
                    _log(self.c, action.level, action.message)
            return False
        return _in_loop(self.c, lambda node, now: actions, self.wait)

    def on_elect(self, event: Mapping[str, Any]) -> bool:
        """A ``worker-elect`` request: record it and acknowledge it with
        ``worker-elect-ack`` ([ELECT-2]).

        Differences from Celery, all in the core: an ack is sent once per
        (election id, sender), so a duplicate request is not acknowledged
        twice; a request lacking ``id``, ``clock``, ``hostname``, ``pid``,
        ``topic`` or ``cver`` is logged and dropped, not acknowledged
        ([ELECT-10]); and the first request of a sender counts, so a second
        one cannot change the outcome.  Returns whether the loop handled it
        within ``wait`` seconds.
        """
        return self._feed_event(event, "worker.elect")

    def on_elect_ack(self, event: Mapping[str, Any]) -> bool:
        """A ``worker-elect-ack``: count it, and decide once complete.

        Celery counts ack *messages* and decides once there are as many as
        alive workers, possibly before every request arrived (so nodes can
        disagree), crashes when it is the lone node (``IndexError`` in
        ``sort_heap``) and breaks ties by heap order.  The core counts acks
        per distinct node and decides only once every expected participant's
        request *and* ack arrived ([ELECT-5]); a lone node elects itself
        ([ELECT-6]); the winner is the lowest ``(clock, "hostname.pid")``, a
        total order ([ELECT-3]); an election still open after the node's
        ``election_timeout`` (10 s) is decided among the requests received
        and discarded ([ELECT-7], [ELECT-9]).  The winner runs the topic's
        handler from :attr:`election_handlers` once ([ELECT-8]).
        """
        return self._feed_event(event, "worker.elect.ack")

    def _feed_event(self, event: Mapping[str, Any], routing_key: str) -> bool:
        hostname = event.get("hostname") if isinstance(event, Mapping) else None
        inbound = Inbound.json(
            event, {"hostname": hostname} if isinstance(hostname, str) else {}, routing_key
        )
        return _in_loop(self.c, lambda node, now: node.receive_event(inbound, now), self.wait)

    def _run_election_handler(self, topic: str, action: Any) -> None:
        handler = self.election_handlers.get(topic)
        if handler is None:
            _log(self.c, logging.ERROR, f"Unknown election topic {topic!r}")
            return
        _log(self.c, logging.INFO, f"running the action of topic {topic!r} (election won)")
        handler(action)

    # -- membership -------------------------------------------------------

    def on_node_join(self, worker: WorkerInfo) -> None:
        """A peer joined (first heartbeat, or ``worker-online``, [GOSSIP-4]):
        call every handler in ``on.node_join``.

        Called by the binding's loop when the core reports the change;
        ``worker`` is the core's record of the peer
        (``hostname``, ``pid``, ``freq``, ``sw_ident``, ``sw_ver``...)
        rather than a ``celery.events.state.Worker``.  A failing handler is
        logged and the others still run.  This node never joins itself
        ([GOSSIP-8]).
        """
        _log(self.c, logging.DEBUG, f"{worker.hostname} joined the party")
        self._call_handlers(self.on.node_join, worker)

    def on_node_leave(self, worker: WorkerInfo) -> None:
        """A peer left cleanly (``worker-offline``): call ``on.node_leave``."""
        _log(self.c, logging.DEBUG, f"{worker.hostname} left")
        self._call_handlers(self.on.node_leave, worker)

    def on_node_lost(self, worker: WorkerInfo) -> None:
        """A peer's heartbeats expired ([GOSSIP-3]): call ``on.node_lost``.

        Celery's liveness window starts at the *sender's* timestamp, so a
        peer with a skewed wall clock is lost at once or never; the core
        measures from the local time the heartbeat arrived and bounds the
        advertised ``freq`` ([GOSSIP-7]).
        """
        _log(self.c, logging.DEBUG, f"missed heartbeat from {worker.hostname}")
        self._call_handlers(self.on.node_lost, worker)

    def _call_handlers(self, handlers: set[Callable[..., Any]], *args: Any) -> None:
        for handler in list(handlers):
            try:
                handler(*args)
            except Exception as exc:
                _log(self.c, logging.ERROR, f"Ignored error from handler {handler!r}: {exc!r}")

    def register_timer(self) -> None:
        """Call :meth:`periodic` every ``interval`` seconds (replacing a
        previous timer), as Celery's ``timer.call_repeatedly`` does.

        The node core also sweeps on its own every ``interval`` seconds
        (the step sets the node's ``sweep_interval``); :meth:`periodic` is
        idempotent, so the two never report a peer lost twice.
        """
        self.cancel_timer()
        stop = threading.Event()
        self._timer_stop = stop

        def repeat() -> None:
            while not stop.wait(self.interval):
                try:
                    self.periodic()
                except Exception as exc:  # wkctl's bug: logged in full; the timer survives
                    _log(self.c, logging.ERROR, f"gossip: periodic sweep failed: {exc!r}", exc)

        self.timer = threading.Thread(
            target=repeat, name=f"wkctl-gossip-{self.hostname}", daemon=True
        )
        self.timer.start()

    def cancel_timer(self) -> None:
        """Stop the timer started by :meth:`register_timer` (Celery: ``_tref.cancel()``)."""
        if self._timer_stop is not None:
            self._timer_stop.set()
        timer, self._timer_stop, self.timer = self.timer, None, None
        # A sweep already running finishes first: once this returns, no
        # periodic() call is under way (unless called from the timer itself).
        if timer is not None and timer is not threading.current_thread():
            timer.join((self.wait or 0.0) + self.interval)

    def stop(self, c: NodeHandle | None = None) -> None:
        """Stop the step's timer (the consumers are the caller's to cancel)."""
        self.cancel_timer()

    def periodic(self) -> bool:
        """Forget the peers whose heartbeats expired and call
        :meth:`on_node_lost` for each ([GOSSIP-3], [GOSSIP-4]): the core's
        ``periodic`` (``missed heartbeat from ...`` logged, the loss in the
        handle's ``changes``).  Returns whether the loop ran it within
        ``wait``."""
        return _in_loop(self.c, lambda node, now: node.periodic(now), self.wait)

    # -- consuming --------------------------------------------------------

    def get_consumers(self, channel: Any) -> list[Consumer]:
        """A kombu ``Consumer`` of worker events for ``channel``, as Celery's
        Gossip builds it: an event queue ``<event_queue_prefix>.<uuid>``
        bound to the event exchange with ``worker.#``, message TTL
        ``heartbeat_interval``, auto-deleted ([TRANSPORT-7]), accepting JSON
        only ([MSG-1]); its messages go to :meth:`on_message`.  Also starts
        the sweep timer (:meth:`register_timer`), as Celery does here.

        The binding already consumes worker events for its nodes; use this
        to feed the node from a connection of your own.
        """
        self.register_timer()
        settings: BrokerSettings = self.c.binding.settings
        return [
            gossip_consumer(
                channel,
                settings.names,
                settings.transport,
                f"gossip-{uuid.uuid4()}",
                partial(self.on_message, inbound_from_message),
                message_ttl=self.heartbeat_interval,
            )
        ]

    def on_message(self, prepare: Callable[[Any], Inbound], message: Any) -> None:
        """One message of the event queue.

        As in Celery: task events (routing key ``task.*``, which Redis
        delivers to every binding) are ignored before anything is read
        ([TRANSPORT-8]); ``worker.elect`` and ``worker.elect.ack`` go to
        :attr:`event_handlers` (:meth:`on_elect`, :meth:`on_elect_ack`);
        every other event goes to the node core, which adjusts the clock
        ([CLOCK-4]) and updates membership from heartbeats.

        ``prepare`` turns the kombu message into the core's raw
        :class:`Inbound` (Celery's is ``event_from_message``).  Bodies are
        decoded as JSON only; anything else is refused unread ([MSG-1],
        [SEC-1]), and a malformed event is dropped without harm ([GOSSIP-5]).
        """
        routing_key = str((getattr(message, "delivery_info", None) or {}).get("routing_key") or "")
        if routing_key.split(".", 1)[0] == "task":
            return
        inbound = prepare(message)
        handler = self.event_handlers.get(routing_key)
        if handler is not None:
            node = _node(self.c)
            try:
                event = decode_body(
                    inbound.body, inbound.content_type, inbound.content_encoding, node.config.limits
                )
            except Rejected as exc:
                _log(self.c, logging.WARNING, f"gossip: refused a {routing_key} event: {exc}")
                return
            if isinstance(event, Mapping):
                handler(event)
                return
        _in_loop(self.c, lambda node, now: node.receive_event(inbound, now), None)
