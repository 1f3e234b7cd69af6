"""In-memory cluster state built from Celery events: ``State``, ``Worker``, ``Task``.

A drop-in for :mod:`celery.events.state` (what Flower and ``celery events``
use): same class names, constructor signatures, attributes, return values and
merge semantics, so a monitor written against Celery's State works unchanged.
It does not import Celery (Celery is an optional extra of wkctl); the task
state constants and their precedence are reproduced here from
``celery.states``.

It is sans-IO: ``State.event(body)`` takes one decoded event (or a
``task.multi`` list of them) as ``celery.events.receiver.EventReceiver`` hands
it over, i.e. with ``local_received`` and ``clock`` filled in.

Where Celery's State is defective, this one differs on purpose (each point is
covered by a unit test replaying the scenario that breaks Celery):

* **Every event is accepted, none raises.**  Celery copies every field of a
  worker event onto the ``Worker`` object, so ``worker-elect`` /
  ``worker-elect-ack`` (whose ``id`` field hits the read-only ``Worker.id``)
  raise ``AttributeError``, and one heartbeat with ``"timestamp": "now"``
  raises ``ValueError`` -- inside Gossip this kills every worker of a cluster.
  Here fields that would shadow methods, properties or internal state are
  dropped, fields of the wrong type (timestamps, clocks, frequencies, ids,
  names) are dropped, events missing what they need are ignored, and
  non-dict items are ignored.  Every item still counts in ``event_count``.
* **Memory is bounded** by ``max_workers_in_memory`` / ``max_tasks_in_memory``
  whatever the stream: there is no separate event heap at all (time order is
  kept as two small keys per task), the ``tasks_by_type`` /
  ``tasks_by_worker`` indexes drop a task when it leaves ``tasks`` and drop a
  key when its set empties, the seen task types and the pending
  parent/child links are bounded too.  Celery's index keys, seen types (and
  in 5.4 its pending children) grow forever, and its evicted tasks linger
  until the cyclic garbage collector runs (each one is in a reference cycle).
* **Time order covers every task in memory.**  Celery's ``tasks_by_time``
  reads a heap truncated to ``4 * max_tasks_in_memory`` events, so a
  long-running task vanishes from it while still in ``tasks``; and its
  ``limit`` counts heap entries rather than tasks.  Here ``limit`` is a
  number of tasks.
* **Indexes follow late information.**  Celery indexes a task by type only if
  the event that created it carried the name (a ``task-started`` arriving
  before ``task-received`` leaves it unindexed forever), and by worker under
  the hostname of the creating event (the client's, for ``task-sent``).  Here a
  task is indexed by its current ``name`` and by its current ``worker``.
* **Liveness uses the local clock only.**  Celery feeds task events into the
  worker's heartbeat list with the sender's ``timestamp`` (arguments swapped),
  so a worker whose clock runs ahead looks alive after it died.  Here every
  heartbeat is the local receive time.
* **Workers are least-recently-heard-from evicted**, so a live worker is never
  dropped while silent ones remain; ``Task.parent`` / ``Task.root`` are looked
  up each time instead of caching a miss forever.

Everything Celery gets right is kept identical, including quirks monitors rely
on: the state precedence and ``merge_rules`` for out-of-order events, custom
``task-*`` events becoming upper-cased custom states, ``worker-offline``
removing a worker only when ``on_node_leave`` is set, and event-less tasks
being absent from ``tasks_by_time``.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from decimal import Decimal
from functools import cmp_to_key
from typing import Any
from weakref import WeakSet

from .wire import printable

__all__ = (
    "State",
    "Worker",
    "Task",
    "LRUCache",
    "CallableDefaultdict",
    "heartbeat_expires",
    "precedence",
    "PENDING",
    "RECEIVED",
    "STARTED",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
    "REJECTED",
    "RETRY",
    "IGNORED",
    "READY_STATES",
    "UNREADY_STATES",
    "EXCEPTION_STATES",
    "PROPAGATE_STATES",
    "ALL_STATES",
    "TASK_EVENT_TO_STATE",
    "HEARTBEAT_EXPIRE_WINDOW",
    "HEARTBEAT_DRIFT_MAX",
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# Task states (celery.states), reproduced so Celery stays an optional extra.
# --------------------------------------------------------------------------
PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED})

#: Lower index means higher precedence; ``None`` stands for any custom state.
PRECEDENCE = [SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]
PRECEDENCE_LOOKUP: dict[str | None, int] = {s: i for i, s in enumerate(PRECEDENCE)}
NONE_PRECEDENCE = PRECEDENCE_LOOKUP[None]


def precedence(state: str | None) -> int:
    """Precedence index of ``state`` (lower is stronger), as ``celery.states``."""
    return PRECEDENCE_LOOKUP.get(state, NONE_PRECEDENCE)


#: Task event subject -> the state it puts the task in.
TASK_EVENT_TO_STATE = {
    "sent": PENDING,
    "received": RECEIVED,
    "started": STARTED,
    "failed": FAILURE,
    "retried": RETRY,
    "succeeded": SUCCESS,
    "revoked": REVOKED,
    "rejected": REJECTED,
}

#: Percentage of ``freq`` after the last heartbeat before a worker is offline.
HEARTBEAT_EXPIRE_WINDOW = 200
#: Drift (s) between sender timestamp and local receive time worth a warning.
HEARTBEAT_DRIFT_MAX = 16

R_STATE = "<State: events={0.event_count} tasks={0.task_count}>"
R_WORKER = "<Worker: {0.hostname} ({0.status_string} clock:{0.clock})"
R_TASK = "<Task: {0.name}({0.uuid}) {0.state} clock:{0.clock}>"

_INF = float("inf")


def heartbeat_expires(
    timestamp: float, freq: float = 60, expire_window: float = HEARTBEAT_EXPIRE_WINDOW
) -> float:
    """Time when a heartbeat received at ``timestamp`` expires."""
    if isinstance(freq, Decimal):
        freq = float(freq)
    if isinstance(timestamp, Decimal):
        timestamp = float(timestamp)
    return timestamp + (freq * (expire_window / 1e2))


def _number(v: Any) -> float | int | None:
    """``v`` as a finite real number, or ``None`` when it is not one.

    JSON decoders may hand out ``Decimal``; booleans, strings, NaN and
    infinities are not timestamps, clocks or frequencies.
    """
    t = v.__class__
    if t is float:
        return v if v - v == 0.0 else None
    if t is int:
        return v
    if t is Decimal:
        try:
            f = float(v)
        except (ValueError, OverflowError):  # pragma: no cover - float() of Decimal
            return None
        return f if f - f == 0.0 else None
    if t is bool or v is None:
        return None
    if isinstance(v, (int, float)):  # subclasses of int/float other than bool
        return _number(float(v))
    return None


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------
class LRUCache(MutableMapping):
    """Bounded mapping evicting the least recently used key (Celery's LRUCache API).

    Like Celery's: ``data`` is the underlying :class:`OrderedDict`, ``limit``
    the bound, ``cache[key]`` marks the key as used, ``key in cache`` and
    ``data`` access do not.  Unlike Celery's, every removal (eviction, ``del``,
    ``pop``, ``popitem``, ``clear``) is reported to ``on_remove(key, value)``
    so the State can keep its indexes exact, and iteration works on a snapshot
    so a monitor thread can iterate while events are applied.
    """

    def __init__(
        self,
        limit: int | None = None,
        on_remove: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.limit = limit
        self.data: OrderedDict[Any, Any] = OrderedDict()
        self.on_remove = on_remove
        self.mutex = threading.RLock()

    def __getitem__(self, key: Any) -> Any:
        data = self.data
        value = data[key]
        data.move_to_end(key)
        return value

    def __setitem__(self, key: Any, value: Any) -> None:
        data = self.data
        if key not in data:
            limit = self.limit
            if limit and len(data) >= limit:
                old_key, old_value = data.popitem(last=False)
                if self.on_remove is not None:
                    self.on_remove(old_key, old_value)
        data[key] = value

    def __delitem__(self, key: Any) -> None:
        value = self.data.pop(key)
        if self.on_remove is not None:
            self.on_remove(key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.data))

    def keys(self):  # type: ignore[override]
        return self.data.keys()

    def values(self):  # type: ignore[override]
        return list(self.data.values())

    def items(self):  # type: ignore[override]
        return list(self.data.items())

    iterkeys = keys
    itervalues = values
    iteritems = items

    def popitem(self, last: bool = True) -> tuple[Any, Any]:  # type: ignore[override]
        key, value = self.data.popitem(last)
        if self.on_remove is not None:
            self.on_remove(key, value)
        return key, value

    def clear(self) -> None:
        items = list(self.data.items())
        self.data.clear()
        if self.on_remove is not None:
            for key, value in items:
                self.on_remove(key, value)

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "data": self.data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.limit = state["limit"]
        self.data = state["data"]
        self.on_remove = None
        self.mutex = threading.RLock()

    def __repr__(self) -> str:
        return f"<LRUCache limit={self.limit} size={len(self.data)}>"


class CallableDefaultdict(defaultdict):
    """``defaultdict`` that is also callable, as Celery's ``tasks_by_type``.

    ``state.tasks_by_type[name]`` is the (weak) set of tasks of that type;
    ``state.tasks_by_type(name, limit=None, reverse=True)`` yields
    ``(uuid, task)`` pairs in time order (it used to be a method).
    """

    def __init__(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.fun = fun
        super().__init__(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fun(*args, **kwargs)


# --------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------
#: Event fields never copied onto a Worker: they would replace its methods,
#: its heartbeat list or its class settings, or collide with read-only
#: properties (Celery raises AttributeError on ``id`` from worker-elect).
_WORKER_RESERVED = frozenset(
    {
        "id",
        "alive",
        "status_string",
        "heartbeat_expires",
        "heartbeats",
        "event",
        "update",
        "is_alive",
        "expire_window",
        "heartbeat_max",
        "_fields",
    }
)
#: Worker fields that must be numbers (or absent / ``None``) to be kept.
_WORKER_NUMERIC = (
    "clock",
    "pid",
    "active",
    "processed",
    "timestamp",
    "local_received",
    "utcoffset",
)

_drift_warned: set[str] = set()


#: Drift warnings logged per minute at most, over all hosts: hostnames are
#: whatever a peer sends, so "once per hostname" alone is no bound.
DRIFT_WARNINGS_PER_MINUTE = 10
_drift_window = [0.0, 0]  # [window start (monotonic), warnings in it]


def _warn_drift(hostname: Any, drift: float, local_received: float, timestamp: float) -> None:
    """Warn once per hostname that its clock drifts from ours (bounded memory
    and rate); every peer-sent value is escaped for the log line."""
    key = str(hostname)
    if key in _drift_warned:
        return
    if len(_drift_warned) >= 1000:
        _drift_warned.clear()
    _drift_warned.add(key)
    now = time.monotonic()
    if now - _drift_window[0] >= 60.0:
        _drift_window[0], _drift_window[1] = now, 0
    if _drift_window[1] >= DRIFT_WARNINGS_PER_MINUTE:
        return
    _drift_window[1] += 1
    logger.warning(
        "Substantial drift from %s may mean clocks are out of sync.  Current drift is "
        "%s seconds.  [orig: %s recv: %s]",
        printable(hostname),
        int(drift),
        printable(timestamp, 40),
        printable(local_received, 40),
    )


def _clean_worker_fields(fields: Any) -> dict[str, Any]:
    """Copy of a worker event without reserved names and mistyped values."""
    out: dict[str, Any] = {}
    if not isinstance(fields, dict):
        try:
            fields = dict(fields)
        except (TypeError, ValueError):
            return out
    for k, v in fields.items():
        if k.__class__ is not str or k in _WORKER_RESERVED:
            continue
        if k == "freq":
            v = _number(v)
            if v is None or v <= 0:
                continue
        elif k in _WORKER_NUMERIC:
            if v is not None:
                v = _number(v)
                if v is None:
                    continue
        elif k == "hostname" and v is not None and v.__class__ is not str:
            continue
        out[k] = v
    return out


def _worker_fields_ok(fields: dict[str, Any]) -> bool:
    """Fast check that a worker event can be copied as is (the common case)."""
    if not _WORKER_RESERVED.isdisjoint(fields):
        return False
    get = fields.get
    v = get("freq", 1.0)
    t = v.__class__
    if t is float:
        if v - v or v <= 0:
            return False
    elif t is not int or v <= 0:
        return False
    for k in _WORKER_NUMERIC:
        v = get(k)
        t = v.__class__
        if t is int or v is None:
            continue
        if t is not float or v - v:
            return False
    return True


class Worker:
    """State of one worker, from its ``worker-*`` events (and task events).

    Same API as ``celery.events.state.Worker``: the constructor fields, every
    event field as an attribute, ``heartbeats`` (the last ``heartbeat_max``
    local receive times, sorted), ``alive`` / ``status_string`` /
    ``heartbeat_expires`` derived from them and ``freq``, and ``id`` =
    ``"hostname.pid"``.  Equality and hash go by ``hostname``.
    """

    __slots__ = ("__dict__", "__weakref__")

    heartbeat_max = 4
    expire_window = HEARTBEAT_EXPIRE_WINDOW

    _fields = (
        "hostname",
        "pid",
        "freq",
        "heartbeats",
        "clock",
        "active",
        "processed",
        "loadavg",
        "sw_ident",
        "sw_ver",
        "sw_sys",
    )

    def __init__(
        self,
        hostname: str | None = None,
        pid: int | None = None,
        freq: float = 60,
        heartbeats: list[float] | None = None,
        clock: int = 0,
        active: int | None = None,
        processed: int | None = None,
        loadavg: list[float] | None = None,
        sw_ident: str | None = None,
        sw_ver: str | None = None,
        sw_sys: str | None = None,
    ) -> None:
        self.hostname = hostname
        self.pid = pid
        self.freq = freq
        self.heartbeats: list[float] = [] if heartbeats is None else heartbeats
        self.clock = clock or 0
        self.active = active
        self.processed = processed
        self.loadavg = loadavg
        self.sw_ident = sw_ident
        self.sw_ver = sw_ver
        self.sw_sys = sw_sys

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Worker):
            return self.hostname == other.hostname
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.hostname)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.hostname,
            self.pid,
            self.freq,
            self.heartbeats,
            self.clock,
            self.active,
            self.processed,
            self.loadavg,
            self.sw_ident,
            self.sw_ver,
            self.sw_sys,
        )

    def event(
        self,
        type_: str | None,
        timestamp: float | None = None,
        local_received: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Apply one worker event: copy its fields, then record the heartbeat.

        ``type_`` is the event subject (``"heartbeat"``, ``"online"``,
        ``"offline"``, ``"elect"``, ...).  ``offline`` clears the heartbeats;
        any other subject records ``local_received`` as a heartbeat when both
        times are usable numbers.  Fields that are reserved names or have the
        wrong type are dropped instead of raising (see the module docstring).
        """
        if fields:
            if fields.__class__ is dict and _worker_fields_ok(fields):
                self.__dict__.update(fields)
            else:
                self.__dict__.update(_clean_worker_fields(fields))
        if type_ == "offline":
            self.heartbeats[:] = []
            return
        self._heartbeat(local_received, timestamp)

    def _heartbeat(self, local_received: Any, timestamp: Any) -> None:
        """Insert a heartbeat (local receive time) keeping the newest ``heartbeat_max``."""
        if local_received.__class__ is not float or local_received - local_received:
            local_received = _number(local_received)
        if timestamp.__class__ is not float or timestamp - timestamp:
            timestamp = _number(timestamp)
        if not local_received or not timestamp:
            return
        drift = local_received - timestamp
        if drift > HEARTBEAT_DRIFT_MAX or drift < -HEARTBEAT_DRIFT_MAX:
            _warn_drift(self.hostname, abs(drift), local_received, timestamp)
        heartbeats = self.heartbeats
        if heartbeats.__class__ is not list:  # replaced by a user; keep going
            heartbeats = self.heartbeats = list(heartbeats or ())
        hearts = len(heartbeats)
        if hearts > self.heartbeat_max - 1:
            del heartbeats[0]
        if hearts and local_received > heartbeats[-1]:
            heartbeats.append(local_received)
        else:
            bisect.insort(heartbeats, local_received)

    def update(self, f: Any, **kw: Any) -> None:
        """Set attributes from a mapping (and keywords); reserved names are skipped."""
        d = dict(f, **kw) if kw else f
        for k, v in dict(d).items():
            if k in _WORKER_RESERVED and k != "heartbeats":
                continue
            setattr(self, k, v)

    def __repr__(self) -> str:
        return R_WORKER.format(self)

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    @property
    def heartbeat_expires(self) -> float | None:
        """When the last heartbeat expires (``None`` without heartbeats; Celery raises)."""
        heartbeats = self.heartbeats
        if not heartbeats:
            return None
        return heartbeat_expires(heartbeats[-1], self.freq, self.expire_window)

    def is_alive(self, now: float | None = None) -> bool:
        """``alive`` at an explicit time (sans-IO callers pass their own clock)."""
        heartbeats = self.heartbeats
        if not heartbeats:
            return False
        try:
            expires = heartbeat_expires(heartbeats[-1], self.freq, self.expire_window)
            return bool((time.time() if now is None else now) < expires)
        except (TypeError, ValueError, ArithmeticError):
            return False

    @property
    def alive(self) -> bool:
        return self.is_alive()

    @property
    def id(self) -> str:
        return f"{self.hostname}.{self.pid}"


