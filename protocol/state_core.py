"""The events State aggregate: workers and tasks built from Celery events, sans-IO.

:class:`ClusterState` is the time-explicit, lock-free core behind
:class:`wkctl.protocol.state.State` (the Celery drop-in).  It takes decoded
events (``local_received`` and ``clock`` filled in, as Celery's receiver
hands them over), calls no user code, reads no clock (liveness is asked at
an explicit ``now``) and does no logging: clock-drift warnings queue in
:attr:`ClusterState.drift` for the caller to log.  One thread at a time:
code that shares a State between threads holds a lock around it (the
facade does, and so does the monitor the CLI commands share).

The differences from Celery's State (every event accepted, bounded memory,
time order covering every task, indexes following late information,
liveness on the local clock, LRU eviction of workers) are listed in
:mod:`wkctl.protocol.state`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from weakref import WeakSet

from .state_drift import HEARTBEAT_DRIFT_MAX, DriftWarnings, drift_of
from .state_fields import clean_task_fields, task_values_ok
from .state_lru import CallableDefaultdict, LRUCache
from .state_order import before, ordered
from .state_task import Task as TaskT
from .state_task import merge_event
from .state_worker import Worker as WorkerT
from .task_states import READY_STATES

__all__ = ("ClusterState", "R_STATE")

R_STATE = "<State: events={0.event_count} tasks={0.task_count}>"

#: What ``event()`` returns for one event: ``((obj, created), subject)``, a
#: custom handler's result, or ``None`` for an ignored event.
EventResult = Any


class ClusterState:
    """Workers and tasks from events, bounded in memory, without locks, clocks or callbacks.

    ``workers`` and ``tasks`` are :class:`LRUCache` mappings bounded by
    ``max_workers_in_memory`` / ``max_tasks_in_memory``; ``tasks_by_type`` /
    ``tasks_by_worker`` are callable indexes of weak sets.
    """

    Worker: ClassVar[type[WorkerT]] = WorkerT
    Task: ClassVar[type[TaskT]] = TaskT
    #: The mapping type of ``workers`` / ``tasks`` (the facade's adds a mutex).
    LRU: ClassVar[type[LRUCache]] = LRUCache
    event_count = 0
    task_count = 0
    #: Kept for compatibility: Celery bounds its event heap to
    #: ``heap_multiplier * max_tasks_in_memory``; this State has no heap.
    heap_multiplier = 4

    def __init__(
        self,
        max_workers_in_memory: int = 5000,
        max_tasks_in_memory: int = 10000,
        workers: Any = None,
        tasks: Any = None,
    ) -> None:
        self.max_workers_in_memory = max_workers_in_memory
        self.max_tasks_in_memory = max_tasks_in_memory
        #: Clock-drift warnings waiting for the caller to log them.
        self.drift = DriftWarnings()
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
            getattr(self.Task, "event", None) is TaskT.event
            and getattr(self.Task, "_merge", None) is TaskT._merge
        )
        # Tasks given to the constructor get their time keys and indexes.
        self.rebuild_taskheap()

    def _adopt_mapping(
        self, mapping: Any, limit: int, on_remove: Callable[[Any, Any], None] | None
    ) -> LRUCache:
        if isinstance(mapping, LRUCache):
            mapping.limit = limit
            mapping.on_remove = on_remove
            return mapping
        lru = self.LRU(limit, on_remove)
        if mapping:
            for k, v in dict(mapping.items() if hasattr(mapping, "items") else mapping).items():
                lru[k] = v
        return lru

    # -- indexes: exact (a task leaves them when it leaves ``tasks``) and bounded
    def _task_removed(self, uuid: Any, task: TaskT) -> None:
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
            _discard(self.tasks_by_type, key, task)
        key = task._worker_key
        if key is not None:
            task._worker_key = None
            _discard(self.tasks_by_worker, key, task)

    def _index_type(self, task: TaskT, name: str) -> None:
        old = task._type_key
        by_type = self.tasks_by_type
        if old is not None:
            _discard(by_type, old, task)
        task._type_key = name
        by_type[name].add(task)
        seen = self._seen_types
        if name not in seen:
            seen[name] = None
            if len(seen) > max(self.max_tasks_in_memory, 1):
                del seen[next(iter(seen))]

    def _index_worker(self, task: TaskT, hostname: str) -> None:
        old = task._worker_key
        by_worker = self.tasks_by_worker
        if old is not None:
            _discard(by_worker, old, task)
        task._worker_key = hostname
        by_worker[hostname].add(task)

    def _link_parent(self, task: TaskT, parent_id: str) -> None:
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

    def _resolve_children(self, task: TaskT) -> None:
        pending = self._tasks_to_resolve
        if pending.data:
            children = pending.data.pop(task.uuid, None)
            if children:
                task.children.update(children)

    # -- clearing
    def freeze_while(
        self, fun: Callable[..., Any], *args: Any, clear_after: bool = False, **kwargs: Any
    ) -> Any:
        """Call ``fun`` (and clear the state after, if asked)."""
        try:
            return fun(*args, **kwargs)
        finally:
            if clear_after:
                self.clear()

    def clear_tasks(self, ready: bool = True) -> None:
        """Forget finished tasks (all tasks unless ``ready``) and pending child links."""
        if ready:
            done = [u for u, t in self.tasks.data.items() if t.state in READY_STATES]
            for u in done:
                del self.tasks[u]
        else:
            self.tasks.clear()
            self.tasks_by_type.clear()
            self.tasks_by_worker.clear()
        self._tasks_to_resolve.data.clear()

    def clear(self, ready: bool = True) -> None:
        """Forget workers, counters and tasks (only finished ones if ``ready``)."""
        self.workers.clear()
        self.clear_tasks(ready)
        self.event_count = 0
        self.task_count = 0

    # -- get or create
    def get_or_create_worker(self, hostname: str, **kwargs: Any) -> tuple[WorkerT, bool]:
        """Get or create worker by hostname; returns ``(worker, created)``."""
        workers = self.workers
        worker: WorkerT | None = workers.data.get(hostname)
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

    def get_or_create_task(self, uuid: str) -> tuple[TaskT, bool]:
        """Get or create task by uuid; returns ``(task, created)``."""
        tasks = self.tasks
        task: TaskT | None = tasks.data.get(uuid)
        if task is not None:
            tasks.data.move_to_end(uuid)
            return task, False
        task = self.Task(uuid, cluster_state=self)
        tasks[uuid] = task
        self._resolve_children(task)
        return task, True

    # -- events
    def event(self, event: Any) -> EventResult:
        """Apply one event, or each event of a ``task.multi`` list in order.

        Returns what Celery returns for one event: ``((obj, created),
        subject)`` for worker and task events, ``None`` for an ignored
        event; a list of those for a batch.  Never raises on event content.
        """
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

    def _event(self, event: Any) -> EventResult:
        self.event_count = seq = self.event_count + 1
        if event.__class__ is not dict and not isinstance(event, dict):
            return None
        type_ = event.get("type")
        if type_.__class__ is not str:
            return None
        group, _, subject = type_.partition("-")
        if group == "task":
            return self._task_event(event, subject, seq)
        if group == "worker":
            return self._worker_event(event, subject)
        return None

    def _worker_event(self, event: dict[str, Any], subject: str) -> EventResult:
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
        timestamp, local_received = event["timestamp"], event["local_received"]
        worker.event(subject, timestamp, local_received, event)
        if not is_offline and (
            local_received.__class__ is not float
            or timestamp.__class__ is not float
            or not -HEARTBEAT_DRIFT_MAX <= local_received - timestamp <= HEARTBEAT_DRIFT_MAX
        ):  # the common heartbeat (two close floats) is done; drift_of() decides the rest
            found = drift_of(local_received, timestamp)
            if found is not None:
                self.drift.observe(hostname, *found)
        return (worker, created), subject

    def _task_event(self, event: dict[str, Any], subject: str, seq: int) -> EventResult:
        get = event.get
        uuid = get("uuid")
        hostname = get("hostname")
        timestamp = get("timestamp")
        local_received = get("local_received")
        clock = get("clock")
        if not (
            uuid.__class__ is str
            and task_values_ok(hostname, timestamp, local_received, clock, event)
        ):
            event = clean_task_fields(event)
            get = event.get
            uuid = get("uuid")
            if uuid.__class__ is not str:
                return None
            hostname = get("hostname")
            timestamp = get("timestamp")
            local_received = get("local_received")
            clock = get("clock")

        tdata = self.tasks.data
        task = tdata.get(uuid)
        if task is None:
            task, task_created = self._new_task(uuid), True
        else:
            task_created = False
        origin = self._task_origin(task, subject, hostname, timestamp, local_received)
        # Time order: keep the task's latest and earliest event keys.  Two
        # different clocks (the common case) decide without calling before().
        last = task._last
        if last is None:
            task._last = task._first = (clock, timestamp, seq, origin)
        else:
            c0 = last[0]
            if not (
                clock < c0
                if clock and c0 and clock != c0
                else before(clock, timestamp, origin, last)
            ):
                task._last = (clock, timestamp, seq, origin)
            first: Any = task._first
            c0 = first[0]
            if (
                clock < c0
                if clock and c0 and clock != c0
                else before(clock, timestamp, origin, first)
            ):
                task._first = (clock, timestamp, seq, origin)
        if subject == "received":
            self.task_count += 1
        d = task.__dict__
        if self._plain_task_event:
            merge_event(task, d, subject, timestamp, event)
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

    def _new_task(self, uuid: str) -> TaskT:
        """A new task of ``uuid`` in ``tasks``, adopting children waiting for it."""
        task = self.Task(uuid, cluster_state=self)
        self.tasks[uuid] = task
        if self._tasks_to_resolve.data:
            self._resolve_children(task)
        return task

    def _task_origin(
        self, task: TaskT, subject: str, hostname: Any, timestamp: Any, local_received: Any
    ) -> Any:
        """Who sent this task event (client name or Worker), linking the task to its worker.

        A task event from a worker also counts as that worker's heartbeat,
        at the local receive time.
        """
        if subject == "sent":
            task.client = hostname
            return hostname
        if hostname is None:
            return task.worker
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
            if timestamp:
                drift = local_received - timestamp
                if drift > HEARTBEAT_DRIFT_MAX or drift < -HEARTBEAT_DRIFT_MAX:
                    self.drift.observe(hostname, drift, local_received, timestamp)
        if task._worker_key != hostname:
            self._index_worker(task, hostname)
        return worker

    # -- order and queries
    def rebuild_taskheap(self) -> None:
        """(Re)build time keys and indexes for tasks that lack them.

        Celery rebuilds its event heap here; this State keeps per-task keys
        instead, so this only fills in tasks given to the constructor or
        created by hand.
        """
        for task in list(self.tasks.data.values()):
            if not isinstance(task, TaskT):
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
        self, members: Callable[[], list[TaskT]], reverse: bool, limit: int | None
    ) -> list[TaskT]:
        """``members()`` in time order (see :func:`.state_order.ordered`)."""
        return ordered(members(), reverse, limit)

    def _all_tasks(self) -> list[TaskT]:
        return list(self.tasks.data.values())

    def itertasks(self, limit: int | None = None) -> Iterator[tuple[str, TaskT]]:
        for index, row in enumerate(self.tasks.items()):
            yield row
            if limit and index + 1 >= limit:
                break

    def tasks_by_time(
        self, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, TaskT]]:
        """Yield ``(uuid, task)`` by time of the task's latest event (newest first).

        With ``reverse=False``, oldest first by each task's earliest event.
        ``limit`` is a number of tasks.
        """
        for task in self._ordered(self._all_tasks, reverse, limit):
            yield task.uuid, task  # type: ignore[misc]

    tasks_by_timestamp = tasks_by_time

    def _tasks_by_type(
        self, name: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, TaskT]]:
        """Tasks of one type in time order (slower than the ``tasks_by_type`` index)."""
        found = self._ordered(lambda: _members(self.tasks_by_type, name), reverse, limit)
        return ((t.uuid, t) for t in found)  # type: ignore[misc]

    def _tasks_by_worker(
        self, hostname: str, limit: int | None = None, reverse: bool = True
    ) -> Iterator[tuple[str, TaskT]]:
        """Tasks of one worker in time order (slower than the ``tasks_by_worker`` index)."""
        found = self._ordered(lambda: _members(self.tasks_by_worker, hostname), reverse, limit)
        return ((t.uuid, t) for t in found)  # type: ignore[misc]

    def task_types(self) -> list[str]:
        """Sorted list of the task names seen (bounded)."""
        return sorted(self._seen_types)

    def alive_workers_at(self, now: float) -> Iterator[WorkerT]:
        """Workers whose last heartbeat has not expired at ``now``."""
        return (w for w in self.workers.values() if w.is_alive(now))

    def __repr__(self) -> str:
        return R_STATE.format(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (
            self.max_workers_in_memory,
            self.max_tasks_in_memory,
            self.workers,
            self.tasks,
        )


def _discard(index: CallableDefaultdict, key: str, task: TaskT) -> None:
    """Drop ``task`` from ``index[key]``, and the key when its set empties."""
    bucket = index.get(key)
    if bucket is not None:
        bucket.discard(task)
        if not bucket:
            del index[key]


def _members(index: CallableDefaultdict, key: str) -> list[TaskT]:
    bucket = index.get(key)
    return list(bucket) if bucket else []
