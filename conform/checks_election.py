"""Elections ([ELECT-n]): standing, acknowledging, deciding, running the action."""

from __future__ import annotations

import time
from typing import Any

from wkctl.protocol.observers import standing_hazard

from .checks_common import (
    ELECTION_TOPIC,
    _celery_defect,
    _fresh,
    _is_clock,
    _schema,
    _still_serving,
)
from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


def _acks(ctx: Context, election: str, events: list[Any]) -> list[Any]:
    return [
        e
        for e in ctx.node_events("worker-elect-ack", events)
        if isinstance(e.body, dict) and e.body.get("id") == election
    ]


@check("election.ack-peer", "ELECT-2", "acks a worker-elect from another node")
def ack_peer(ctx: Context) -> str:
    election = _fresh("election")
    ctx.facts.election = election
    ctx.probe.peer_event("worker-elect", id=election, topic=ELECTION_TOPIC, action=None, cver=1)
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect-ack for a synthetic peer's worker-elect",
            expected=f"worker-elect-ack with id {election!r} from {ctx.node}",
            actual="none",
        )
    ctx.facts.peer_acked = True
    _schema(found[0].body, "elect-ack", "its worker-elect-ack")
    return "acked"


@check(
    "election.elect",
    "ELECT-1",
    "stands in an election with one worker-elect",
    needs=("election.ack-peer",),
)
def elect(ctx: Context) -> str:
    election = ctx.facts.election
    # The node and the synthetic peer stand; a node that acknowledged the
    # peer's worker-elect holds its request, so a Celery worker's heap has
    # two requests when it decides (the library's one DEFECT-1 rule).
    hazard = standing_hazard(
        {ctx.node: ctx.identity(), ctx.probe.peer: "wkctl"},
        holding=[ctx.node] if ctx.facts.peer_acked else [],
    )
    if election is None or hazard is not None:
        raise Skipped(
            "no election held: the node did not acknowledge the synthetic peer's worker-elect"
            + (f", and {hazard}" if hazard else "")
        )
    ctx.cast("election", {"id": election, "topic": ELECTION_TOPIC, "action": None})

    def stood(events: list[Any]) -> Any:
        return [
            e
            for e in ctx.node_events("worker-elect", events)
            if isinstance(e.body, dict) and e.body.get("id") == election
        ]

    found, _ = ctx.wait_events(stood, ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect after the election command",
            expected=f"worker-elect with id {election!r}",
            actual="none",
        )
    body = found[0].body
    _schema(body, "elect", "its worker-elect")
    if body.get("topic") != ELECTION_TOPIC or body.get("cver") != 1:
        raise Failed(
            "wrong topic or cver in its worker-elect",
            expected={"topic": ELECTION_TOPIC, "cver": 1},
            actual={"topic": body.get("topic"), "cver": body.get("cver")},
        )
    # Behave as a peer: acknowledge its request, so that it can decide.
    ctx.probe.peer_event("worker-elect-ack", id=election)
    ctx.facts.stood = True
    time.sleep(0.1)
    count = len(stood(ctx.recorder.snapshot()))
    if count != 1:
        raise Failed(
            "more than one worker-elect for one election command",
            expected=1,
            actual=count,
        )
    return f"worker-elect clock {body.get('clock')}"


@check(
    "election.ack-own",
    "ELECT-2",
    "acks its own worker-elect too",
    needs=("election.elect",),
)
def ack_own(ctx: Context) -> str:
    election = ctx.facts.election
    if not ctx.facts.stood or election is None:
        raise Skipped("the node did not stand in the election (see election.elect)")

    def both(events: list[Any]) -> Any:
        acks = _acks(ctx, election, events)
        return acks if len(acks) >= 2 else None

    found, events = ctx.wait_events(both, ctx.timeout)
    if not found:
        acks = _acks(ctx, election, events)
        raise Failed(
            "fewer acks than worker-elect requests it saw (the peer's and its own)",
            expected=f"2 worker-elect-ack with id {election!r}",
            actual=f"{len(acks)}",
        )
    for ack in found:
        _schema(ack.body, "elect-ack", "its worker-elect-ack")
    return f"{len(found)} acks"