# --------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------
#: Event fields never merged into a Task: they would shadow its methods or
#: collide with its properties / internal links (Celery lets ``children`` or
#: ``worker`` replace the real objects and then crashes on them).
_TASK_RESERVED = frozenset(
    {
        "id",
        "origin",
        "ready",
        "parent",
        "root",
        "children",
        "worker",
        "cluster_state",
        "event",
        "info",
        "as_dict",
        "merge_rules",
        "_fields",
        "_info_fields",
    }
)
#: Task fields that must be strings (or ``None``) to be kept.
_TASK_STR = ("hostname", "name", "parent_id", "root_id", "state")
#: Task fields that must be numbers (or ``None``) to be kept.
_TASK_NUMERIC = ("timestamp", "local_received", "clock")


def _clean_task_fields(fields: Any) -> dict[str, Any]:
    """Copy of a task event without reserved names and mistyped values."""
    out: dict[str, Any] = {}
    if not isinstance(fields, dict):
        try:
            fields = dict(fields)
        except (TypeError, ValueError):
            return out
    for k, v in fields.items():
        if k.__class__ is not str or k in _TASK_RESERVED:
            continue
        if k in _TASK_NUMERIC:
            if v is not None:
                v = _number(v)
                if v is None:
                    continue
        elif k in _TASK_STR:
            if v is not None and not isinstance(v, str):
                continue
        elif k == "uuid" and v.__class__ is not str:
            continue
        out[k] = v
    return out


