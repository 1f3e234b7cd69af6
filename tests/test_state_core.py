"""The events State core: sans-IO in fact (no clock, lock, logging or callback).

``wkctl.protocol.state`` is the Celery drop-in; these tests hold its core
modules to what the facade promises about them: they import no I/O module,
take time as an argument, queue drift warnings instead of logging them, and
leave locks, callbacks and the wall clock to the facade.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from wkctl.protocol.state import State
from wkctl.protocol.state_core import ClusterState
from wkctl.protocol.state_drift import DRIFT_WARNINGS_PER_MINUTE

T0 = 1_795_249_881.0

#: The modules behind ``wkctl.protocol.state`` that must stay sans-IO.
CORE = (
    "task_states",
    "state_fields",
    "state_lru",
    "state_drift",
    "state_worker",
    "state_task",
    "state_order",
    "state_core",
)
FORBIDDEN = {"time", "os", "threading", "socket", "uuid", "kombu", "logging", "random"}


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(absolute top-level modules, relative sibling modules) imported anywhere in ``module``."""
    spec = importlib.util.find_spec(f"wkctl.protocol.{module}")
    assert spec is not None and spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    absolute: set[str] = set()
    relative: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative.add(node.module or "")
            else:
                absolute.add((node.module or "").split(".")[0])
        assert not isinstance(node, ast.Global), f"{module}: module-global state ({node.names})"
    return absolute, relative


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_io(module: str) -> None:
    absolute, relative = _imports(module)
    assert not absolute & FORBIDDEN, f"{module} imports {sorted(absolute & FORBIDDEN)}"
    # Only siblings in the core: the closure of the core is the core.
    assert relative <= set(CORE), f"{module} imports {sorted(relative - set(CORE))}"
    # And the forbidden modules are not reached through a package either.
    assert "wkctl" not in absolute, module


def _heartbeat(host: str, t: float, local: float, **kw: Any) -> dict[str, Any]:
    return {
        "type": "worker-heartbeat",
        "hostname": host,
        "timestamp": t,
        "local_received": local,
        "clock": 1,
        "freq": 2.0,
        **kw,
    }


def test_core_liveness_is_asked_at_an_explicit_time() -> None:
    s = ClusterState()
    s.event(_heartbeat("w1@lab", T0, T0))
    w = s.workers["w1@lab"]
    assert not hasattr(w, "alive") and not hasattr(w, "status_string")
    assert w.is_alive(T0 + 3.9) and not w.is_alive(T0 + 4.1)
    assert [x.hostname for x in s.alive_workers_at(T0 + 1)] == ["w1@lab"]
    assert list(s.alive_workers_at(T0 + 5)) == []
    assert not hasattr(s, "_mutex") and not hasattr(s.tasks, "mutex")


