"""Unit tests of the events State: semantics shared with Celery, and each fixed defect.

Every defect test replays the scenario that breaks ``celery.events.state``
and, when Celery is installed, shows Celery failing on it first, so the test
proves both that the scenario is real and that ours handles it.
"""

from __future__ import annotations

import copy
import gc
import pickle
import threading
from typing import Any

import pytest

from support.eventstreams import (
    HARMLESS_ODDITIES,
    malformed_scenarios,
    realistic_stream,
)
from wkctl.protocol.state import (
    FAILURE,
    PENDING,
    RECEIVED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
    LRUCache,
    State,
    Task,
    Worker,
    precedence,
)

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
    fields = {
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


def celery_state_cls() -> Any:
    mod = pytest.importorskip("celery.events.state")
    return mod.State


# --------------------------------------------------------------------------
# State precedence and merge rules (same as Celery)
# --------------------------------------------------------------------------
def test_precedence_matches_celery_states() -> None:
    states = pytest.importorskip("celery.states")
    for s in (*states.PRECEDENCE, "PROGRESS", "CUSTOM", "IGNORED", "REJECTED"):
        assert precedence(s) == states.precedence(s), s


def test_in_order_life_cycle() -> None:
    s = State()
    s.event(tev("sent", hostname="client@x", clock=9, name="proj.add"))
    assert s.tasks["t1"].state == PENDING and s.tasks["t1"].client == "client@x"
    s.event(received())
    s.event(tev("started", clock=11, t=T0 + 1))
    s.event(tev("succeeded", clock=12, t=T0 + 2, result="4", runtime=0.5))
    task = s.tasks["t1"]
    assert task.state == SUCCESS and task.ready
    assert (task.received, task.started, task.succeeded) == (T0, T0 + 1, T0 + 2)
    assert task.result == "4" and task.runtime == 0.5 and task.name == "proj.add"
    assert task.worker is s.workers["w1@lab"] and task.origin == "w1@lab.None"
    assert s.task_count == 1 and s.event_count == 4


def test_late_received_does_not_regress_state_but_merges_its_fields() -> None:
    s = State()
    s.event(tev("started", clock=11))
    s.event(tev("succeeded", clock=12, result="4"))
    s.event(received(clock=10, args="[1, 3]", retries=0, unrelated="dropped"))
    task = s.tasks["t1"]
    assert task.state == SUCCESS
    assert task.name == "proj.add" and task.args == "[1, 3]" and task.retries == 0
    # only the merge-rule fields of the late RECEIVED are taken
    assert not hasattr(task, "unrelated")
    assert task.timestamp == T0  # timestamp of the succeeded event stays


def test_late_started_after_success_merges_all_fields_but_state() -> None:
    s = State()
    s.event(received())
    s.event(tev("succeeded", clock=12, t=T0 + 2))
    s.event(tev("started", clock=11, t=T0 + 1, extra="x"))
    task = s.tasks["t1"]
    assert task.state == SUCCESS and task.started == T0 + 1 and task.extra == "x"


def test_started_before_received() -> None:
    s = State()
    s.event(tev("started", clock=11))
    s.event(received())
    task = s.tasks["t1"]
    assert task.state == STARTED and task.name == "proj.add"


def test_retry_always_wins_and_is_always_left() -> None:
    s = State()
    s.event(received())
    s.event(tev("started", clock=11))
    s.event(tev("retried", clock=12, exception="Retry()"))
    assert s.tasks["t1"].state == RETRY
    s.event(received(clock=13, retries=1))
    assert s.tasks["t1"].state == RECEIVED and s.tasks["t1"].retries == 1
    s.event(tev("failed", clock=14, exception="E()"))
    s.event(tev("retried", clock=15))
    assert s.tasks["t1"].state == RETRY  # RETRY is never a "late" state


def test_custom_task_events_become_custom_states() -> None:
    s = State()
    s.event(received())
    s.event(tev("started", clock=11))
    s.event(tev("progress", clock=12, current=5))
    task = s.tasks["t1"]
    assert task.state == "PROGRESS" and task.current == 5
    s.event(tev("succeeded", clock=13))
    s.event(tev("progress", clock=14, current=9))  # after SUCCESS: fields, not state
    assert task.state == SUCCESS and task.current == 9
    s.event(tev("cancelled", "t2", clock=15))
    assert s.tasks["t2"].state == "CANCELLED"


def test_revoked_and_failure_are_ready() -> None:
    s = State()
    s.event(tev("revoked", "a", terminated=False))
    s.event(tev("failed", "b", exception="E()"))
    assert s.tasks["a"].state == REVOKED and s.tasks["b"].state == FAILURE
    assert s.tasks["a"].ready and s.tasks["b"].ready


def test_event_dict_is_not_modified() -> None:
    ev = received()
    before = copy.deepcopy(ev)
    State().event(ev)
    assert ev == before  # Celery adds "state" to the caller's dict


# --------------------------------------------------------------------------
# Batches, return values, callbacks, handlers
# --------------------------------------------------------------------------
def test_task_multi_batch_is_applied_in_order() -> None:
    s = State()
    out = s.event([received(), tev("started", clock=11), tev("succeeded", clock=12)])
    assert s.tasks["t1"].state == SUCCESS and s.event_count == 3
    assert [r[1] for r in out] == ["received", "started", "succeeded"]
    assert out[0][0] == (s.tasks["t1"], True) and out[1][0][1] is False


def test_return_values_match_celery() -> None:
    s = State()
    (worker, created), subject = s.event(wev("online"))
    assert created and subject == "online" and worker.hostname == "w1@lab"
    (worker2, created), _ = s.event(wev("heartbeat", t=T0 + 1))
    assert worker2 is worker and not created
    assert s.event({"type": "queue-declared"}) is None
    assert s.event(wev("heartbeat", local_received=None) | {"local_received": None}) is not None


def test_callback_and_custom_handlers() -> None:
    seen: list[str] = []
    s = State(callback=lambda st, ev: seen.append(ev["type"]))
    s.handlers["queue"] = lambda subject, ev: ("handled", subject)
    assert s.event({"type": "queue-declared"}) == (("handled", "declared"), "declared")
    s.event(wev("online"))
    assert seen == ["queue-declared", "worker-online"]


def test_deprecated_task_event_and_worker_event() -> None:
    s = State()
    worker, created = s.worker_event("online", wev("online"))
    assert created and worker.hostname == "w1@lab"
    task, created = s.task_event("received", received())
    assert created and task.name == "proj.add"


# --------------------------------------------------------------------------
# Workers: heartbeats, liveness, join/leave
# --------------------------------------------------------------------------
def test_heartbeats_bounded_sorted_and_alive() -> None:
    s = State()
    for i in (5, 1, 3, 2, 4, 6):
        s.event(wev("heartbeat", t=T0 + i))
    w = s.workers["w1@lab"]
    assert w.heartbeats == sorted(w.heartbeats) and len(w.heartbeats) == Worker.heartbeat_max
    assert w.heartbeats[-1] == T0 + 6
    assert w.heartbeat_expires == T0 + 6 + 2.0 * 2
    assert w.is_alive(T0 + 9.9) and not w.is_alive(T0 + 10.1)
    assert w.id == "w1@lab.101" and w.freq == 2.0 and w.sw_ver == "5.7.0"


def test_alive_uses_wall_clock() -> None:
    import time

    s = State()
    now = time.time()
    s.event(wev("heartbeat", t=now))
    w = s.workers["w1@lab"]
    assert w.alive and w.status_string == "ONLINE"
    assert list(s.alive_workers()) == [w]
    s.event(wev("offline", t=now))
    assert not w.alive and w.status_string == "OFFLINE" and w.heartbeats == []
    assert w.heartbeat_expires is None  # Celery raises IndexError here


def test_node_join_and_leave_callbacks() -> None:
    joined: list[str] = []
    left: list[str] = []
    s = State(on_node_join=lambda w: joined.append(w.hostname))
    s.event(wev("heartbeat"))
    s.event(wev("heartbeat", t=T0 + 1))
    s.event(wev("online", t=T0 + 2))
    assert joined == ["w1@lab", "w1@lab"]
    s.event(wev("offline", t=T0 + 3))
    assert "w1@lab" in s.workers  # without on_node_leave Celery keeps it too
    s2 = State(on_node_leave=lambda w: left.append(w.hostname))
    s2.event(wev("online"))
    s2.event(wev("offline", t=T0 + 1))
    s2.event(wev("offline", "ghost@lab"))
    assert left == ["w1@lab", "ghost@lab"] and len(s2.workers) == 0


def test_worker_event_without_times_is_ignored_like_celery() -> None:
    s = State()
    ev = wev("heartbeat")
    del ev["local_received"]
    assert s.event(ev) is None and len(s.workers) == 0 and s.event_count == 1


def test_task_events_refresh_liveness_with_local_time_not_sender_time() -> None:
    """Celery swaps the arguments and stores the sender's timestamp as a heartbeat.

    A worker whose clock runs an hour ahead then looks alive for an hour after
    its last task event.  Ours records the local receive time.
    """
    ahead = 3600.0
    ev = received(clock=10)
    ev["timestamp"] = T0 + ahead  # sender clock ahead
    ours = State()
    ours.event(copy.deepcopy(ev))
    assert ours.workers["w1@lab"].heartbeats == [T0]
    assert not ours.workers["w1@lab"].is_alive(T0 + 600)
    Celery = celery_state_cls()
    theirs = Celery()
    theirs.event(copy.deepcopy(ev))
    assert theirs.workers["w1@lab"].heartbeats == [T0 + ahead]


# --------------------------------------------------------------------------
# Defects: inputs that crash Celery's State
# --------------------------------------------------------------------------
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


@pytest.mark.parametrize(
    "label,items", malformed_scenarios(), ids=[lab for lab, _ in malformed_scenarios()]
)
def test_input_that_crashes_celery_is_accepted(label: str, items: list[Any]) -> None:
    Celery = celery_state_cls()
    theirs = Celery()
    with pytest.raises(Exception):  # noqa: B017 - any crash of Celery's State
        for item in items:
            theirs.event(copy.deepcopy(item))
        probe(theirs)
    ours = State()
    for item in items:
        ours.event(copy.deepcopy(item))
    probe(ours)
    assert ours.event_count == len(items)
    # the valid follow-up events were applied normally
    w = ours.workers["bad@lab"]
    assert w.heartbeats and isinstance(w.heartbeats[-1], float) and w.freq in (2.0, 60)
    assert ours.tasks["child-task"].parent is ours.tasks.data.get("bad-task")
    assert isinstance(ours.tasks["bad-task"].state, str)


def test_worker_elect_events_are_accepted() -> None:
    """Celery: AttributeError, the ``id`` field hits the read-only ``Worker.id``."""
    Celery = celery_state_cls()
    elect = wev("elect", id="election-1", topic="task", action={"task": "proj.add"}, cver=1)
    ack = wev("elect-ack", id="election-1")
    with pytest.raises(AttributeError):
        Celery().event(copy.deepcopy(elect))
    with pytest.raises(AttributeError):
        Celery().event(copy.deepcopy(ack))
    s = State()
    (w, created), subject = s.event(elect)
    assert created and subject == "elect" and w.id == "w1@lab.101"
    assert w.topic == "task" and w.heartbeats == [T0]
    (w2, created), subject = s.event(ack)
    assert w2 is w and not created and subject == "elect-ack"


def test_malformed_heartbeat_drops_bad_fields() -> None:
    """One ``"timestamp": "now"`` heartbeat kills Celery workers (ValueError)."""
    s = State()
    s.event(wev("heartbeat"))
    s.event(wev("heartbeat", t=T0 + 1, timestamp="now", freq="fast", clock="x", pid=[1]))
    w = s.workers["w1@lab"]
    assert w.timestamp == T0 and w.freq == 2.0 and w.clock == 1 and w.pid == 101
    assert w.heartbeats == [T0]  # no usable timestamp: no heartbeat recorded
    s.event(wev("heartbeat", t=T0 + 2, event="x", update="y", heartbeats=[1e20], id="z"))
    assert callable(w.event) and w.heartbeats == [T0, T0 + 2] and w.id == "w1@lab.101"
    assert "id" not in vars(w)


def test_harmless_oddities_are_ignored() -> None:
    s = State()
    for item in HARMLESS_ODDITIES:
        s.event(copy.deepcopy(item))
    probe(s)
    assert s.event_count == len(HARMLESS_ODDITIES)


def test_reserved_task_fields_do_not_replace_methods_or_links() -> None:
    s = State()
    s.event(received())
    s.event(tev("progress", clock=11, info="x", children=[1], worker="w", event=1, root=2))
    task = s.tasks["t1"]
    assert callable(task.info) and callable(task.event)
    assert task.worker is s.workers["w1@lab"] and list(task.children) == []
    assert task.root is task and task.state == "PROGRESS"


def test_standalone_task_as_dict_with_root_id() -> None:
    """Celery: ``as_dict()`` raises AttributeError on a Task without cluster_state."""
    task = Task("x", root_id="r", parent_id="p", name="n")
    d = task.as_dict()
    assert d["root"] == "r" and d["parent"] == "p" and d["children"] == []
    assert task.root is None and task.parent is None


# --------------------------------------------------------------------------
# Defects: memory bounds and indexes
# --------------------------------------------------------------------------
def test_memory_is_bounded_on_adversarial_streams() -> None:
    """Unique task names, hostnames and parents for every task: nothing grows."""
    s = State(max_workers_in_memory=20, max_tasks_in_memory=50)
    for i in range(3000):
        host = f"w{i}@lab"
        s.event(wev("heartbeat", host, t=T0 + i))
        s.event(received(f"t{i}", clock=i + 1, name=f"name{i}", parent_id=f"missing{i}"))
        s.event(tev("succeeded", f"t{i}", host, clock=i + 2))
    gc.collect()
    assert len(s.workers) <= 20 and len(s.tasks) <= 50
    assert len(s.tasks_by_type) <= 50 and len(s.tasks_by_worker) <= 50
    assert sum(len(v) for v in s.tasks_by_type.values()) <= 50
    assert sum(len(v) for v in s.tasks_by_worker.values()) <= 50
    assert len(s.task_types()) <= 50 and len(s._tasks_to_resolve) <= 50
    assert all(len(w.heartbeats) <= 4 for w in s.workers.values())
    assert len(list(s.tasks_by_time())) == len(s.tasks)


def test_celery_index_keys_grow_without_bound() -> None:
    """The leak ours avoids: Celery keeps an (empty) index entry per name ever seen."""
    Celery = celery_state_cls()
    theirs, ours = Celery(max_tasks_in_memory=10), State(max_tasks_in_memory=10)
    for i in range(200):
        ev = received(f"t{i}", clock=i + 1, name=f"name{i}")
        theirs.event(copy.deepcopy(ev))
        ours.event(ev)
    gc.collect()
    assert len(theirs.tasks_by_type) == 200 and len(theirs.task_types()) == 200
    assert len(ours.tasks_by_type) == 10


def test_long_running_task_stays_in_tasks_by_time() -> None:
    """Celery's heap (4 x max tasks events) forgets a task still in ``tasks``."""
    limit = 20
    events = [received("long", clock=1)]
    for i in range(limit - 1):
        events.append(received(f"t{i}", clock=10 + 10 * i))
        events += [tev(k, f"t{i}", clock=11 + 10 * i + j) for j, k in enumerate(("started",) * 5)]
    Celery = celery_state_cls()
    theirs, ours = Celery(max_tasks_in_memory=limit), State(max_tasks_in_memory=limit)
    for ev in events:
        theirs.event(copy.deepcopy(ev))
        ours.event(ev)
    assert "long" in theirs.tasks and "long" in ours.tasks
    assert "long" not in dict(theirs.tasks_by_time())
    assert "long" in dict(ours.tasks_by_time())
    assert list(ours.tasks_by_time())[-1][0] == "long"


def test_tasks_by_type_indexes_late_names_and_worker_moves() -> None:
    s = State()
    s.event(tev("started", clock=11))  # no name yet (Celery never indexes this task)
    s.event(received(clock=10))
    task = s.tasks["t1"]
    assert set(s.tasks_by_type["proj.add"]) == {task}
    assert s.task_types() == ["proj.add"]
    assert set(s.tasks_by_worker["w1@lab"]) == {task}
    s.event(tev("retried", clock=12))
    s.event(received(clock=13, retries=1) | {"hostname": "w2@lab"})
    assert "w1@lab" not in s.tasks_by_worker and set(s.tasks_by_worker["w2@lab"]) == {task}
    assert [u for u, _ in s.tasks_by_worker("w2@lab")] == ["t1"]
    assert [u for u, _ in s.tasks_by_type("proj.add", limit=1)] == ["t1"]


def test_evicted_tasks_leave_every_index() -> None:
    s = State(max_tasks_in_memory=3)
    for i in range(5):
        s.event(received(f"t{i}", clock=i + 1))
    assert list(s.tasks) == ["t2", "t3", "t4"]
    assert {t.uuid for t in s.tasks_by_type["proj.add"]} == {"t2", "t3", "t4"}
    del s.tasks["t3"]
    s.tasks.pop("t2")
    assert {t.uuid for t in s.tasks_by_worker["w1@lab"]} == {"t4"}
    s.tasks.clear()
    assert not s.tasks_by_type and not s.tasks_by_worker


def test_workers_are_evicted_least_recently_heard_from() -> None:
    s = State(max_workers_in_memory=2)
    s.event(wev("heartbeat", "a@x"))
    s.event(wev("heartbeat", "b@x"))
    s.event(wev("heartbeat", "a@x", t=T0 + 1))  # a is the live one
    s.event(wev("heartbeat", "c@x"))
    assert set(s.workers) == {"a@x", "c@x"}


# --------------------------------------------------------------------------
# Parent / children, time order, queries
# --------------------------------------------------------------------------
def test_children_linked_in_any_order() -> None:
    s = State()
    s.event(received("child1", clock=5, parent_id="parent", root_id="parent"))
    s.event(received("parent", clock=6))
    s.event(received("child2", clock=7, parent_id="parent", root_id="parent"))
    parent = s.tasks["parent"]
    assert {t.uuid for t in parent.children} == {"child1", "child2"}
    assert s.tasks["child1"].parent is parent and s.tasks["child2"].root is parent
    assert sorted(parent.as_dict()["children"]) == ["child1", "child2"]


def test_parent_appearing_later_is_found() -> None:
    """Celery caches ``parent`` (even a miss) forever."""
    s = State()
    s.event(received("child", clock=5, parent_id="parent"))
    assert s.tasks["child"].parent is None
    s.event(received("parent", clock=6))
    assert s.tasks["child"].parent is s.tasks["parent"]


def test_tasks_by_time_order_and_limit() -> None:
    s = State()
    s.event(received("a", clock=1))
    s.event(received("b", clock=2))
    s.event(received("c", clock=3))
    s.event(tev("succeeded", "a", clock=4))
    assert [u for u, _ in s.tasks_by_time()] == ["a", "c", "b"]
    assert [u for u, _ in s.tasks_by_timestamp(reverse=False)] == ["a", "b", "c"]
    assert [u for u, _ in s.tasks_by_time(limit=2)] == ["a", "c"]  # limit counts tasks
    s.get_or_create_task("eventless")
    assert "eventless" not in dict(s.tasks_by_time())


def test_tasks_by_time_without_clocks_uses_timestamps() -> None:
    s = State()
    s.event(received("a", clock=0) | {"timestamp": T0 + 2})
    s.event(received("b", clock=0) | {"timestamp": T0 + 1})
    assert [u for u, _ in s.tasks_by_time()] == ["a", "b"]


def test_get_or_create() -> None:
    s = State()
    w, created = s.get_or_create_worker("w@x", pid=5, freq=1.0, custom="y")
    assert created and (w.pid, w.freq, w.custom) == (5, 1.0, "y")
    w2, created = s.get_or_create_worker("w@x", pid=6)
    assert w2 is w and not created and w.pid == 6
    t, created = s.get_or_create_task("u")
    assert created and t.cluster_state is s and t.state == PENDING
    assert s.get_or_create_task("u") == (t, False)


def test_clear_and_freeze_while() -> None:
    s = State()
    s.event(wev("online"))
    s.event(received("done", clock=1))
    s.event(tev("succeeded", "done", clock=2))
    s.event(received("running", clock=3))
    s.clear()
    assert list(s.tasks) == ["running"] and len(s.workers) == 0
    assert s.event_count == 0 and s.task_count == 0
    assert set(s.tasks_by_type["proj.add"]) == {s.tasks["running"]}
    s.clear(ready=False)
    assert len(s.tasks) == 0 and not s.tasks_by_type
    s.event(received("x", clock=5))
    assert s.freeze_while(lambda a, b=0: a + b, 1, b=2, clear_after=True) == 3
    assert len(s.tasks) == 1 and s.event_count == 0  # unready task kept
    s.clear_tasks(ready=False)
    assert len(s.tasks) == 0


def test_freeze_while_callback_can_query_the_state() -> None:
    """Snapshot cameras run inside freeze_while() and read the state there."""
    s = State()
    s.event(received())
    result = s.freeze_while(
        lambda: [u for u, _ in s.tasks_by_time()] + [u for u, _ in s.tasks_by_type("proj.add")]
    )
    assert result == ["t1", "t1"]


def test_itertasks_and_repr() -> None:
    s = State()
    for i in range(5):
        s.event(received(f"t{i}", clock=i + 1))
    assert [u for u, _ in s.itertasks(limit=2)] == ["t0", "t1"]
    assert repr(s) == "<State: events=5 tasks=5>"
    assert repr(s.tasks["t0"]) == "<Task: proj.add(t0) RECEIVED clock:1>"
    assert repr(s.workers["w1@lab"]).startswith("<Worker: w1@lab (OFFLINE clock:0)")


def test_info_fields_and_extra() -> None:
    s = State()
    s.event(received())
    task = s.tasks["t1"]
    assert task.info() == {"args": "[2, 2]", "kwargs": "{}", "retries": 0, "root_id": "t1"}
    assert task.info(fields=["name"], extra=["state"]) == {"name": "proj.add", "state": RECEIVED}


def test_pickle_round_trip() -> None:
    s = State(max_tasks_in_memory=100)
    for item in realistic_stream(500, seed=4, workers=3, p_election=0.0):
        s.event(item)
    s2 = pickle.loads(pickle.dumps(s))
    assert list(s2.tasks) == list(s.tasks) and list(s2.workers) == list(s.workers)
    assert {u: t.state for u, t in s2.tasks.items()} == {u: t.state for u, t in s.tasks.items()}
    assert sorted(s2.tasks_by_type) == sorted(s.tasks_by_type)
    w = next(iter(s.workers.values()))
    assert pickle.loads(pickle.dumps(w)).hostname == w.hostname
    t = next(iter(s.tasks.values()))
    assert pickle.loads(pickle.dumps(t)).as_dict()["name"] == t.name


def test_monitor_thread_can_iterate_while_events_flow() -> None:
    s = State(max_tasks_in_memory=200)
    items = list(realistic_stream(6000, seed=5, workers=5, p_election=0.0))
    errors: list[BaseException] = []
    stop = threading.Event()

    def monitor() -> None:
        try:
            while not stop.is_set():
                list(s.tasks_by_time(limit=20))
                for _, t in list(s.tasks.items()):
                    t.as_dict()
                list(s.alive_workers())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    th = threading.Thread(target=monitor)
    th.start()
    for item in items:
        s.event(item)
    stop.set()
    th.join()
    assert not errors


def test_lru_cache_api() -> None:
    removed: list[str] = []
    lru = LRUCache(2, on_remove=lambda k, v: removed.append(k))
    lru["a"] = 1
    lru["b"] = 2
    assert lru["a"] == 1  # touches a
    lru["c"] = 3
    assert list(lru) == ["a", "c"] and removed == ["b"]
    lru["a"] = 5  # overwrite does not evict
    assert len(lru) == 2 and removed == ["b"] and lru.get("zzz") is None
    assert lru.popitem(last=False) == ("a", 5) and removed == ["b", "a"]


def test_decimal_numbers_from_json_decoders_are_accepted() -> None:
    """Some JSON decoders hand out Decimal; Celery converts them for expiry only."""
    from decimal import Decimal

    s = State()
    s.event(wev("heartbeat", timestamp=Decimal(T0), local_received=Decimal(T0), freq=Decimal(2)))
    w = s.workers["w1@lab"]
    assert w.heartbeats == [T0] and w.freq == 2.0 and w.is_alive(T0 + 3.9)
    s.event(received() | {"timestamp": Decimal(T0 + 1), "clock": Decimal(10)})
    assert s.tasks["t1"].timestamp == T0 + 1 and s.tasks["t1"].received == T0 + 1


def test_task_event_called_directly_is_sanitised() -> None:
    task = Task("u1")
    task.event("received", T0, T0, {"uuid": "other", "name": "n", "info": 1, "clock": "x"})
    assert task.uuid == "u1" and task.name == "n" and callable(task.info)
    assert task.clock == 0 and task.state == RECEIVED and task.received == T0
    task.event("started", "not-a-time", None, None)
    assert task.state == STARTED and task.timestamp is None


def test_task_and_worker_subclasses_see_every_event() -> None:
    """Monitors subclass State.Task / State.Worker; their event() must be called."""
    calls: list[str] = []

    class MyTask(Task):
        __slots__ = ()

        def event(self, type_: str, *args: Any, **kwargs: Any) -> None:
            calls.append(f"task-{type_}")
            super().event(type_, *args, **kwargs)

    class MyWorker(Worker):
        __slots__ = ()

        def event(self, type_: Any, *args: Any, **kwargs: Any) -> None:
            calls.append(f"worker-{type_}")
            super().event(type_, *args, **kwargs)

    class MyState(State):
        Task = MyTask
        Worker = MyWorker

    s = MyState()
    s.event(wev("online"))
    s.event([received(), tev("started", clock=11), tev("succeeded", clock=12, result="4")])
    assert calls == ["worker-online", "task-received", "task-started", "task-succeeded"]
    task = s.tasks["t1"]
    assert isinstance(task, MyTask) and task.state == SUCCESS and task.result == "4"
    assert task.name == "proj.add" and set(s.tasks_by_type["proj.add"]) == {task}


def test_drift_warnings_are_rate_limited_over_all_hosts(caplog) -> None:
    """Hostnames are whatever peers send: inventing new ones must not flood the log."""
    import time as _time

    from wkctl.protocol import state as state_module

    st = state_module.State()
    with caplog.at_level("WARNING"):
        for i in range(50):
            st.event(
                {
                    "type": "worker-heartbeat",
                    "hostname": f"forged-{i}-{_time.time()}@h",
                    "timestamp": 1.0,
                    "local_received": _time.time(),
                    "clock": 1,
                    "freq": 2.0,
                }
            )
    drift = [r for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift) == state_module.DRIFT_WARNINGS_PER_MINUTE