@check(
    "election.ack-once",
    "ELECT-2",
    "acks a repeated worker-elect only once",
    deviation="DEFECT-2",
)
def ack_once(ctx: Context) -> str:
    election = _fresh("dup")
    for _ in range(2):
        ctx.probe.peer_event(
            "worker-elect", id=election, topic=ELECTION_TOPIC, action=None, cver=1, clock=7
        )
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect-ack for a peer's worker-elect",
            expected="one worker-elect-ack",
            actual="none",
        )
    time.sleep(min(ctx.timeout, 0.3))
    acks = _acks(ctx, election, ctx.recorder.snapshot())
    if len(acks) != 1:
        raise Failed(
            "the same worker-elect (same sender, same election) sent twice was acked "
            f"{len(acks)} times",
            expected=1,
            actual=len(acks),
        )
    return "one ack for a duplicated request"


@check(
    "election.malformed",
    "ELECT-10",
    "drops (does not ack) a worker-elect lacking a field",
)
def elect_malformed(ctx: Context) -> str:
    election = _fresh("bad")
    ctx.probe.peer_event("worker-elect", id=election, action=None, cver=1)  # no topic
    fence = _fresh("fence")
    ctx.probe.peer_event("worker-elect", id=fence, topic=ELECTION_TOPIC, action=None, cver=1)
    found, events = ctx.wait_events(lambda evs: _acks(ctx, fence, evs), ctx.timeout)
    bad = _acks(ctx, election, events)
    if bad:
        raise Failed(
            "a worker-elect without topic was acknowledged",
            expected="no worker-elect-ack",
            actual=f"{len(bad)} ack(s)",
        )
    if not found:
        raise Skipped(
            "cannot tell: the well-formed worker-elect sent after it was not acked either"
        )
    return "not acked"


def _task_action(queue: str, election: str) -> dict[str, Any]:
    """A task signature the winner of a ``task`` election applies: routed to
    a queue only the probe consumes, so nothing ever runs it."""
    return {
        "task": "wkctl.conform.elected",
        "args": [election],
        "kwargs": {},
        "options": {"queue": queue},
        "subtask_type": None,
        "immediate": False,
    }


