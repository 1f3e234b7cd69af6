"""Cluster metrics counted from the event stream (sans-IO).

The counting rules behind ``wkctl exporter`` and ``wkctl top``: plain
objects fed with the same decoded, stamped events that go into
:class:`~wkctl.protocol.state.State` (and with that State, read after it
took the event), with the time passed in.  No I/O, no locks, no Prometheus:
the exporter's adapter turns :class:`ClusterMetrics` into metric families at
scrape time, ``top`` draws it.

Two families of figures:

* the ones of prometheus-exporter-celery 0.11.2 (the ``celery_*`` metrics
  its celery-mixin dashboards query), with the same label sets and the same
  label values: task counters per ``name`` / ``hostname`` / ``queue_name``
  (and ``exception`` on failures), made visible at zero for every counter
  as soon as a task of that label set is seen, the runtime histogram, the
  queue-wait histogram its later releases added (:func:`queue_wait`),
  worker up / active per ``hostname`` (the part of the node name after
  ``@``, or the whole node name), queue gauges;
* ``wkctl_*`` figures none of them has: elections, Lamport clocks, clock
  drift, events rejected, workers lost and rejoined, revoked-set sizes,
  ingest lag, broker connection.

Bounded: every label whose values come from peers (task names, hostnames,
exception types, queues, event types, election topics) keeps its first
``max_label_values`` distinct values; later ones are counted under
``other``.  Series of a node not alive for ``purge_after`` seconds are
dropped (and its label slot freed).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, get_args

from .client import ElectionWatch, election_participants
from .state_core import ClusterState
from .state_drift import HEARTBEAT_DRIFT_MAX
from .vocab import ELECT_ACK_EVENT, ELECT_EVENT, HEARTBEAT_TYPES, TaskEventType

__all__ = [
    "TASK_COUNTERS",
    "QUEUE_WAIT_BUCKETS",
    "OTHER",
    "LabelCap",
    "MetricsConfig",
    "ClusterMetrics",
    "Failure",
    "Decided",
    "hostname_label",
    "exception_class",
    "eta_timestamp",
    "queue_wait",
]

#: Task event types counted (one ``celery_task_<subject>_total`` counter
#: each, as prometheus-exporter-celery's ``state_counters``).
TASK_COUNTERS: tuple[str, ...] = get_args(TaskEventType)
_COUNTED = frozenset(TASK_COUNTERS)

#: Raw (name, node, queue) triples whose label values are remembered.
_LABEL_CACHE = 20_000

#: The label value every value past a label's cap is counted under.
OTHER = "other"

#: The ``hostname`` label of task-sent series with ``generic_sent_hostname``.
GENERIC = "generic"

#: Default buckets of ``celery_task_queue_wait_time``, as the exporter that
#: defines it (prometheus-exporter-celery after 0.11.2): a backlog's waits
#: reach minutes, so the buckets span 50 ms to 30 min instead of runtime's.
QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
)

_EXCEPTION_CLASS = re.compile(r"^(\w+)\(")


def exception_class(exception: Any) -> str:
    """The exception label of a failure: the class name in Celery's
    ``repr``-style ``exception`` field (``"ValueError('x')"`` -> ``ValueError``),
    ``UnknownException`` otherwise (as prometheus-exporter-celery)."""
    if isinstance(exception, str):
        match = _EXCEPTION_CLASS.match(exception)
        if match:
            return match.group(1)
    return "UnknownException"


def _seconds(value: Any) -> float | None:
    """A finite number of seconds, or ``None`` (bools and NaN are not times)."""
    if value.__class__ is float or value.__class__ is int:
        return float(value) if math.isfinite(value) else None
    return None


def eta_timestamp(eta: Any) -> float | None:
    """Epoch seconds of a task's ``eta`` field (ISO 8601, as Celery sends it),
    ``None`` when absent or unreadable.

    Event timestamps stay as their senders stamped them (``time.time()``,
    UTC-based: the stream does not shift them by ``utcoffset`` as Celery's
    receiver does), so an ETA with an offset is compared as the instant it
    names, whatever the sender's or this host's time zone; a naive one is
    read as UTC, as a Celery worker of the default ``timezone`` reads it.
    """
    if eta.__class__ is not str or not 0 < len(eta) <= 64:
        return None
    try:
        when = datetime.fromisoformat(eta)
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def queue_wait(sent: Any, started: Any, eta: Any = None) -> float | None:
    """Seconds a task waited in its queue before a worker started it.

    Measured from the later of its ``task-sent`` time and its ETA, so a
    deliberate delay (``countdown``, ``eta``, a retry's backoff, all
    delivered as an ETA) is not counted as waiting, and a past ETA changes
    nothing; clamped at 0 (producer and worker clocks may disagree).
    ``None`` without a sent or start time (the producer does not send
    ``task-sent`` events without ``task_send_sent_event``): nothing to observe.
    """
    sent_at, started_at = _seconds(sent), _seconds(started)
    if sent_at is None or started_at is None:
        return None
    due = eta_timestamp(eta)
    baseline = sent_at if due is None else max(sent_at, due)
    return max(0.0, started_at - baseline)


def hostname_label(nodename: Any, whole: bool = False) -> str:
    """The ``hostname`` label of a node: the part after the first ``@``
    (Celery's ``nodesplit``, as prometheus-exporter-celery labels), or the
    whole node name with ``whole``."""
    text = str(nodename)
    if whole:
        return text
    _, sep, host = text.partition("@")
    return host if sep else text


class LabelCap:
    """The first ``limit`` distinct values of one label; later ones map to
    :data:`OTHER`.  A freed value (its node purged) frees its slot."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.values: set[str] = set()
        self.overflowed = 0

    def __call__(self, value: str) -> str:
        if value in self.values:
            return value
        if len(self.values) < self.limit:
            self.values.add(value)
            return value
        self.overflowed += 1
        return OTHER

    def release(self, value: str) -> None:
        self.values.discard(value)


@dataclass
class MetricsConfig:
    """What an operator tunes (the exporter's flags)."""

    #: histogram buckets of ``celery_task_runtime`` (upper bounds, ascending)
    buckets: Sequence[float]
    #: buckets of ``celery_task_queue_wait_time``
    queue_wait_buckets: Sequence[float] = QUEUE_WAIT_BUCKETS
    #: buckets of ``wkctl_election_decision_seconds``
    election_buckets: Sequence[float] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    max_label_values: int = 1000
    #: label nodes by their whole name instead of the part after ``@``
    whole_hostname: bool = False
    #: ``hostname="generic"`` on task-sent series (many short-lived clients)
    generic_sent_hostname: bool = False
    #: seconds a node may stay not alive before its series are dropped (0: never)
    purge_after: float = 600.0
    #: seconds an election may stay undecided before it counts as timed out
    election_timeout: float = 10.0
    #: elections followed at once (more are counted as rejected)
    max_elections: int = 100
    #: the broker's URL scheme: Celery workers stand in elections only where
    #: they run Gossip (``election_participants``)
    transport: str = "amqp"
    #: per-second task-event tallies kept for rates (``top``)
    rate_window: int = 60
    #: latest failures / invalid events kept for display
    recent: int = 20


@dataclass
class Failure:
    at: float
    uuid: str
    name: str
    hostname: str
    exception: str


@dataclass
class Decided:
    at: float
    id: str
    topic: str
    winner: str | None
    seconds: float | None
    candidates: int


@dataclass
class _Node:
    label: str
    alive: bool = False
    #: time (caller's clock) the node was last seen alive
    last_alive: float = 0.0
    left: bool = False


@dataclass
class _Histogram:
    counts: list[int]
    total: float = 0.0

    def observe(self, bounds: Sequence[float], value: float) -> None:
        self.counts[bisect.bisect_left(bounds, value)] += 1
        self.total += value


@dataclass
class ClusterMetrics:
    """Counters and gauges of one cluster, from its events.

    Feed it with :meth:`observe` right after ``State.event`` took the same
    event, call :meth:`tick` now and then (liveness transitions, election
    timeouts and purges are judged there), read the attributes to render.
    An election is followed with ``wkctl elect``'s watch: its participants
    are the nodes alive when its first request is seen, each replayed by
    the rule it follows; it is decided once every participant decided.
    """

    config: MetricsConfig

    # celery_* ---------------------------------------------------------------
    #: counter type -> label tuple -> value; label tuples are
    #: (name, hostname, queue) and, for task-failed, (name, hostname, exception, queue)
    counts: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    #: (name, hostname, queue) label sets seen by a non-sent event -> first seen
    series: dict[tuple[str, str, str], float] = field(default_factory=dict)
    runtime: dict[tuple[str, str, str], _Histogram] = field(default_factory=dict)
    #: seconds from sent (or a later ETA) to started, per (name, hostname, queue)
    queue_waits: dict[tuple[str, str, str], _Histogram] = field(default_factory=dict)
    #: queue name -> {"length", "consumers", "workers", "processes"} (set by the adapter)
    queues: dict[str, dict[str, float]] = field(default_factory=dict)

    # wkctl_* ----------------------------------------------------------------
    events: dict[str, int] = field(default_factory=dict)
    rejected: dict[tuple[str, str], int] = field(default_factory=dict)
    elections_held: dict[str, int] = field(default_factory=dict)
    elections_decided: dict[str, int] = field(default_factory=dict)
    elections_timed_out: dict[str, int] = field(default_factory=dict)
    #: topic -> hostname label of the latest winner
    winners: dict[str, str] = field(default_factory=dict)
    election_seconds: _Histogram | None = None
    drift_warnings: dict[str, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    rejoined: dict[str, int] = field(default_factory=dict)
    #: node label -> revoked ids it reported (opt-in hello)
    revoked: dict[str, int] = field(default_factory=dict)
    ingest_lag: float = 0.0
    broker_connected: bool = True
    #: nodes followed (by node name) for liveness, gauges and purging
    nodes: dict[str, _Node] = field(default_factory=dict)
    #: elections in progress by id
    elections: dict[str, tuple[ElectionWatch, str]] = field(default_factory=dict)
    recent_decided: deque[Decided] = field(default_factory=deque)
    recent_failures: deque[Failure] = field(default_factory=deque)
    recent_invalid: deque[tuple[float, str, str]] = field(default_factory=deque)
    #: per-second task-event tallies: deque of (second, {type: n})
    rates: deque[tuple[int, dict[str, int]]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        cap = self.config.max_label_values
        self.cap_name = LabelCap(cap)
        self.cap_host = LabelCap(cap)
        self.cap_exception = LabelCap(cap)
        self.cap_queue = LabelCap(cap)
        self.cap_type = LabelCap(cap)
        self.cap_topic = LabelCap(cap)
        self.bounds = [float(b) for b in self.config.buckets if b != float("inf")]
        self.wait_bounds = [float(b) for b in self.config.queue_wait_buckets if b != float("inf")]
        self.election_bounds = [float(b) for b in self.config.election_buckets]
        self.election_seconds = _Histogram([0] * (len(self.election_bounds) + 1))
        for type_ in TASK_COUNTERS:
            self.counts.setdefault(type_, {})
        self.recent_decided = deque(maxlen=self.config.recent)
        self.recent_failures = deque(maxlen=self.config.recent)
        self.recent_invalid = deque(maxlen=self.config.recent)
        self.rates = deque(maxlen=self.config.rate_window)
        self._finished: dict[str, None] = {}
        self._labels: dict[tuple[Any, Any, Any], tuple[str, str, str]] = {}
        #: task id -> (sent, started) times of its latest measured wait
        self._waited: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        #: task id -> label set of a start whose task-sent has not come yet
        self._wait_pending: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._second = -1
        self._tally: dict[str, int] = {}

    # -- labels ---------------------------------------------------------------

    def host(self, nodename: Any) -> str:
        return self.cap_host(hostname_label(nodename, self.config.whole_hostname))

    # -- feeding ----------------------------------------------------------------

    def refused(self, kind: str, reason: str) -> None:
        """A message or event that never reached State (not JSON, over
        limits, not an object) or failed the schema check."""
        key = (self.cap_type(kind), reason)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def invalid(self, event: Any, now: float, reason: str = "schema") -> None:
        """An event that failed the schema (State took it, sanitised)."""
        type_ = event.get("type") if isinstance(event, dict) else None
        kind = type_ if isinstance(type_, str) else "?"
        self.refused(kind, reason)
        host = event.get("hostname") if isinstance(event, dict) else None
        self.recent_invalid.append((now, kind[:60], str(host)[:60]))

    def observe(self, event: Any, state: ClusterState, now: float) -> None:
        """Count one event, after ``state.event(event)`` took it."""
        if event.__class__ is not dict and not isinstance(event, dict):
            self.refused("item", "not an object")
            return
        type_ = event.get("type")
        if type_.__class__ is not str:
            self.refused("?", "no type")
            return
        events = self.events
        seen = events.get(type_)
        if seen is not None:
            events[type_] = seen + 1
        else:
            label = self.cap_type(type_)
            events[label] = events.get(label, 0) + 1
        ts = event.get("timestamp")
        if ts.__class__ is float or ts.__class__ is int:
            self.ingest_lag = now - ts
        if type_ in _COUNTED:
            self._task(type_, event, state, now)
        elif type_.startswith("worker-"):
            self._worker(type_, event, state, now)

    def _task(self, type_: str, event: dict[str, Any], state: ClusterState, now: float) -> None:
        uuid = event.get("uuid")
        if uuid.__class__ is not str:
            return
        task = state.tasks.data.get(uuid)
        if task is None:
            return
        fields = task.__dict__
        raw = (fields.get("name"), fields.get("hostname"), fields.get("queue", "celery"))
        key = self._labels.get(raw)
        if key is None:
            # Label values of a (name, node, queue) seen before are looked
            # up, not recomputed: this is the per-event path.
            if len(self._labels) >= _LABEL_CACHE:
                self._labels.clear()
            key = self._labels[raw] = (
                self.cap_name(str(raw[0])),
                self.host(raw[1]),
                self.cap_queue(str(raw[2])),
            )
        if type_ == "task-sent":
            if self.config.generic_sent_hostname:
                key = (key[0], GENERIC, key[2])
        elif key not in self.series:
            # prometheus-exporter-celery shows every counter of a label set
            # at zero from its first task event (task-sent excepted).
            self.series[key] = now
            name, host, queue = key
            for counter in TASK_COUNTERS:
                zero = (name, host, "", queue) if counter == "task-failed" else key
                self.counts[counter].setdefault(zero, 0.0)
        bucket = self.counts[type_]
        counted: tuple[str, ...] = key  # failures also carry the exception label
        if type_ == "task-failed":
            name, host, queue = key
            exc = self.cap_exception(exception_class(task.exception))
            counted = (name, host, exc, queue)
            self.recent_failures.append(
                Failure(
                    now,
                    uuid,
                    str(task.name),
                    str(fields.get("hostname")),
                    str(task.exception)[:200],
                )
            )
        bucket[counted] = bucket.get(counted, 0.0) + 1
        if type_ == "task-succeeded":
            runtime = task.runtime
            if (runtime.__class__ is float or runtime.__class__ is int) and runtime >= 0:
                hist = self.runtime.get(key)
                if hist is None:
                    hist = self.runtime[key] = _Histogram([0] * (len(self.bounds) + 1))
                hist.observe(self.bounds, runtime)
        elif type_ == "task-started":
            self._started(uuid, task, key, state.max_tasks_in_memory)
        elif type_ == "task-sent" and uuid in self._wait_pending:
            pending = self._wait_pending.pop(uuid)
            self._wait(uuid, task, pending, state.max_tasks_in_memory, task.sent)
        second = int(now)
        if second != self._second:
            self._second = second
            self._tally = {}
            self.rates.append((second, self._tally))
        tally = self._tally
        tally[type_] = tally.get(type_, 0) + 1

    def _started(self, uuid: str, task: Any, key: tuple[str, str, str], limit: int) -> None:
        """A start: its queue wait is observed now, or once its ``task-sent`` comes.

        The producer's ``task-sent`` and the worker's events travel on
        different connections, so a task picked up at once may start before
        its ``task-sent`` arrives: it is awaited.  A start after one already
        measured from the same sent time is a new delivery without a
        ``task-sent`` of its own (a retry republished by a worker that does
        not send them, a redelivery): measured from its ``task-retried``
        when later (the retry republishes it then), else from that sent
        time.  The same start seen twice counts once.  Both tables hold at
        most as many tasks as State (``limit``): an evicted task is gone.
        """
        sent, started = task.sent, task.started
        if sent is None:
            pending = self._wait_pending
            pending[uuid] = key
            if len(pending) > limit:
                pending.popitem(last=False)
            return
        since = sent
        measured = self._waited.get(uuid)
        if measured is not None and measured[0] == sent:
            if measured[1] == started:
                return
            retried, sent_at = _seconds(task.retried), _seconds(sent)
            if retried is not None and sent_at is not None and retried > sent_at:
                since = retried
        self._wait(uuid, task, key, limit, since)

    def _wait(
        self, uuid: str, task: Any, key: tuple[str, str, str], limit: int, since: Any
    ) -> None:
        wait = queue_wait(since, task.started, task.eta)
        if wait is None:
            return
        waited = self._waited
        waited[uuid] = (task.sent, task.started)
        if len(waited) > limit:
            waited.popitem(last=False)
        hist = self.queue_waits.get(key)
        if hist is None:
            hist = self.queue_waits[key] = _Histogram([0] * (len(self.wait_bounds) + 1))
        hist.observe(self.wait_bounds, wait)

    def _worker(self, type_: str, event: dict[str, Any], state: ClusterState, now: float) -> None:
        hostname = event.get("hostname")
        if not isinstance(hostname, str):
            return
        if type_ == ELECT_EVENT or type_ == ELECT_ACK_EVENT:
            self._election(type_, event, state, now)
            return
        if self.elections and type_ in HEARTBEAT_TYPES:
            for watch, _topic in self.elections.values():
                watch.feed(event, now)  # a node seen alive joins Celery's count
        worker = state.workers.data.get(hostname)
        node = self.nodes.get(hostname)
        if type_ == "worker-offline":
            if node is not None and node.alive:
                node.alive = False
                node.left = True
            return
        if worker is None:
            return
        if node is None:
            if len(self.nodes) >= self.config.max_label_values * 2:
                return  # State keeps it; its series would go to "other" anyway
            node = self.nodes[hostname] = _Node(self.host(hostname))
        if node.alive:
            node.last_alive = now  # tick() judges expiry; no need to ask State per event
        elif worker.is_alive(now):
            if node.last_alive and not node.left:
                self.rejoined[node.label] = self.rejoined.get(node.label, 0) + 1
            node.alive = True
            node.left = False
            node.last_alive = now
        local, ts = event.get("local_received"), event.get("timestamp")
        if (ts.__class__ is float or ts.__class__ is int) and (
            local.__class__ is float or local.__class__ is int
        ):
            drift = local - ts
            self.drift[node.label] = drift
            if abs(drift) > HEARTBEAT_DRIFT_MAX:
                self.drift_warnings[node.label] = self.drift_warnings.get(node.label, 0) + 1

    def _election(self, type_: str, event: dict[str, Any], state: ClusterState, now: float) -> None:
        id_ = event.get("id")
        if not isinstance(id_, str) or id_ in self._finished:
            return
        entry = self.elections.get(id_)
        if entry is None:
            if type_ != ELECT_EVENT:
                return  # an ack before any request: nothing to follow yet
            if len(self.elections) >= self.config.max_elections:
                self.refused(ELECT_EVENT, "too many elections at once")
                return
            topic = self.cap_topic(str(event.get("topic")))
            alive = {
                name: vars(worker)
                for name, worker in state.workers.data.items()
                if worker.is_alive(now)
            }
            participants = election_participants(alive, self.config.transport)
            watch = ElectionWatch(id_, participants=participants, alive=alive, started_at=now)
            entry = self.elections[id_] = (watch, topic)
            self.elections_held[topic] = self.elections_held.get(topic, 0) + 1
        watch, topic = entry
        watch.feed(event, now)
        if watch.settled:
            outcome = watch.outcome()
            winner = self.host(outcome.winner.hostname) if outcome.winner else None
            self.elections_decided[topic] = self.elections_decided.get(topic, 0) + 1
            if winner is not None:
                self.winners[topic] = winner
            seconds = outcome.settled if outcome.settled is not None else outcome.elapsed
            if seconds is not None and self.election_seconds is not None:
                self.election_seconds.observe(self.election_bounds, max(seconds, 0.0))
            self.recent_decided.append(
                Decided(now, id_, topic, winner, seconds, len(outcome.candidates))
            )
            self._finish(id_)

    def _finish(self, id_: str) -> None:
        self.elections.pop(id_, None)
        self._finished[id_] = None
        if len(self._finished) > 1000:
            del self._finished[next(iter(self._finished))]

    # -- time ---------------------------------------------------------------------

    def tick(self, state: ClusterState, now: float) -> None:
        """Judge what only time tells: nodes lost, elections timed out, purges."""
        workers = state.workers.data
        purge_after = self.config.purge_after
        for nodename, node in list(self.nodes.items()):
            worker = workers.get(nodename)
            alive = worker is not None and worker.is_alive(now)
            if alive:
                node.last_alive = now
                node.alive = True
                continue
            if node.alive:
                node.alive = False
                if not node.left:
                    self.lost[node.label] = self.lost.get(node.label, 0) + 1
            if purge_after > 0 and now - node.last_alive > purge_after:
                self._purge(nodename, node)
        timeout = self.config.election_timeout
        for id_, (watch, topic) in list(self.elections.items()):
            if now - watch.started_at > timeout:
                self.elections_timed_out[topic] = self.elections_timed_out.get(topic, 0) + 1
                self._finish(id_)

    def _purge(self, nodename: str, node: _Node) -> None:
        del self.nodes[nodename]
        label = node.label
        if any(other.label == label for other in self.nodes.values()):
            return  # another node of the same host keeps the label alive
        for bucket in self.counts.values():
            for key in [k for k in bucket if k[1] == label]:
                del bucket[key]
        for key in [k for k in self.series if k[1] == label]:
            del self.series[key]
        for histograms in (self.runtime, self.queue_waits):
            for key in [k for k in histograms if k[1] == label]:
                del histograms[key]
        for table in (self.drift, self.drift_warnings, self.lost, self.rejoined, self.revoked):
            table.pop(label, None)
        self._labels = {raw: key for raw, key in self._labels.items() if key[1] != label}
        for uuid in [u for u, k in self._wait_pending.items() if k[1] == label]:
            del self._wait_pending[uuid]
        if label != OTHER:
            self.cap_host.release(label)

    # -- what pollers tell -----------------------------------------------------

    def set_queue(self, name: str, **values: float) -> None:
        self.queues.setdefault(self.cap_queue(name), {}).update(values)

    def set_revoked(self, table: Mapping[str, Mapping[str, Any]]) -> None:
        """Revoked-set sizes from a ``hello`` round (``hello_table``)."""
        for nodename, row in table.items():
            revoked = row.get("revoked")
            if isinstance(revoked, list):
                self.revoked[self.host(nodename)] = len(revoked)

    # -- views ---------------------------------------------------------------

    def workers(self, state: ClusterState, now: float) -> dict[str, dict[str, float]]:
        """Per hostname label: ``up`` (any node of it alive), ``active``
        (sum), ``clock`` (highest); nodes followed only."""
        out: dict[str, dict[str, float]] = {}
        data = state.workers.data
        for nodename, node in self.nodes.items():
            worker = data.get(nodename)
            if worker is None:
                continue
            alive = worker.is_alive(now)
            active = worker.active if alive and isinstance(worker.active, int) else 0
            clock = worker.clock if isinstance(worker.clock, int) else 0
            row = out.get(node.label)
            if row is None:
                out[node.label] = {"up": float(alive), "active": float(active), "clock": clock}
            else:
                row["up"] = max(row["up"], float(alive))
                row["active"] += active
                row["clock"] = max(row["clock"], clock)
        return out

    def clock_spread(self, state: ClusterState, now: float) -> int:
        """Highest minus lowest Lamport clock of the nodes alive now."""
        clocks = [
            w.clock
            for name in self.nodes
            if (w := state.workers.data.get(name)) is not None
            and w.is_alive(now)
            and isinstance(w.clock, int)
        ]
        return max(clocks) - min(clocks) if clocks else 0

    def rate(self, type_: str, now: float, seconds: int = 60) -> list[int]:
        """Events of ``type_`` per second over the last ``seconds`` seconds."""
        end = int(now)
        per = dict.fromkeys(range(end - seconds + 1, end + 1), 0)
        for second, tally in self.rates:
            if second in per:
                per[second] = tally.get(type_, 0)
        return list(per.values())

    def total(self, type_: str) -> float:
        """One task counter summed over its label sets."""
        return sum(self.counts[type_].values())
