"""Celery's ``Mingle`` and ``Gossip`` bootsteps, as wkctl classes.

People arrive here from Celery's API reference
(``celery.worker.consumer.mingle.Mingle``,
``celery.worker.consumer.gossip.Gossip``).  These classes carry the same
names, attributes and methods with the same meaning, so that reading one
reference explains the other.  They hold no protocol logic: every rule
lives in the sans-IO core (:mod:`wkctl.protocol.node` and the modules it
uses) and these methods hand work to it.  Where Celery's behaviour is a
defect that the spec fixes, the method's docstring says what wkctl does
instead and cites the spec statement (``spec/protocol.md``).

What Celery calls the consumer ``c`` is, here, a :class:`NodeHandle`: one
node hosted by a :class:`~wkctl.protocol.binding.Binding`.  Build the steps
the way Celery's consumer does, before the node starts::

    binding = Binding(settings)
    c = binding.add_node("me@host")
    mingle = Mingle(c)                  # decides whether the node mingles
    gossip = Gossip(c, interval=5.0)    # ... and whether it gossips
    gossip.on.node_join.add(lambda worker: print(worker.hostname, "joined"))
    binding.start()                     # the node starts: hello, then worker-online

Constructing a step decides ``enabled`` (``without_mingle`` /
``without_gossip``, and whether the transport supports the step) and
writes it into the node's configuration, so the node core does at start
exactly what Celery's consumer does when it starts these steps: the Mingle
round (``hello``), then ``worker-online`` and heartbeats, event
consumption, the liveness sweep and elections.  A disabled step logs one
line saying why.  In wkctl's node one switch covers Celery's Gossip *and*
Heart steps (like ``wkctl node --without-gossip``): a node that does not
follow heartbeats does not send them either.

Threads: kombu connections are not thread-safe, so everything that
publishes runs in the binding's loop thread.  Methods that publish
(``election``, ``call_task``, ``on_elect``, ``on_elect_ack``,
``on_message``, ``periodic``) hand their work to the loop and, when called
from another thread, wait until it is done (``wait`` seconds at most);
called from the loop itself (a join handler, an election handler) they
queue it and return at once.  Methods that only change the node's state
(``on_clock_event``, ``on_revoked_received``) run under the binding's lock
in the caller's thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer

from .binding import inbound_from_message
from .broker import BrokerSettings, event_queue, transport_of
from .gossip import Callbacks, WorkerInfo
from .host import SharedClock
from .mingle import SyncResult
from .node import Action, Inbound, Log, Node, Publish
from .vocab import CELERY_GOSSIP_DRIVERS, CELERY_MINGLE_DRIVERS, WKCTL_EXTENSION_DRIVERS
from .wire import JSON_CONTENT_TYPE, Rejected, decode_body, pidbox_request

if TYPE_CHECKING:
    from .binding import NodeHandle

__all__ = [
    "Events",
    "Gossip",
    "Mingle",
    "driver_type",
    "inbound_from_message",
]

logger = logging.getLogger("wkctl.bootsteps")

#: Longest a method waits for the binding's loop to run the work it handed over.
DEFAULT_WAIT = 5.0


class Events:
    """The event dispatcher step that :class:`Mingle` requires.

    Celery's ``celery.worker.consumer.events.Events`` creates the
    consumer's event dispatcher; in wkctl the binding's producer is that
    dispatcher (it publishes the node core's events), so this class only
    names the dependency, so that ``Mingle.requires`` reads as in Celery.
    """

    label = "Events"
    name = "celery.worker.consumer.events.Events"


# -- adapters between Celery's ``c`` and the binding -------------------------


def driver_type(obj: Any) -> str:
    """The kombu driver type (``amqp``, ``redis``, ``filesystem``...) of a
    Celery app, a kombu ``Connection``, :class:`BrokerSettings`, a
    ``Binding``, a ``NodeHandle`` or a URL, without connecting.

    It is what Celery's ``compatible_transport`` compares
    (``conn.transport.driver_type``): ``sentinel://`` is ``redis``,
    ``pyamqp://`` is ``amqp``.
    """
    if isinstance(obj, str):
        obj = BrokerSettings(url=obj)
    binding = getattr(obj, "binding", None)
    if binding is not None and hasattr(binding, "settings"):
        obj = binding.settings
    elif isinstance(getattr(obj, "settings", None), BrokerSettings):
        obj = obj.settings
    if isinstance(obj, BrokerSettings):
        conn = Connection(obj.url, transport_options=dict(obj.transport_options))
        try:
            return str(conn.transport.driver_type)
        except Exception:  # an unknown transport: fall back to the URL scheme
            return transport_of(obj.url)
        finally:
            conn.release()
    if isinstance(obj, Connection):
        return str(obj.transport.driver_type)
    if hasattr(obj, "connection_for_read"):  # a Celery app, as Celery asks it
        with obj.connection_for_read() as conn:
            return str(conn.transport.driver_type)
    raise TypeError(f"cannot tell the transport of {obj!r}")


def _node(c: NodeHandle) -> Node:
    return c.node


def _log(c: NodeHandle, level: int, message: str, exc: BaseException | None = None) -> None:
    """Log as the binding does (``<node>: <message>``, with ``exc``'s
    traceback when given) and keep the line in the handle's log history,
    next to the core's own lines."""
    logger.log(level, "%s: %s", c.name, message, exc_info=exc)
    logs = getattr(c, "logs", None)
    if logs is not None:
        logs.append((level, message))


def _loop_owns_lock(c: NodeHandle) -> bool:
    """True when the caller is inside the binding's loop (which holds the
    binding's lock while it runs the node and its handlers)."""
    is_owned = getattr(c.binding.lock, "_is_owned", None)
    return bool(is_owned()) if is_owned is not None else False


def _in_loop(
    c: NodeHandle,
    fn: Callable[[Node, float], Iterable[Action] | None],
    wait: float | None = DEFAULT_WAIT,
) -> bool:
    """Run ``fn(node, now)`` in the binding's loop; its actions are performed
    there (published, logged).  Waits until done unless called from the
    loop itself or ``wait`` is None (then it runs right after the caller
    returns).  Returns False only when the loop did not run it within
    ``wait`` seconds (a stopped binding)."""
    done = threading.Event()

    def run(node: Node, now: float) -> Iterable[Action] | None:
        try:
            return fn(node, now)
        finally:
            done.set()

    c.submit(run)
    if wait is None or _loop_owns_lock(c):
        return True
    return done.wait(wait)


def _step_enabled(
    c: NodeHandle, step: str, without: bool, compatible: frozenset[str], why: str
) -> bool:
    """Celery's ``enabled = not without_<step> and compatible_transport(...)``,
    logging why a step is off ([TRANSPORT-10])."""
    if without:
        _log(c, logging.INFO, f"{step} disabled: without_{step.lower()} is set")
        return False
    transport = driver_type(c)
    if transport in compatible:
        return True
    _log(
        c,
        logging.WARNING,
        f"{step} disabled: transport {transport!r} is not one of "
        f"{', '.join(sorted(compatible))} ({why}, [TRANSPORT-10])",
    )
    return False


def _configure(c: NodeHandle, setting: str, value: bool, step: str) -> None:
    """Write the step's decision into the node's configuration.

    Only a node that has not started yet can follow it; a step built for a
    running node says so (it applies at the node's next start).
    """
    config = _node(c).config
    if getattr(config, setting) == value:
        return
    started = getattr(c, "started", None)
    if started is not None and started.is_set():
        _log(
            c,
            logging.WARNING,
            f"{step}: the node is already running with {setting}={getattr(config, setting)}; "
            f"build the step before the binding starts the node",
        )
        return
    setattr(config, setting, value)


# -- Mingle ---------------------------------------------------------------------


class Mingle:
    """Bootstep syncing state with neighbor nodes.

    At startup (and after every reconnection) this syncs the logical clock
    and the revoked task ids with the other nodes of the cluster
    ([MINGLE-1]).  The node core runs that round itself when the binding
    starts the node; :meth:`start` / :meth:`sync` run another one on demand,
    through the methods below, exactly as Celery's step is structured.
    """

    label = "Mingle"
    requires: tuple[Any, ...] = (Events,)
    #: Celery's ``{'amqp', 'redis', 'gcpubsub'}`` plus wkctl's extensions
    #: (the embedded ``filesystem`` broker), see [TRANSPORT-10].
    compatible_transports: frozenset[str] = CELERY_MINGLE_DRIVERS | WKCTL_EXTENSION_DRIVERS

    def __init__(self, c: NodeHandle, without_mingle: bool = False, **kwargs: Any) -> None:
        """Decide whether the step runs, as Celery does:
        ``enabled = not without_mingle and compatible_transport(...)``.

        A disabled step logs why, and the node then starts without a
        ``hello`` round (its clock counts as synced at once).  ``timeout``
        (keyword) bounds the replies :meth:`send_hello` collects (default:
        the node's ``mingle_timeout``, 1 s as in Celery, [MINGLE-2]).
        """
        self.c = c
        self.without_mingle = without_mingle
        self.timeout = float(kwargs.pop("timeout", _node(c).config.mingle_timeout))
        self.kwargs = kwargs
        self.enabled = _step_enabled(
            c,
            "Mingle",
            without_mingle,
            self.compatible_transports,
            "peers there are not known to answer hello",
        )
        _configure(c, "mingle", self.enabled, "Mingle")

    def compatible_transport(self, app_or_connection: Any) -> bool:
        """Whether the broker's transport is one this step runs on.

        Accepts what Celery's does (an app: its ``connection_for_read()``'s
        driver type) and also a kombu ``Connection``, ``BrokerSettings``, a
        ``Binding``, a ``NodeHandle`` or a URL.
        """
        return driver_type(app_or_connection) in self.compatible_transports

    def start(self, c: NodeHandle) -> SyncResult | None:
        """Celery's ``start``: :meth:`sync`.  Does nothing (returns ``None``)
        when the step is disabled, as Celery's blueprint skips a disabled
        step."""
        if not self.enabled:
            _log(c, logging.DEBUG, "mingle: step disabled, not syncing")
            return None
        return self.sync(c)

    def sync(self, c: NodeHandle) -> SyncResult:
        """Say hello and merge every usable reply ([MINGLE-1], [MINGLE-3]):
        one round of the core's Mingle (the node stays online).

        Logs Celery's lines (``mingle: searching for neighbors``, ``mingle:
        sync with N nodes``, ``mingle: sync complete`` / ``mingle: all
        alone``) and, per [MINGLE-8], each peer whose reply could not be
        used.  Celery returns nothing; this returns the core's
        :class:`SyncResult` (peers synced, failures, ids added, clock).
        """
        return self._round(c)[1]

    def send_hello(self, c: NodeHandle) -> dict[str, Any]:
        """Broadcast ``hello {from_node, revoked}`` and return the replies as
        ``{nodename: reply}``, without this node's own reply ([MINGLE-1],
        [MINGLE-5]).

        The round is the core's: revoked ids oldest first in the list form
        ([REVOKED-5]), clock headers applied ([CLOCK-3], [CLOCK-5]), and it
        ends as soon as the replies have settled ([MINGLE-2]), within
        ``timeout`` at most.  Every usable reply is also merged, as the
        core does with each reply it receives.
        """
        return self._round(c)[0]

    def _round(self, c: NodeHandle) -> tuple[dict[str, Any], SyncResult]:
        node = _node(c)
        rounds = len(c.syncs)
        session: list[Any] = []

        def begin(node: Node, now: float) -> list[Action]:
            node.config.mingle_timeout = self.timeout
            out = node.sync(now)
            session.append(node.mingle)
            return out

        _in_loop(c, begin, None)
        c.wait_for(lambda h: len(h.syncs) > rounds, self.timeout + DEFAULT_WAIT)
        replies = dict(session[0].replies) if session and session[0] is not None else {}
        replies.pop(node.name, None)
        return replies, node.last_sync or SyncResult(clock=node.clock.value)

    def _apply(self, c: NodeHandle, fn: Callable[[Node, float, list[Action]], Any]) -> Any:
        """Run a state-only core method under the binding's lock in the
        caller's thread, and log the lines it returned."""
        out: list[Action] = []
        with c.binding.lock:
            value = fn(_node(c), time.time(), out)
        for action in out:
            if isinstance(action, Log):
                _log(c, action.level, action.message)
        return value

    def on_node_reply(self, c: NodeHandle, nodename: str, reply: Any) -> bool:
        """Merge one peer's reply; a reply that cannot be used (``null``,
        ``{"error": ...}``, not an object) is logged and skipped, never
        fatal ([MINGLE-3], [MINGLE-8]).  Celery passes any truthy reply to
        :meth:`sync_with_node`, so an error reply counts as a sync there
        (DEFECT-25).  Returns whether the reply was used."""
        result = SyncResult()

        def apply(node: Node, now: float, out: list[Action]) -> bool:
            out.extend(node.on_node_reply(nodename, reply, now, result))
            return nodename in result.peers

        return bool(self._apply(c, apply))

    def sync_with_node(
        self, c: NodeHandle, clock: Any = None, revoked: Any = None, **kwargs: Any
    ) -> int:
        """Apply one reply's ``clock`` and ``revoked`` (other keys are
        ignored, as in Celery, [MSG-2]).  Returns the number of ids added."""
        self.on_clock_event(c, clock)
        return self.on_revoked_received(c, revoked)

    def on_clock_event(self, c: NodeHandle, clock: Any) -> int:
        """Adjust the clock to a peer's value when one is given, otherwise
        forward it ([MINGLE-3], [CLOCK-2]): the core's ``on_clock_event``.

        Celery adopts any value (``app.clock.adjust(clock)``); the core
        applies the poisoning bounds first ([CLOCK-1], [CLOCK-6],
        [CLOCK-7]): a value that is not a clock, or jumps too far, is logged
        and the clock only moves forward by one.  Returns the clock after
        the event.
        """
        return int(
            self._apply(
                c, lambda node, now, out: node.on_clock_event(clock, "mingle peer", now, out)
            )
        )

    def on_revoked_received(self, c: NodeHandle, revoked: Any) -> int:
        """Merge a peer's revoked ids, in either wire form ([REVOKED-4]):
        the core's ``on_revoked_received``.

        Celery 4.2-5.6 kept the peer's ``LimitedSet`` stamps (monotonic
        times of another host); wkctl stamps received ids with the local
        time ([REVOKED-3]), so they expire on this node's schedule.  Ids
        that are not sane strings are skipped and a list longer than the
        bound is truncated, oldest first ([REVOKED-1]).  Returns the number
        of ids added.
        """
        merged = self._apply(c, lambda node, now, out: node.on_revoked_received(revoked, now))
        if merged.skipped or merged.truncated:
            _log(
                c,
                logging.WARNING,
                f"mingle: skipped {merged.skipped} bad revoked ids, truncated {merged.truncated}",
            )
        return int(merged.added)


# -- Gossip ---------------------------------------------------------------------

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
        names = settings.names
        queue = event_queue(
            names,
            settings.transport,
            f"gossip-{uuid.uuid4()}",
            "worker.#",
            message_ttl=self.heartbeat_interval,
        )
        return [
            Consumer(
                channel,
                queues=[queue],
                on_message=partial(self.on_message, inbound_from_message),
                accept=[JSON_CONTENT_TYPE],
                no_ack=True,
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
