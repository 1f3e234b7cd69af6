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

The modules, one concept each (all sans-IO: no clock, lock, logging or
user callback; time comes in as an argument):

* :mod:`.task_states` -- task states and their precedence (``celery.states``);
* :mod:`.state_fields` -- which event fields a Worker / Task may take;
* :mod:`.state_worker` / :mod:`.state_task` -- one worker, one task;
* :mod:`.state_order` -- the time order of ``tasks_by_time``;
* :mod:`.state_drift` -- clock drift and its rate-limited warnings;
* :mod:`.state_lru` -- the bounded containers;
* :mod:`.state_core` -- :class:`~.state_core.ClusterState`, the aggregate.

This module is the thin Celery-compatible layer over them: ``State`` takes
a lock around ``event()`` and the queries (as Celery's does), runs the
user's callbacks and handlers, and logs the drift warnings; ``Worker``
adds ``alive`` / ``status_string``, which read the wall clock.  Code that
owns its threading and clock (the CLI's monitor) uses ``ClusterState``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .state_core import R_STATE, ClusterState
from .state_drift import DRIFT_WARNINGS_PER_MINUTE, HEARTBEAT_DRIFT_MAX, DriftWarning
from .state_lru import CallableDefaultdict
from .state_lru import LRUCache as _LRUCache
from .state_task import R_TASK, Task
from .state_task import Task as TaskT
from .state_worker import HEARTBEAT_EXPIRE_WINDOW, heartbeat_expires
from .state_worker import Worker as _CoreWorker
from .task_states import (
    ALL_STATES,
    EXCEPTION_STATES,
    FAILURE,
    IGNORED,
    NONE_PRECEDENCE,
    PENDING,
    PRECEDENCE,
    PRECEDENCE_LOOKUP,
    PROPAGATE_STATES,
    READY_STATES,
    RECEIVED,
    REJECTED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    TASK_EVENT_TO_STATE,
    UNREADY_STATES,
    precedence,
)
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

# Names this module has always had, beyond __all__.
_COMPAT = (
    PRECEDENCE,
    PRECEDENCE_LOOKUP,
    NONE_PRECEDENCE,
    DRIFT_WARNINGS_PER_MINUTE,
    R_STATE,
    R_TASK,
)

logger = logging.getLogger(__name__)

R_WORKER = "<Worker: {0.hostname} ({0.status_string} clock:{0.clock})"


def log_drift(warnings: Iterable[DriftWarning]) -> None:
    """Log clock-drift warnings (as Celery's State does); peer values are escaped."""
    for w in warnings:
        logger.warning(
            "Substantial drift from %s may mean clocks are out of sync.  Current drift is "
            "%s seconds.  [orig: %s recv: %s]",
            printable(w.hostname),
            int(w.drift),
            printable(w.timestamp, 40),
            printable(w.local_received, 40),
        )


class LRUCache(_LRUCache):
    """:class:`.state_lru.LRUCache` with Celery's ``mutex`` attribute.

    The cache itself never takes it; it is there for callers that share one
    cache between threads, as with Celery's.
    """

    def __init__(
        self,
        limit: int | None = None,
        on_remove: Callable[[Any, Any], None] | None = None,
    ) -> None:
        super().__init__(limit, on_remove)
        self.mutex = threading.RLock()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.mutex = threading.RLock()


class Worker(_CoreWorker):
    """``celery.events.state.Worker``: the core Worker plus wall-clock liveness.

    ``alive`` / ``status_string`` read ``time.time()``; sans-IO callers use
    ``is_alive(now)`` with their own clock.
    """

    __slots__ = ()

    def is_alive(self, now: float | None = None) -> bool:
        """``alive`` at an explicit time (now, by the wall clock, if not given)."""
        return super().is_alive(time.time() if now is None else now)

    @property
    def alive(self) -> bool:
        return self.is_alive()

    @property
    def status_string(self) -> str:
        return "ONLINE" if self.alive else "OFFLINE"

    def __repr__(self) -> str:
        return R_WORKER.format(self)


class State(ClusterState):
    """Cluster state built from events (drop-in for ``celery.events.state.State``).

    ``workers`` and ``tasks`` are :class:`LRUCache` mappings bounded by
    ``max_workers_in_memory`` / ``max_tasks_in_memory``;
    ``tasks_by_type`` / ``tasks_by_worker`` are callable indexes of weak sets.
    ``event()`` is thread-safe (one lock, like Celery's), and so are the
    time-ordered queries and ``clear``; ``callback`` is called with every
    event, ``on_node_join`` / ``on_node_leave`` with the Worker, and
    ``handlers[group](subject, event)`` takes the events of a custom group.
    """

    Worker = Worker
    Task = Task
    LRU = LRUCache

    def __init__(
        self,
        callback: Callable[[State, dict[str, Any]], Any] | None = None,
        workers: Any = None,
        tasks: Any = None,
        taskheap: Any = None,
        max_workers_in_memory: int = 5000,
        max_tasks_in_memory: int = 10000,
        on_node_join: Callable[[_CoreWorker], Any] | None = None,
        on_node_leave: Callable[[_CoreWorker], Any] | None = None,
        tasks_by_type: Any = None,
        tasks_by_worker: Any = None,
    ) -> None:
        self.event_callback = callback
        self.on_node_join = on_node_join
        self.on_node_leave = on_node_leave
        # Re-entrant: a freeze_while() callback (a snapshot camera) may query
        # tasks_by_time() / tasks_by_type(), which take the lock too.
        self._mutex = threading.RLock()
        #: Custom handlers by event group: ``handlers['foo'](subject, event)``.
        self.handlers: dict[str, Callable[[str, dict[str, Any]], Any]] = {}
        # ``taskheap`` / ``tasks_by_type`` / ``tasks_by_worker`` are accepted for
        # signature compatibility (Celery's pickling passes them); the order and
        # the indexes are rebuilt from the tasks themselves.
        super().__init__(max_workers_in_memory, max_tasks_in_memory, workers, tasks)

    # -- thread safety: one lock around every change and every ordered query
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
                result: Any = [_event(e) for e in event]
            else:
                result = self._event(event)
            drift = self.drift.take() if self.drift.pending else None
        if drift:
            log_drift(drift)
        return result

    def freeze_while(
        self, fun: Callable[..., Any], *args: Any, clear_after: bool = False, **kwargs: Any
    ) -> Any:
        """Call ``fun`` with events blocked (and clear the state after, if asked)."""
        with self._mutex:
            return super().freeze_while(fun, *args, clear_after=clear_after, **kwargs)

    def clear_tasks(self, ready: bool = True) -> None:
        with self._mutex:
            super().clear_tasks(ready)

    def clear(self, ready: bool = True) -> None:
        """Forget workers, counters and tasks (only finished ones if ``ready``)."""
        with self._mutex:
            super().clear(ready)

    def _ordered(
        self, members: Callable[[], list[TaskT]], reverse: bool, limit: int | None
    ) -> list[TaskT]:
        with self._mutex:
            return super()._ordered(members, reverse, limit)

    # -- user code: the callback, custom handlers, join / leave
    def _event(self, event: Any) -> Any:
        self.event_count = seq = self.event_count + 1
        if event.__class__ is not dict and not isinstance(event, dict):
            return None
        if self.event_callback is not None:
            self.event_callback(self, event)
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
            result = self._worker_event(event, subject)
            if result is not None and (
                self.on_node_join is not None or self.on_node_leave is not None
            ):
                self._join_or_leave(result[0], subject)
            return result
        return None

    def _join_or_leave(self, found: tuple[_CoreWorker, bool], subject: str) -> None:
        worker, created = found
        if self.on_node_join is not None and (created or subject == "online"):
            self.on_node_join(worker)
        if self.on_node_leave is not None and subject == "offline":
            self.on_node_leave(worker)
            self.workers.data.pop(worker.hostname, None)

    # -- wall clock
    def alive_workers(self) -> Iterator[_CoreWorker]:
        """Workers that look alive now."""
        return (w for w in self.workers.values() if w.alive)

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
