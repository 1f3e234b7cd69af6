"""Single Celery events built field by field, and what a monitor does with a State.

Shared by the State's unit tests and its comparison with ``celery.events.state``.
"""

from __future__ import annotations

from typing import Any

T0 = 1_795_249_881.0


def wev(type_: str, hostname: str = "w1@lab", t: float = T0, **kw: Any) -> dict[str, Any]:
    ev = {
        "type": f"worker-{type_}",
        "hostname": hostname,
        "pid": 101,
        "freq": 2.0,
        "clock": 1,
        "timestamp": t,
        "local_received": t,
        "utcoffset": 0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.1, 0.2, 0.3],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
    }
    ev.update(kw)
    return ev


def tev(
    type_: str,
    uuid: str = "t1",
    hostname: str = "w1@lab",
    clock: int = 10,
    t: float = T0,
    **kw: Any,
) -> dict[str, Any]:
    ev = {
        "type": f"task-{type_}",
        "uuid": uuid,
        "hostname": hostname,
        "pid": 101,
        "clock": clock,
        "timestamp": t,
        "local_received": t,
        "utcoffset": 0,
    }
    ev.update(kw)
    return ev


def received(uuid: str = "t1", clock: int = 10, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": "proj.add",
        "args": "[2, 2]",
        "kwargs": "{}",
        "root_id": uuid,
        "parent_id": None,
        "retries": 0,
        "eta": None,
        "expires": None,
    }
    fields.update(kw)
    return tev("received", uuid, clock=clock, **fields)


def probe(state: Any) -> None:
    """What a monitor does with a State (Flower pages, ``celery events``)."""
    list(state.alive_workers())
    for w in list(state.workers.values()):
        _ = (w.status_string, repr(w), w.id)
    for t in list(state.tasks.values()):
        t.as_dict()
        t.info()
        repr(t)
    list(state.tasks_by_time())
    list(state.tasks_by_time(reverse=False))
    state.task_types()
    for h in list(state.tasks_by_worker):
        list(state.tasks_by_worker(h))
    for n in list(state.tasks_by_type):
        list(state.tasks_by_type(n))
