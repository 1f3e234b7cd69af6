"""One task as the events State sees it: its fields, merged from out-of-order events.

The merge follows Celery's: the state precedence of :mod:`.task_states`
decides whether an event moves the task forward or only fills in fields
(:attr:`Task.merge_rules`).  ``parent`` / ``root`` / ``children`` are looked
up in the State that holds the task (``cluster_state``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from weakref import WeakSet

from .state_fields import TASK_RESERVED, clean_task_fields, number, task_fields_ok
from .task_states import (
    NONE_PRECEDENCE,
    PENDING,
    PRECEDENCE_LOOKUP,
    READY_STATES,
    RECEIVED,
    RETRY,
    TASK_EVENT_TO_STATE,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .state_core import ClusterState
    from .state_worker import Worker

__all__ = ("Task", "R_TASK")

R_TASK = "<Task: {0.name}({0.uuid}) {0.state} clock:{0.clock}>"

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

    # Documented fields default to None (event fields of any JSON type).
    name: Any = None
    received: Any = None
    sent: Any = None
    started: Any = None
    succeeded: Any = None
    failed: Any = None
    retried: Any = None
    revoked: Any = None
    rejected: Any = None
    args: Any = None
    kwargs: Any = None
    eta: Any = None
    expires: Any = None
    retries: Any = None
    result: Any = None
    exception: Any = None
    timestamp: Any = None
    runtime: Any = None
    traceback: Any = None
    exchange: Any = None
    routing_key: Any = None
    root_id: Any = None
    parent_id: Any = None
    client: Any = None
    state: str = PENDING
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
        cluster_state: ClusterState | None = None,
        children: Iterable[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.uuid = uuid
        self.cluster_state = cluster_state
        self.worker: Worker | None = kwargs.pop("worker", None) if kwargs else None
        self._children: WeakSet[Task] | None = None
        #: Time keys ``(clock, timestamp, seq, origin)`` of the earliest and
        #: latest event (see :mod:`.state_order`).
        self._first: tuple[Any, ...] | None = None
        self._last: tuple[Any, ...] | None = None
        #: The keys this task is indexed under in its State.
        self._type_key: str | None = None
        self._worker_key: str | None = None
        self._parent_key: str | None = None
        if children and cluster_state is not None:
            data = cluster_state.tasks.data
            self._children = WeakSet(data[c] for c in children if c in data)
        if kwargs:
            d = self.__dict__
            for k, v in kwargs.items():
                if k not in TASK_RESERVED:
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
            if fields.__class__ is not dict or not task_fields_ok(fields):
                fields = clean_task_fields(fields)
            if fields.get("uuid", self.uuid) != self.uuid:
                fields = {k: v for k, v in fields.items() if k != "uuid"}
        if type_.__class__ is not str:
            return
        ts = timestamp if timestamp.__class__ is float else number(timestamp)
        self._merge(type_, ts, fields or {})

    def _merge(self, type_: str, timestamp: float | None, fields: dict[str, Any]) -> None:
        merge_event(self, self.__dict__, type_, timestamp, fields)

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
            found: Task | None = cs.tasks.data.get(task_id)
        except TypeError:  # unhashable id set by hand
            return None
        return found

    @property
    def parent(self) -> Task | None:
        """The parent task if in memory (looked up each time; Celery caches misses)."""
        return self._lookup(self.parent_id)

    @property
    def root(self) -> Task | None:
        """The root task if in memory (looked up each time; Celery caches misses)."""
        return self._lookup(self.root_id)


def merge_event(
    task: Task, d: dict[str, Any], type_: str, timestamp: float | None, fields: dict[str, Any]
) -> None:
    """Merge one sanitised event into ``task`` (whose ``__dict__`` is ``d``).

    The one home of the merge rule: :meth:`Task.event` and the State's
    per-event path both call it.
    """
    state = _T2S_GET(type_)
    if state is not None:
        d[type_] = timestamp
    else:
        state = type_.upper()  # type: ignore[assignment]
    current = d.get("state", PENDING)
    if (
        state != RETRY
        and current != RETRY
        and _PREC_GET(state, NONE_PRECEDENCE) > _PREC_GET(current, NONE_PRECEDENCE)
    ):
        # This event logically happens before the current state: merge.
        keep = task.merge_rules.get(state)  # type: ignore[arg-type]
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


def _depickle_task(cls: type[Task], fields: dict[str, Any]) -> Task:
    return cls(**fields)