def _task_fields_ok(fields: dict[str, Any]) -> bool:
    """Fast check that a task event can be merged as is (the common case)."""
    if not _TASK_RESERVED.isdisjoint(fields):
        return False
    get = fields.get
    for k in _TASK_NUMERIC:
        v = get(k)
        t = v.__class__
        if t is int or v is None:
            continue
        if t is not float or v - v:
            return False
    for k in _TASK_STR:
        v = get(k)
        if v is not None and v.__class__ is not str:
            return False
    return True


_PREC_GET = PRECEDENCE_LOOKUP.get
_T2S_GET = TASK_EVENT_TO_STATE.get


class Task:
    """State of one task, merged from its ``task-*`` events.

    Same API as ``celery.events.state.Task``: every event field becomes an
    attribute (documented ones default to ``None``, ``state`` to
    ``PENDING``, ``clock`` to 0); ``sent`` / ``received`` / ``started`` /
    ``succeeded`` / ``failed`` / ``retried`` / ``revoked`` / ``rejected`` hold
    the timestamp of that event; events arriving out of order are merged by
    :attr:`merge_rules` and the state precedence.  Equality and hash go by
    ``uuid``.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "cluster_state",
        "worker",
        "_children",
        "_first",
        "_last",
        "_type_key",
        "_worker_key",
        "_parent_key",
    )

    name = received = sent = started = succeeded = failed = retried = revoked = rejected = None
    args = kwargs = eta = expires = retries = result = exception = timestamp = None
    runtime = traceback = exchange = routing_key = root_id = parent_id = client = None
    state = PENDING
    clock = 0

    _fields = (
        "uuid",
        "name",
        "state",
        "received",
        "sent",
        "started",
        "rejected",
        "succeeded",
        "failed",
        "retried",
        "revoked",
        "args",
        "kwargs",
        "eta",
        "expires",
        "retries",
        "worker",
        "result",
        "exception",
        "timestamp",
        "runtime",
        "traceback",
        "exchange",
        "routing_key",
        "clock",
        "client",
        "root",
        "root_id",
        "parent",
        "parent_id",
        "children",
    )

    #: How to merge out-of-order events: fields listed for a state are taken
    #: from an event of that state even when it arrives after a state that
    #: logically follows it (a late ``task-received`` still brings the name
    #: and arguments); all other fields of such a late event are merged but
    #: ``state`` is not regressed.
    merge_rules: dict[str, tuple[str, ...]] = {
        RECEIVED: (
            "name",
            "args",
            "kwargs",
            "parent_id",
            "root_id",
            "retries",
            "eta",
            "expires",
        ),
    }

    #: Fields :meth:`info` shows by default.
    _info_fields = (
        "args",
        "kwargs",
        "retries",
        "result",
        "eta",
        "runtime",
        "expires",
        "exception",
        "exchange",
        "routing_key",
        "root_id",
        "parent_id",
    )

    def __init__(
        self,
        uuid: str | None = None,
        cluster_state: State | None = None,
        children: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self.worker = kwargs.pop("worker", None) if kwargs else None
        self._children: WeakSet[Task] | None = None
        self._first: tuple[Any, ...] | None = None
        self._last: tuple[Any, ...] | None = None
        self._type_key: str | None = None
        self._worker_key: str | None = None
        self._parent_key: str | None = None
        if children and cluster_state is not None:
            data = cluster_state.tasks.data
            self._children = WeakSet(data[c] for c in children if c in data)
        if kwargs:
            d = self.__dict__
            for k, v in kwargs.items():
                if k not in _TASK_RESERVED:
                    d[k] = v

    # -- identity
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Task):
            return self.uuid == other.uuid
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.uuid)

    def __reduce__(self) -> tuple[Any, ...]:
        return _depickle_task, (self.__class__, self.as_dict())

    def __repr__(self) -> str:
        return R_TASK.format(self)

    # -- merging
    def event(
        self,
        type_: str,
        timestamp: float | None = None,
        local_received: float | None = None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """Merge one event (subject ``type_``, e.g. ``"succeeded"``) into this task.

        The new state wins unless it logically happens before the current one
        (state precedence; ``RETRY`` always wins); then only the fields named
        by :attr:`merge_rules` for it are taken -- or, for a state without a
        rule, every field but ``state``.  Reserved and mistyped fields are
        dropped; the caller's dict is never modified (Celery adds ``state``
        to it).
        """
        if fields:
            if fields.__class__ is not dict or not _task_fields_ok(fields):
                fields = _clean_task_fields(fields)
            if fields.get("uuid", self.uuid) != self.uuid:
                fields = {k: v for k, v in fields.items() if k != "uuid"}
        if type_.__class__ is not str:
            return
        ts = timestamp if timestamp.__class__ is float else _number(timestamp)
        self._merge(type_, ts, fields or {})

    def _merge(self, type_: str, timestamp: float | None, fields: dict[str, Any]) -> None:
        d = self.__dict__
        state = _T2S_GET(type_)
        if state is not None:
            d[type_] = timestamp
        else:
            state = type_.upper()
        current = d.get("state", PENDING)
        if (
            state != RETRY
            and current != RETRY
            and _PREC_GET(state, NONE_PRECEDENCE) > _PREC_GET(current, NONE_PRECEDENCE)
        ):
            # This event logically happens before the current state: merge.
            keep = self.merge_rules.get(state)
            if keep is not None:
                for k in keep:
                    if k in fields:
                        d[k] = fields[k]
            else:
                d.update(fields)
        else:
            d.update(fields)
            d["state"] = state
            d["timestamp"] = timestamp

    # -- views
    def info(
        self, fields: Iterable[str] | None = None, extra: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """Information about this task suitable for on-screen display."""
        keys = list(self._info_fields if fields is None else fields) + list(extra or [])
        out: dict[str, Any] = {}
        for key in keys:
            value = getattr(self, key, None)
            if value is not None:
                out[key] = value
        return out

    def as_dict(self) -> dict[str, Any]:
        """All documented fields; ``children`` as ids, ``root``/``parent`` as ids."""
        out: dict[str, Any] = {}
        for k in self._fields:
            if k == "children":
                out[k] = [t.id for t in self.children]
            elif k == "root":
                out[k] = self.root_id
            elif k == "parent":
                out[k] = self.parent_id
            else:
                out[k] = getattr(self, k, None)
        return out

    @property
    def children(self) -> WeakSet[Task]:
        """Child tasks in memory (weak set, as Celery's)."""
        ch = self._children
        if ch is None:
            ch = self._children = WeakSet()
        return ch

    @children.setter
    def children(self, value: Iterable[Task]) -> None:
        self._children = value if isinstance(value, WeakSet) else WeakSet(value)

    @property
    def id(self) -> str | None:
        return self.uuid

    @property
    def origin(self) -> str | None:
        return self.client if self.worker is None else self.worker.id

    @property
    def ready(self) -> bool:
        return self.state in READY_STATES

    def _lookup(self, task_id: Any) -> Task | None:
        cs = self.cluster_state
        if not task_id or cs is None:
            return None
        try:
            return cs.tasks.data.get(task_id)
        except TypeError:  # unhashable id set by hand
            return None

    @property
    def parent(self) -> Task | None:
        """The parent task if in memory (looked up each time; Celery caches misses)."""
        return self._lookup(self.parent_id)

    @property
    def root(self) -> Task | None:
        """The root task if in memory (looked up each time; Celery caches misses)."""
        return self._lookup(self.root_id)


def _depickle_task(cls: type[Task], fields: dict[str, Any]) -> Task:
    return cls(**fields)


def _origin_str(origin: Any) -> str:
    if origin is None:
        return ""
    if origin.__class__ is str:
        return origin
    return f"{origin.hostname}.{origin.pid}"


def _row_cmp(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    """Celery's ``timetuple`` order: clock (then origin) if both have one, else timestamp.

    Ties fall back to arrival (``seq``), as an insort into a sorted list does.
    Row layout: ``(clock, origin, seq, timestamp, task)``.
    """
    ca, cb = a[0], b[0]
    if ca and cb:
        if ca != cb:
            return -1 if ca < cb else 1
        oa, ob = a[1], b[1]
        if oa != ob:
            return -1 if oa < ob else 1
    else:
        ta, tb = a[3] or 0.0, b[3] or 0.0
        if ta != tb:
            return -1 if ta < tb else 1
    return -1 if a[2] < b[2] else (1 if a[2] > b[2] else 0)


def _before(clock: Any, ts: Any, origin: Any, key: tuple[Any, ...]) -> bool:
    """Is an event (clock, ts, origin) strictly before ``key`` in Celery's order?"""
    c0 = key[0]
    if clock and c0:
        if clock != c0:
            return clock < c0
        return _origin_str(origin) < _origin_str(key[3])
    return (ts or 0.0) < (key[1] or 0.0)


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------
class State:
    """Cluster state built from events (drop-in for ``celery.events.state.State``).

    ``workers`` and ``tasks`` are :class:`LRUCache` mappings bounded by
    ``max_workers_in_memory`` / ``max_tasks_in_memory``;
    ``tasks_by_type`` / ``tasks_by_worker`` are callable indexes of weak sets.
    ``event()`` is thread-safe (one lock, like Celery's).
    """

    Worker = Worker
    Task = Task
    event_count = 0
    task_count = 0
    #: Kept for compatibility: Celery bounds its event heap to
    #: ``heap_multiplier * max_tasks_in_memory``; this State has no heap.
    heap_multiplier = 4

    def __init__(
        self,
        callback: Callable[[State, dict[str, Any]], Any] | None = None,
        workers: Any = None,
        tasks: Any = None,
        taskheap: Any = None,
        max_workers_in_memory: int = 5000,
        max_tasks_in_memory: int = 10000,
        on_node_join: Callable[[Worker], Any] | None = None,
        on_node_leave: Callable[[Worker], Any] | None = None,
        tasks_by_type: Any = None,
        tasks_by_worker: Any = None,
    ) -> None:
        self.event_callback = callback
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        # Re-entrant: a freeze_while() callback (a snapshot camera) may query
        # tasks_by_time() / tasks_by_type(), which take the lock too.
        self._mutex = threading.RLock()
        #: Custom handlers by event group: ``handlers['foo'](subject, event)``.
        self.handlers: dict[str, Callable[[str, dict[str, Any]], Any]] = {}
        #: Seen task names in first-seen order, bounded like the tasks.
        self._seen_types: dict[str, None] = {}
        #: parent id -> children waiting for that parent to show up.
        self._tasks_to_resolve = LRUCache(max_tasks_in_memory)
        self.tasks_by_type: CallableDefaultdict = CallableDefaultdict(self._tasks_by_type, WeakSet)
        self.tasks_by_worker: CallableDefaultdict = CallableDefaultdict(
            self._tasks_by_worker, WeakSet
        )
        self.workers = self._adopt_mapping(workers, max_workers_in_memory, None)
        self.tasks = self._adopt_mapping(tasks, max_tasks_in_memory, self._task_removed)
        #: Merge task events inline unless ``Task`` is a subclass overriding
        #: ``event`` / ``_merge`` (then its ``event()`` is called per event).
        self._plain_task_event = (
            getattr(self.Task, "event", None) is Task.event
            and getattr(self.Task, "_merge", None) is Task._merge
        )
        # ``taskheap`` / ``tasks_by_type`` / ``tasks_by_worker`` are accepted for
        # signature compatibility (Celery's pickling passes them); the order and
        # the indexes are rebuilt from the tasks themselves.
        self.rebuild_taskheap()

    @staticmethod
    def _adopt_mapping(
        mapping: Any, limit: int, on_remove: Callable[[Any, Any], None] | None
    ) -> LRUCache:
        if isinstance(mapping, LRUCache):
            mapping.limit = limit
            mapping.on_remove = on_remove
            return mapping
        lru = LRUCache(limit, on_remove)
        if mapping:
            for k, v in dict(mapping.items() if hasattr(mapping, "items") else mapping).items():
                lru[k] = v
        return lru

    # -- removal hook keeping indexes exact and bounded
    def _task_removed(self, uuid: Any, task: Task) -> None:
        children = task._children
        if children:
            # Children re-link on their next event to a task of this id that
            # may show up again (Celery re-adds children on every event).
            for child in list(children):
                if child._parent_key == uuid:
                    child._parent_key = None
        key = task._type_key
        if key is not None:
            task._type_key = None
            bucket = self.tasks_by_type.get(key)
            if bucket is not None:
                bucket.discard(task)
                if not bucket:
                    del self.tasks_by_type[key]
        key = task._worker_key
        if key is not None:
            task._worker_key = None
            bucket = self.tasks_by_worker.get(key)
            if bucket is not None:
                bucket.discard(task)
                if not bucket:
                    del self.tasks_by_worker[key]

    def _index_type(self, task: Task, name: str) -> None:
        old = task._type_key
        by_type = self.tasks_by_type
        if old is not None:
            bucket = by_type.get(old)
            if bucket is not None:
                bucket.discard(task)
                if not bucket:
                    del by_type[old]
        task._type_key = name
        by_type[name].add(task)
        seen = self._seen_types
        if name not in seen:
            seen[name] = None
            if len(seen) > max(self.max_tasks_in_memory, 1):
                del seen[next(iter(seen))]

    def _index_worker(self, task: Task, hostname: str) -> None:
        old = task._worker_key
        by_worker = self.tasks_by_worker
        if old is not None:
            bucket = by_worker.get(old)
            if bucket is not None:
                bucket.discard(task)
                if not bucket:
                    del by_worker[old]
        task._worker_key = hostname
        by_worker[hostname].add(task)

    def _link_parent(self, task: Task, parent_id: str) -> None:
        task._parent_key = parent_id
        data = self.tasks.data
        parent = data.get(parent_id)
        if parent is not None:
            parent.children.add(task)
            data.move_to_end(parent_id)  # Celery touches the parent (LRU order)
        else:
            pending = self._tasks_to_resolve.data.get(parent_id)
            if pending is None:
                pending = self._tasks_to_resolve[parent_id] = WeakSet()
            pending.add(task)

    # -- locking helpers
    def freeze_while(
        self, fun: Callable[..., Any], *args: Any, clear_after: bool = False, **kwargs: Any
    ) -> Any:
        """Call ``fun`` with events blocked (and clear the state after, if asked)."""
        with self._mutex:
            try:
                return fun(*args, **kwargs)
            finally:
                if clear_after:
                    self._clear()

    def clear_tasks(self, ready: bool = True) -> None:
        with self._mutex:
            self._clear_tasks(ready)

    def _clear_tasks(self, ready: bool = True) -> None:
        if ready:
            done = [u for u, t in self.tasks.data.items() if t.state in READY_STATES]
            for u in done:
                del self.tasks[u]
        else:
            self.tasks.clear()
            self.tasks_by_type.clear()
            self.tasks_by_worker.clear()
        self._tasks_to_resolve.data.clear()

    def _clear(self, ready: bool = True) -> None:
        self.workers.clear()
        self._clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    def clear(self, ready: bool = True) -> None:
        """Forget workers, counters and tasks (only finished ones if ``ready``)."""
        with self._mutex:
            self._clear(ready)

    # -- get or create
    def get_or_create_worker(self, hostname: str, **kwargs: Any) -> tuple[Worker, bool]:
        """Get or create worker by hostname; returns ``(worker, created)``."""
        workers = self.workers
        worker = workers.data.get(hostname)
        if worker is not None:
            workers.data.move_to_end(hostname)
            if kwargs:
                worker.update(kwargs)
            return worker, False
        fields = self.Worker._fields
        ctor = {k: v for k, v in kwargs.items() if k in fields}
        worker = self.Worker(hostname, **ctor)
        if len(ctor) != len(kwargs):
            worker.update({k: v for k, v in kwargs.items() if k not in fields})
        workers[hostname] = worker
        return worker, True

    def get_or_create_task(self, uuid: str) -> tuple[Task, bool]:
        """Get or create task by uuid; returns ``(task, created)``."""
        tasks = self.tasks
        task = tasks.data.get(uuid)
        if task is not None:
            tasks.data.move_to_end(uuid)
            return task, False
        task = self.Task(uuid, cluster_state=self)
        tasks[uuid] = task
        self._resolve_children(task)
        return task, True

    def _resolve_children(self, task: Task) -> None:
        pending = self._tasks_to_resolve
        if pending.data:
            children = pending.data.pop(task.uuid, None)
            if children:
                task.children.update(children)

    # -- events
    def event(self, event: Any) -> Any:
        """Apply one event, or each event of a ``task.multi`` list in order.

        Returns what Celery returns for one event: ``((obj, created),
        subject)`` for worker and task events, the handler's result for a
        custom group, ``None`` for an ignored event; a list of those for a
        batch.  Never raises on event content.
        """
        with self._mutex:
            if event.__class__ is list or event.__class__ is tuple:
                _event = self._event
                return [_event(e) for e in event]
            return self._event(event)

    def task_event(self, type_: str, fields: dict[str, Any]) -> Any:
        """Deprecated, use :meth:`event`."""
        result = self._event(dict(fields, type="-".join(["task", type_])))
        return result[0] if result else None

    def worker_event(self, type_: str, fields: dict[str, Any]) -> Any:
        """Deprecated, use :meth:`event`."""
        result = self._event(dict(fields, type="-".join(["worker", type_])))
        return result[0] if result else None

    def _event(self, event: Any) -> Any:
        self.event_count = seq = self.event_count + 1
        if event.__class__ is not dict:
            if not isinstance(event, dict):
                return None
        callback = self.event_callback
        if callback is not None:
            callback(self, event)
        type_ = event.get("type")
        if type_.__class__ is not str:
            return None
        group, _, subject = type_.partition("-")
        if self.handlers:
            handler = self.handlers.get(group)
            if handler is not None:
                return handler(subject, event), subject
        if group == "task":
            return self._task_event(event, subject, seq)
        if group == "worker":
            return self._worker_event(event, subject)
        return None

    def _worker_event(self, event: dict[str, Any], subject: str) -> Any:
        hostname = event.get("hostname")
        if hostname.__class__ is not str or "timestamp" not in event:
            return None
        if "local_received" not in event:
            return None
        workers = self.workers
        data = workers.data
        is_offline = subject == "offline"
        worker = data.get(hostname)
        if worker is None:
            worker = self.Worker(hostname)
            if is_offline:
                created = False
            else:
                workers[hostname] = worker
                created = True
        else:
            created = False
            data.move_to_end(hostname)
        worker.event(subject, event["timestamp"], event["local_received"], event)
        if self.on_node_join is not None and (created or subject == "online"):
            self.on_node_join(worker)
        if self.on_node_leave is not None and is_offline:
            self.on_node_leave(worker)
            workers.data.pop(hostname, None)
        return (worker, created), subject

    def _task_event(self, event: dict[str, Any], subject: str, seq: int) -> Any:
        get = event.get
        uuid = get("uuid")
        hostname = get("hostname")
        timestamp = get("timestamp")
        local_received = get("local_received")
        clock = get("clock")
        # Inline form of _task_fields_ok() on the values needed anyway: the
        # common, well-formed event passes; anything odd is sanitised.
        if not (
            uuid.__class__ is str
            and (hostname.__class__ is str or hostname is None)
            and (
                (timestamp.__class__ is float and not timestamp - timestamp)
                or timestamp.__class__ is int
                or timestamp is None
            )
            and (
                (local_received.__class__ is float and not local_received - local_received)
                or local_received.__class__ is int
                or local_received is None
            )
            and (
                clock.__class__ is int
                or clock is None
                or (clock.__class__ is float and not clock - clock)
            )
            and _TASK_RESERVED.isdisjoint(event)
            and ((v := get("name")) is None or v.__class__ is str)
            and ((v := get("parent_id")) is None or v.__class__ is str)
            and ((v := get("root_id")) is None or v.__class__ is str)
            and ((v := get("state")) is None or v.__class__ is str)
        ):
            event = _clean_task_fields(event)
            get = event.get
            uuid = get("uuid")
            if uuid.__class__ is not str:
                return None
            hostname = get("hostname")
            timestamp = get("timestamp")
            local_received = get("local_received")
            clock = get("clock")

        tasks = self.tasks
        tdata = tasks.data
        task = tdata.get(uuid)
        if task is None:
            task = self.Task(uuid, cluster_state=self)
            tasks[uuid] = task
            task_created = True
            if self._tasks_to_resolve.data:
                self._resolve_children(task)
        else:
            task_created = False

        if subject == "sent":
            task.client = hostname
            origin: Any = hostname
        elif hostname is not None:
            workers = self.workers
            worker = workers.data.get(hostname)
            if worker is None:
                worker = self.Worker(hostname)
                workers[hostname] = worker
            else:
                workers.data.move_to_end(hostname)
            task.worker = worker
            if local_received:
                worker._heartbeat(local_received, timestamp)
            origin = worker
            if task._worker_key != hostname:
                self._index_worker(task, hostname)
        else:
            origin = task.worker

        # Time order: keep the task's latest and earliest event keys.
        last = task._last
        if last is None:
            task._last = task._first = (clock, timestamp, seq, origin)
        else:
            if not _before(clock, timestamp, origin, last):
                task._last = (clock, timestamp, seq, origin)
            if _before(clock, timestamp, origin, task._first):  # type: ignore[arg-type]
                task._first = (clock, timestamp, seq, origin)

        if subject == "received":
            self.task_count += 1
        d = task.__dict__
        if self._plain_task_event:
            # Task._merge(), inlined: the per-event hot path.
            state = _T2S_GET(subject)
            if state is not None:
                d[subject] = timestamp
            else:
                state = subject.upper()
            current = d.get("state", PENDING)
            if (
                state != RETRY
                and current != RETRY
                and _PREC_GET(state, NONE_PRECEDENCE) > _PREC_GET(current, NONE_PRECEDENCE)
            ):
                keep = task.merge_rules.get(state)
                if keep is not None:
                    for k in keep:
                        if k in event:
                            d[k] = event[k]
                else:
                    d.update(event)
            else:
                d.update(event)
                d["state"] = state
                d["timestamp"] = timestamp
        else:  # a Task subclass with its own event(): call it, as Celery does
            task.event(subject, timestamp, local_received, event)

        name = d.get("name")
        if name.__class__ is str and task._type_key != name:
            self._index_type(task, name)
        parent_id = d.get("parent_id")
        if parent_id.__class__ is str:
            if task._parent_key != parent_id:
                self._link_parent(task, parent_id)
            elif parent_id in tdata:
                # Celery touches the parent on every child event (LRU order).
                tdata.move_to_end(parent_id)
        return (task, task_created), subject

    # -- order and queries
    def rebuild_taskheap(self) -> None:
        """(Re)build time keys and indexes for tasks that lack them.

        Celery rebuilds its event heap here; this State keeps per-task keys
        instead, so this only fills in tasks given to the constructor or
        created by hand.
        """
        for task in list(self.tasks.data.values()):
            if not isinstance(task, Task):
                continue
            if task.cluster_state is None:
                task.cluster_state = self
            if task._last is None and (task.clock or task.timestamp):
                origin = task.worker if task.worker is not None else task.client
                task._last = task._first = (task.clock, task.timestamp, 0, origin)
            name = task.name
            if name.__class__ is str and task._type_key != name:
                self._index_type(task, name)
            worker = task.worker
            if worker is not None and worker.hostname.__class__ is str:
                if task._worker_key != worker.hostname:
                    self._index_worker(task, worker.hostname)

    def _ordered(
        self, tasks: Iterable[Task], reverse: bool, limit: int | None = None
    ) -> list[Task]:
        """Tasks sorted by their latest (``reverse``) or earliest event key.

        Rows are ``(clock, origin, seq, timestamp, task)``: when every key has a
        clock (the normal case, the receiver fills it in) plain tuple order is
        Celery's order and the sort runs in C; otherwise Celery's mixed
        clock/timestamp comparison is applied.  ``seq`` is unique, so ``task``
        itself is never compared.
        """
        origins: dict[int, str] = {}
        rows = []
        append = rows.append
        all_clocks = True
        for task in tasks:
            key = task._last if reverse else task._first
            if key is None:
                continue
            clock, ts, seq, origin = key
            if origin.__class__ is str:
                o = origin
            else:
                o = origins.get(id(origin))  # type: ignore[assignment]
                if o is None:
                    o = origins[id(origin)] = _origin_str(origin)
            if not clock:
                all_clocks = False
            append((clock, o, seq, ts, task))
        if all_clocks:
            try:
                if limit is not None and limit < len(rows):
                    pick = heapq.nlargest if reverse else heapq.nsmallest
                    rows = pick(limit, rows)
                else:
                    rows.sort(reverse=reverse)
                return [r[4] for r in rows]
            except TypeError:  # pragma: no cover - clocks are numbers by construction
                pass
        rows.sort(key=cmp_to_key(_row_cmp), reverse=reverse)
        return [r[4] for r in rows[:limit]]

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, Task]]:
        for index, row in enumerate(self.tasks.items()):
            yield row
            if limit and index + 1 >= limit:
                break

    def tasks_by_time(
        self, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        """Yield ``(uuid, task)`` by time of the task's latest event (newest first).

        With ``reverse=False``, oldest first by each task's earliest event.
        ``limit`` is a number of tasks.
        """
        with self._mutex:
            ordered = self._ordered(list(self.tasks.data.values()), reverse, limit)
        for task in ordered:
            yield task.uuid, task

    tasks_by_timestamp = tasks_by_time

    def _tasks_by_type(
        self, name: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        """Tasks of one type in time order (slower than the ``tasks_by_type`` index)."""
        with self._mutex:
            bucket = self.tasks_by_type.get(name)
            members = list(bucket) if bucket else []
            ordered = self._ordered(members, reverse, limit)
        return ((t.uuid, t) for t in ordered)

    def _tasks_by_worker(
        self, hostname: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, Task]]:
        """Tasks of one worker in time order (slower than the ``tasks_by_worker`` index)."""
        with self._mutex:
            bucket = self.tasks_by_worker.get(hostname)
            members = list(bucket) if bucket else []
            ordered = self._ordered(members, reverse, limit)
        return ((t.uuid, t) for t in ordered)

    def task_types(self) -> list[str]:
        """Sorted list of the task names seen (bounded)."""
        return sorted(self._seen_types)

    def alive_workers(self) -> Iterator[Worker]:
        """Workers that look alive now."""
        return (w for w in self.workers.values() if w.alive)

    def __repr__(self) -> str:
        return R_STATE.format(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.event_callback,
            self.workers,
            self.tasks,
            None,
            self.max_workers_in_memory,
            self.max_tasks_in_memory,
            self.on_node_join,
            self.on_node_leave,
            {name: [t.id for t in ts] for name, ts in self.tasks_by_type.items()},
            {name: [t.id for t in ts] for name, ts in self.tasks_by_worker.items()},
        )
