"""The documented surface of ``celery.events.state``, walked name by name.

The lists below are the API monitors (Flower, ``celery events``) use; each
name must exist on ours with the same kind (method, property, attribute) and,
where Celery documents them, the same parameters and defaults.  When Celery
is installed the same walk runs against it, proving the list describes
Celery and not just us.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from wkctl.protocol import state as ours_mod

_EMPTY = inspect.Parameter.empty
VAR = "*"  # marks *args / **kwargs in the expected signatures

#: name -> expected parameters (after self) as (name, default) pairs.
STATE_METHODS: dict[str, list[tuple[str, Any]]] = {
    "__init__": [
        ("callback", None),
        ("workers", None),
        ("tasks", None),
        ("taskheap", None),
        ("max_workers_in_memory", 5000),
        ("max_tasks_in_memory", 10000),
        ("on_node_join", None),
        ("on_node_leave", None),
        ("tasks_by_type", None),
        ("tasks_by_worker", None),
    ],
    "event": [("event", _EMPTY)],
    "get_or_create_worker": [("hostname", _EMPTY), ("kwargs", VAR)],
    "get_or_create_task": [("uuid", _EMPTY)],
    "tasks_by_time": [("limit", None), ("reverse", True)],
    "tasks_by_timestamp": [("limit", None), ("reverse", True)],
    "task_types": [],
    "alive_workers": [],
    "itertasks": [("limit", None)],
    "clear": [("ready", True)],
    "clear_tasks": [("ready", True)],
    "freeze_while": [("fun", _EMPTY), ("args", VAR), ("clear_after", False), ("kwargs", VAR)],
    "rebuild_taskheap": [],
    "task_event": [("type_", _EMPTY), ("fields", _EMPTY)],
    "worker_event": [("type_", _EMPTY), ("fields", _EMPTY)],
}
STATE_CLASS_ATTRS = {"event_count": 0, "task_count": 0, "heap_multiplier": 4}
STATE_INSTANCE_ATTRS = (
    "workers",
    "tasks",
    "tasks_by_type",
    "tasks_by_worker",
    "event_callback",
    "max_workers_in_memory",
    "max_tasks_in_memory",
    "on_node_join",
    "on_node_leave",
    "handlers",
)

TASK_FIELDS = (
    "args",
    "client",
    "clock",
    "eta",
    "exception",
    "exchange",
    "expires",
    "failed",
    "kwargs",
    "name",
    "parent",
    "parent_id",
    "ready",
    "received",
    "rejected",
    "result",
    "retried",
    "retries",
    "revoked",
    "root",
    "root_id",
    "routing_key",
    "runtime",
    "sent",
    "started",
    "state",
    "succeeded",
    "timestamp",
    "traceback",
    "worker",
    "id",
    "origin",
    "uuid",
    "children",
    "cluster_state",
)
TASK_PROPERTIES = ("id", "origin", "ready", "parent", "root")
TASK_METHODS: dict[str, list[tuple[str, Any]]] = {
    "__init__": [("uuid", None), ("cluster_state", None), ("children", None), ("kwargs", VAR)],
    "event": [
        ("type_", _EMPTY),
        ("timestamp", None),
        ("local_received", None),
        ("fields", None),
    ],
    "info": [("fields", None), ("extra", None)],
    "as_dict": [],
}

WORKER_METHODS: dict[str, list[tuple[str, Any]]] = {
    "__init__": [
        ("hostname", None),
        ("pid", None),
        ("freq", 60),
        ("heartbeats", None),
        ("clock", 0),
        ("active", None),
        ("processed", None),
        ("loadavg", None),
        ("sw_ident", None),
        ("sw_ver", None),
        ("sw_sys", None),
    ],
    "update": [("f", _EMPTY), ("kw", VAR)],
    "event": [
        ("type_", _EMPTY),
        ("timestamp", None),
        ("local_received", None),
        ("fields", None),
    ],
}
WORKER_PROPERTIES = ("alive", "heartbeat_expires", "id", "status_string")
WORKER_CLASS_ATTRS = {"expire_window": 200, "heartbeat_max": 4}
WORKER_FIELDS = (
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

MODULE_NAMES = ("State", "Worker", "Task", "heartbeat_expires")


def params(fn: Any) -> list[tuple[str, Any]]:
    sig = inspect.signature(fn)
    out = []
    for p in list(sig.parameters.values()):
        if p.name == "self":
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            out.append((p.name, VAR))
        else:
            out.append((p.name, p.default))
    return out


def celery_module() -> Any:
    return pytest.importorskip("celery.events.state")


MODULES = ["wkctl", "celery"]


def module(which: str) -> Any:
    return ours_mod if which == "wkctl" else celery_module()


@pytest.mark.parametrize("which", MODULES)
def test_module_names(which: str) -> None:
    mod = module(which)
    for name in MODULE_NAMES:
        assert hasattr(mod, name), name
    assert mod.heartbeat_expires(100.0, freq=2.0) == 104.0
    assert mod.heartbeat_expires(100.0) == 220.0


@pytest.mark.parametrize("which", MODULES)
@pytest.mark.parametrize("name", sorted(STATE_METHODS))
def test_state_method_signature(which: str, name: str) -> None:
    State = module(which).State
    fn = getattr(State, name)
    expected = STATE_METHODS[name]
    got = params(fn)
    if which == "celery" and name == "freeze_while":
        # Celery pops clear_after from **kwargs; ours makes it keyword-only.
        expected = [p for p in expected if p[0] != "clear_after"]
    if which == "celery" and name == "rebuild_taskheap":
        got = [p for p in got if p[0] != "timetuple"]  # Celery's speed-up default
    assert got == expected, f"State.{name}{got}"


@pytest.mark.parametrize("which", MODULES)
def test_state_attributes(which: str) -> None:
    mod = module(which)
    State = mod.State
    assert State.Worker is mod.Worker and State.Task is mod.Task
    for name, value in STATE_CLASS_ATTRS.items():
        assert getattr(State, name) == value, name
    s = State()
    for name in STATE_INSTANCE_ATTRS:
        assert hasattr(s, name), name
    assert s.max_workers_in_memory == 5000 and s.max_tasks_in_memory == 10000
    assert s.workers.limit == 5000 and s.tasks.limit == 10000
    # tasks_by_type / tasks_by_worker: a mapping of weak sets, and callable
    assert callable(s.tasks_by_type) and callable(s.tasks_by_worker)
    from weakref import WeakSet

    assert isinstance(s.tasks_by_type["x"], WeakSet)
    assert isinstance(s.tasks_by_worker["x"], WeakSet)
    assert list(s.tasks_by_type("x", limit=None, reverse=True)) == []
    assert list(s.tasks_by_worker("x", limit=None, reverse=True)) == []


@pytest.mark.parametrize("which", MODULES)
@pytest.mark.parametrize("name", sorted(TASK_METHODS))
def test_task_method_signature(which: str, name: str) -> None:
    Task = module(which).Task
    got = params(getattr(Task, name))
    if which == "celery" and name == "event":
        got = got[:4]  # Celery adds keyword-only micro-optimisation defaults
    assert got == TASK_METHODS[name], f"Task.{name}{got}"


@pytest.mark.parametrize("which", MODULES)
@pytest.mark.parametrize("field", TASK_FIELDS)
def test_task_field(which: str, field: str) -> None:
    Task = module(which).Task
    task = Task("u1")
    assert hasattr(task, field), field
    defaults = {"state": "PENDING", "clock": 0, "uuid": "u1", "id": "u1", "ready": False}
    value = getattr(task, field)
    if field == "children":
        assert len(value) == 0
    else:
        assert value == defaults.get(field), field


@pytest.mark.parametrize("which", MODULES)
def test_task_class_attributes(which: str) -> None:
    Task = module(which).Task
    assert Task.merge_rules == {
        "RECEIVED": (
            "name",
            "args",
            "kwargs",
            "parent_id",
            "root_id",
            "retries",
            "eta",
            "expires",
        )
    }
    assert set(TASK_PROPERTIES) - {"parent", "root"} <= {
        n for n in dir(Task) if isinstance(inspect.getattr_static(Task, n), property)
    }
    task = Task("u1", name="n", args="()")
    assert task.as_dict()["uuid"] == "u1" and task.as_dict()["name"] == "n"
    assert set(task.as_dict()) >= {"uuid", "name", "state", "children", "root", "parent"}
    assert task.info() == {"args": "()"}


@pytest.mark.parametrize("which", MODULES)
@pytest.mark.parametrize("name", sorted(WORKER_METHODS))
def test_worker_method_signature(which: str, name: str) -> None:
    Worker = module(which).Worker
    fn = getattr(Worker, name) if name != "event" else Worker().event
    got = params(fn)
    if which == "celery" and name == "event":
        got = got[:4]  # Celery's event is a closure with extra defaults
    assert got == WORKER_METHODS[name], f"Worker.{name}{got}"


@pytest.mark.parametrize("which", MODULES)
def test_worker_attributes(which: str) -> None:
    Worker = module(which).Worker
    for name, value in WORKER_CLASS_ATTRS.items():
        assert getattr(Worker, name) == value, name
    for name in WORKER_PROPERTIES:
        assert isinstance(inspect.getattr_static(Worker, name), property), name
    w = Worker("h@x", pid=7)
    for name in WORKER_FIELDS:
        assert hasattr(w, name), name
    assert w.freq == 60 and w.clock == 0 and w.heartbeats == []
    assert w.id == "h@x.7" and w.alive is False and w.status_string == "OFFLINE"
    w.update({"pid": 8}, processed=3)
    assert (w.pid, w.processed) == (8, 3)
    w.event("heartbeat", 100.0, 100.0, {"freq": 2.0})
    assert w.heartbeats == [100.0] and w.heartbeat_expires == 104.0


def test_exports_for_the_package() -> None:
    assert set(ours_mod.__all__) >= {"State", "Worker", "Task"}
    for name in ours_mod.__all__:
        assert hasattr(ours_mod, name), name
