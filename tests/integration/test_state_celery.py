"""Our State against celery.events.state itself: the same precedence, and input that crashes Celery's State is accepted by ours (needs Celery importable)."""

from __future__ import annotations

import copy
import gc
from typing import Any

import pytest

from support.eventstreams import (
    malformed_scenarios,
)
from support.stateevents import T0, probe, received, tev, wev
from wkctl.protocol.state import (
    State,
    precedence,
)


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