def _pump_until(ctx: Context, predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        ctx.probe.pump(0.05)
    return bool(predicate())


@check(
    "election.loser-waits",
    "ELECT-8",
    "does not run the action of an election a peer wins",
    also=("ELECT-3",),
)
def loser_waits(ctx: Context) -> str:
    election = _fresh("lose")
    queue = _fresh("q")
    landed = ctx.probe.watch_task_queue(queue)
    try:
        ctx.probe.peer_heartbeat()
        ctx.facts.peer_announced = True
        # The synthetic peer stands first, with clock 1: the lowest request
        # of the election, whatever the node's clock, so the peer wins.
        ctx.probe.peer_event(
            "worker-elect",
            id=election,
            topic="task",
            action=_task_action(queue, election),
            cver=1,
            clock=1,
        )
        found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
        if not found:
            raise Skipped(
                "the node did not acknowledge the peer's worker-elect (see election.ack-peer)"
            )
        ctx.cast(
            "election", {"id": election, "topic": "task", "action": _task_action(queue, election)}
        )

        def stood(events: list[Any]) -> Any:
            return [
                e
                for e in ctx.node_events("worker-elect", events)
                if isinstance(e.body, dict) and e.body.get("id") == election
            ]

        mine, _ = ctx.wait_events(stood, ctx.timeout)
        if not mine:
            raise Skipped("the node did not stand (see election.elect)")
        ctx.probe.peer_event("worker-elect-ack", id=election)
        ctx.wait_events(lambda evs: len(_acks(ctx, election, evs)) >= 2, min(ctx.timeout, 1.0))
        if _pump_until(ctx, lambda: bool(landed), min(ctx.timeout, 0.5) + 0.3):
            raise Failed(
                "the node ran the action of an election won by a peer "
                f"(the peer's request had clock 1, the node's {mine[0].body.get('clock')})",
                expected="no task published by the node",
                actual=f"{len(landed)} task message(s) in {queue}",
            )
    finally:
        ctx.probe.drop_task_queue(queue)
    return f"peer (clock 1) won over the node (clock {mine[0].body.get('clock')}); no action run"


@check(
    "election.winner-runs",
    "ELECT-3",
    "runs the action, once, when its request is the lowest",
    also=("ELECT-8", "ELECT-5"),
    deviation="DEFECT-1",
)
def winner_runs(ctx: Context) -> str:
    _celery_defect(
        ctx,
        "DEFECT-1",
        "a Celery worker standing before the peer decides on its own ack alone and crashes",
    )
    others = ctx.other_nodes()
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise Skipped(
            f"other nodes on this broker ({shown}) count as participants of the node's "
            "election ([ELECT-4]) but are not asked to stand: run against a node alone "
            "on its broker (namespace) to check who wins"
        )
    election = _fresh("win")
    queue = _fresh("q")
    landed = ctx.probe.watch_task_queue(queue)
    action = _task_action(queue, election)
    try:
        ctx.probe.peer_heartbeat()
        ctx.facts.peer_announced = True
        ctx.cast("election", {"id": election, "topic": "task", "action": action})

        def stood(events: list[Any]) -> Any:
            return [
                e
                for e in ctx.node_events("worker-elect", events)
                if isinstance(e.body, dict) and e.body.get("id") == election
            ]

        mine, _ = ctx.wait_events(stood, ctx.timeout)
        if not mine:
            raise Skipped("the node did not stand (see election.elect)")
        own_clock = mine[0].body.get("clock")
        higher = (own_clock if _is_clock(own_clock) else ctx.probe.clock) + 1000
        ctx.probe.peer_event(
            "worker-elect", id=election, topic="task", action=action, cver=1, clock=higher
        )
        # Every expected request is in: the winner is fixed, acks or not ([ELECT-5]).
        ctx.wait_events(lambda evs: len(_acks(ctx, election, evs)) >= 2, ctx.timeout)
        ctx.probe.peer_event("worker-elect-ack", id=election)
        if not _pump_until(ctx, lambda: bool(landed), ctx.timeout):
            raise Failed(
                f"the node's request (clock {own_clock}) was the lowest, yet it ran no action",
                expected=f"one task message in {queue}",
                actual="none",
            )
        ctx.probe.pump(0.3)
        if len(landed) != 1:
            raise Failed(
                "the winner ran the action more than once",
                expected=1,
                actual=len(landed),
            )
    finally:
        ctx.probe.drop_task_queue(queue)
    return f"won with clock {own_clock} against {higher}; ran the action once"


@check(
    "election.alone",
    "ELECT-6",
    "survives an election it holds without peers",
    also=("SEC-3",),
    deviation="DEFECT-1",
)
def alone(ctx: Context) -> str:
    _celery_defect(ctx, "DEFECT-1", "an election with exactly one gossiping Celery worker kills it")
    election = _fresh("alone")
    if ctx.facts.peer_announced:
        ctx.probe.peer_heartbeat("worker-offline")
        ctx.facts.peer_announced = False
        time.sleep(0.05)
    ctx.cast("election", {"id": election, "topic": ELECTION_TOPIC, "action": None})
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    _still_serving(ctx, "an election it held alone")
    if not found:
        raise Failed(
            "no worker-elect-ack for its own worker-elect in an election without peers",
            expected="its worker-elect and worker-elect-ack",
            actual="none",
        )
    return "stood, acked, still serving"
