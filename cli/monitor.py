"""The one event consumer behind ``dump``, ``top`` and ``exporter``.

It opens the event stream ``tail`` uses, stamps each event as Celery's
receiver does, feeds it to one :class:`~wkctl.protocol.state_core.ClusterState`
(the lock-free, clock-free core of the Celery-compatible State) and,
when given, to :class:`~wkctl.protocol.metrics.ClusterMetrics` (after
State, which the metrics read).  Commands differ only in what they do
between two :meth:`Monitor.step` calls: wait, draw, or serve scrapes.

Threads meet here, not in the State: :class:`Monitor` applies a batch
under its ``lock``, which the exporter's HTTP threads take to read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from wkctl.protocol.client import Client, EventStream, StreamNotice, prepare_event
from wkctl.protocol.clock import LamportClock
from wkctl.protocol.metrics import ClusterMetrics
from wkctl.protocol.state import log_drift
from wkctl.protocol.state_core import ClusterState

from .context import AppContext
from .tail import open_stream

__all__ = ["Ingest", "Monitor"]


class Ingest:
    """Applies decoded events to one State and, when given, the metrics.

    No I/O but logging the clock-drift warnings the State queued.

    The per-event work shared by every monitoring command: stamp the event
    as Celery's receiver does, let State take it, check it against the
    schemas (``validate``) and count it.  Benchmarks drive it directly.
    """

    def __init__(
        self,
        *,
        metrics: ClusterMetrics | None = None,
        validate: bool = False,
        max_tasks: int = 10000,
        max_workers: int = 5000,
    ) -> None:
        self.state = ClusterState(max_tasks_in_memory=max_tasks, max_workers_in_memory=max_workers)
        self.clock = LamportClock()
        self.metrics = metrics
        self.is_valid: Callable[[Any, str], bool] | None = None
        if validate:
            from wkctl.protocol.validation import is_valid

            self.is_valid = is_valid

    def apply(self, batch: list[Any], now: float) -> None:
        state, metrics, clock, check = self.state, self.metrics, self.clock, self.is_valid
        for event in batch:
            event = prepare_event(event, clock, now)
            state.event(event)
            if metrics is not None:
                if check is not None and not check(event, "event"):
                    metrics.invalid(event, now)
                metrics.observe(event, state, now)
        if state.drift.pending:
            log_drift(state.drift.take())


class Monitor:
    """State (and metrics) fed from the event exchange, one poll at a time.

    ``lock`` (a context manager) is held while a batch is applied, so that
    another thread (the exporter's HTTP server) can read a consistent
    State and metrics under the same lock; the wait for events is outside
    it.  ``validate`` checks every event against the schemas and counts
    the invalid ones in the metrics (State takes them anyway, sanitised).
    """

    def __init__(
        self,
        app: AppContext,
        *,
        metrics: ClusterMetrics | None = None,
        validate: bool = False,
        lock: Any = None,
        max_tasks: int = 10000,
        max_workers: int = 5000,
        on_notice: Callable[[StreamNotice], None] | None = None,
    ) -> None:
        self.app = app
        self.ingest = Ingest(
            metrics=metrics, validate=validate, max_tasks=max_tasks, max_workers=max_workers
        )
        self.state = self.ingest.state
        self.metrics = metrics
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self._user_notice = on_notice
        self.stream: EventStream = open_stream(app, on_notice=self._notice)
        self._refused_seen = 0

    def _notice(self, notice: StreamNotice) -> None:
        if self.metrics is not None:
            self.metrics.broker_connected = notice.kind != "lost"
        if self._user_notice is not None:
            self._user_notice(notice)

    def ask_heartbeats(self) -> None:
        """Ask every worker for a heartbeat now (what Celery's monitors do at start)."""
        assert self.stream.connection is not None
        with Client(
            self.stream.connection, self.app.settings.names, limits=self.app.config.limits
        ) as client:
            client.heartbeat()

    def step(self, timeout: float, deadline: float | None = None) -> int:
        """Wait up to ``timeout`` s for events and apply them; the number applied."""
        batch = self.stream.poll(timeout, deadline)
        rejected = self.stream.rejected
        if not batch and self._refused_seen == len(rejected):
            return 0
        metrics = self.metrics
        with self.lock:
            now = time.time()
            if metrics is not None:
                while self._refused_seen < len(rejected):
                    reason, _detail = rejected[self._refused_seen]
                    self._refused_seen += 1
                    metrics.refused("message", reason)
                # Refusal details are kept for tail's summary only: bound them here.
                if len(rejected) > 1000:
                    del rejected[:-100]
                    self._refused_seen = len(rejected)
            self.ingest.apply(batch, now)
        return len(batch)

    def close(self) -> None:
        self.stream.close()