def test_core_drift_warnings_queue_per_state_on_the_event_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rate limit per State and per minute of local receive time; nothing is logged."""
    s, other = ClusterState(), ClusterState()
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            s.event(_heartbeat(f"forged-{i}@h", 1.0, T0 + i / 100))
        s.event(_heartbeat("forged-0@h", 1.0, T0 + 1))  # once per hostname
        s.event(_heartbeat("close@h", T0 + 2, T0 + 2))  # 0 s of drift
    assert caplog.records == []
    queued = s.drift.take()
    assert len(queued) == DRIFT_WARNINGS_PER_MINUTE and s.drift.take() == []
    assert queued[0].hostname == "forged-0@h" and int(queued[0].drift) == int(T0 - 1.0)
    # A minute later on the events' clock, new hosts may warn again.
    s.event(_heartbeat("late@h", 1.0, T0 + 61))
    assert [w.hostname for w in s.drift.take()] == ["late@h"]
    # Another State has its own limiter (nothing module-global).
    other.event(_heartbeat("forged-1@h", 1.0, T0))
    assert [w.hostname for w in other.drift.take()] == ["forged-1@h"]


def test_core_drift_from_task_events_and_odd_times() -> None:
    s = ClusterState()
    task = {"type": "task-started", "uuid": "u1", "hostname": "w@h", "clock": 2}
    s.event(task | {"timestamp": 1.0, "local_received": T0})
    assert [w.hostname for w in s.drift.take()] == ["w@h"]
    # Unusable times record no heartbeat and no drift (as before the split).
    for ts in (0.0, float("inf"), float("nan"), "now", None):
        s.event(_heartbeat(f"odd-{ts}@h", ts, T0))  # type: ignore[arg-type]
    assert s.drift.take() == []


def test_facade_logs_drift_and_ingest_logs_it_too(caplog: pytest.LogCaptureFixture) -> None:
    from wkctl.cli.monitor import Ingest

    with caplog.at_level(logging.WARNING, logger="wkctl.protocol.state"):
        State().event(_heartbeat("facade@h", 1.0, T0))
        ingest = Ingest()
        assert type(ingest.state) is ClusterState  # the monitor locks, not the State
        ingest.apply([_heartbeat("ingest@h", 1.0, T0)], T0)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, logged
    assert "facade@h" in logged[0] and "ingest@h" in logged[1]
    assert ingest.state.drift.pending == []


def test_facade_runs_user_code_in_celerys_order() -> None:
    """callback first, then the State change; on_node_leave sees the worker still held."""
    seen: list[Any] = []

    def leave(worker: Any) -> None:
        seen.append(("leave", worker.hostname, worker.hostname in s.workers))

    s = State(
        callback=lambda state, event: seen.append(("cb", event["type"], state.event_count)),
        on_node_join=lambda w: seen.append(("join", w.hostname)),
        on_node_leave=leave,
    )
    s.event(_heartbeat("w1@lab", T0, T0))
    s.event(_heartbeat("w1@lab", T0 + 1, T0 + 1) | {"type": "worker-offline"})
    assert seen == [
        ("cb", "worker-heartbeat", 1),
        ("join", "w1@lab"),
        ("cb", "worker-offline", 2),
        ("leave", "w1@lab", True),
    ]
    assert "w1@lab" not in s.workers
    # The core calls no user code and keeps an offline worker (as Celery
    # without on_node_leave): no callback attributes at all.
    core = ClusterState()
    core.event(_heartbeat("w1@lab", T0, T0) | {"type": "worker-offline"})
    core.event(_heartbeat("w2@lab", T0, T0))
    core.event(_heartbeat("w2@lab", T0, T0) | {"type": "worker-offline"})
    assert list(core.workers) == ["w2@lab"] and not core.workers["w2@lab"].heartbeats
    assert not hasattr(core, "event_callback") and not hasattr(core, "handlers")


def test_facade_worker_alive_reads_the_wall_clock() -> None:
    import time

    s = State()
    now = time.time()
    s.event(_heartbeat("w1@lab", now, now))
    w = s.workers["w1@lab"]
    assert w.alive and w.status_string == "ONLINE" and "ONLINE" in repr(w)
    assert [x.hostname for x in s.alive_workers()] == ["w1@lab"]
    assert not w.is_alive(now + 10)
    assert isinstance(s.workers.mutex, type(threading.RLock()))


def test_core_pickles_round_trip() -> None:
    import pickle

    s = ClusterState(max_tasks_in_memory=50)
    s.event(_heartbeat("w@h", T0, T0))
    s.event(
        {
            "type": "task-received",
            "uuid": "u1",
            "hostname": "w@h",
            "timestamp": T0,
            "local_received": T0,
            "clock": 3,
            "name": "proj.add",
        }
    )
    s2 = pickle.loads(pickle.dumps(s))
    assert type(s2) is ClusterState and s2.max_tasks_in_memory == 50
    assert list(s2.tasks) == ["u1"] and list(s2.workers) == ["w@h"]
    assert [u for u, _ in s2.tasks_by_type("proj.add")] == ["u1"]
