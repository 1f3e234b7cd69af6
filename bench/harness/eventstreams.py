"""Generators of realistic Celery event streams for the State tests and benchmark.

The streams look like what ``celery.events.receiver.EventReceiver`` hands to
``State.event()``: the JSON bodies Celery workers publish on the event
exchange, with ``local_received`` (the receiver's wall clock) and a Lamport
``clock`` already present.  Field sets follow Celery 5.x exactly
(``worker/strategy.py``, ``worker/request.py``, ``app/amqp.py``,
``worker/heartbeat.py``), because the differential tests compare our State
with Celery's on them and a field Celery never sends would test nothing.

What a stream can contain:

* heartbeats of many workers (``worker-online`` / ``worker-heartbeat`` /
  ``worker-offline``, restarts with a new pid);
* full task life cycles: optional ``task-sent`` from a client, then
  ``task-received`` / ``task-started`` / one of ``task-succeeded``,
  ``task-failed``, ``task-retried`` (followed by a new delivery),
  ``task-revoked``, ``task-rejected``, ``task-cancelled``; parent/child links;
* custom ``task-*`` events sent from inside tasks (``task-progress``);
* elections: one ``worker-elect`` per participant and one
  ``worker-elect-ack`` per (participant, acker) pair, as Celery emits them;
* ``task.multi`` batches (lists), the way workers buffer task events;
* out-of-order delivery (bounded local shuffles) and duplicates.

Everything is driven by a seeded :class:`random.Random`, so a stream is a
pure function of its parameters.
"""

from __future__ import annotations

import copy
import json
import random
import uuid as uuidlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Event = dict[str, Any]
Item = Any  # an Event or a list of Events (task.multi batch)

TASK_NAMES = (
    "proj.tasks.add",
    "proj.tasks.mul",
    "proj.tasks.fetch_url",
    "proj.tasks.resize_image",
    "proj.tasks.send_email",
    "proj.tasks.report",
    "proj.tasks.cleanup",
    "proj.tasks.index_document",
)


@dataclass
class _Worker:
    hostname: str
    pid: int
    freq: float
    next_beat: float
    processed: int = 0
    active: int = 0
    online: bool = False


@dataclass
class _Task:
    uuid: str
    name: str
    worker: _Worker
    steps: list[str]
    parent_id: str | None = None
    root_id: str | None = None
    retries: int = 0
    args: str = "()"
    kwargs: str = "{}"
    pending: list[str] = field(default_factory=list)


class ClusterSim:
    """Simulates a Celery cluster emitting events, one event per :meth:`step`.

    ``clock`` is a cluster-wide Lamport clock (workers sync it through Mingle
    and every event they receive), ``now`` a simulated wall clock that moves a
    few milliseconds per event.  Task ids are deterministic UUID-shaped strings
    drawn from the seeded generator.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        workers: int = 20,
        start: float = 1_795_249_881.0,
        freq: float = 2.0,
        concurrency: int = 64,
        p_sent: float = 0.3,
        p_child: float = 0.15,
        p_custom: float = 0.03,
        p_election: float = 0.0005,
        p_restart: float = 0.0002,
        tick: float = 0.002,
        uuid_prefix: str = "",
    ) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.clock = 100
        self.tick = tick
        self.concurrency = concurrency
        self.p_sent = p_sent
        self.p_child = p_child
        self.p_custom = p_custom
        self.p_election = p_election
        self.p_restart = p_restart
        self.uuid_prefix = uuid_prefix
        self.workers = [
            _Worker(f"w{i}@node{i % 7}", 1000 + i, freq, start + self.rng.random() * freq)
            for i in range(workers)
        ]
        self.inflight: list[_Task] = []
        self.recent: list[str] = []
        self.queue: list[Event] = []
        self.elections = 0

    # ---------------------------------------------------------------- helpers
    def _uuid(self) -> str:
        return self.uuid_prefix + str(uuidlib.UUID(int=self.rng.getrandbits(128), version=4))

    def _stamp(self, ev: Event, *, clock: bool = True) -> Event:
        self.now += self.tick * (0.5 + self.rng.random())
        if clock:
            self.clock += 1
            ev["clock"] = self.clock
        ev["timestamp"] = self.now
        ev["utcoffset"] = 0.0
        ev["local_received"] = self.now + self.rng.random() * 0.004
        return ev

    def _worker_event(self, w: _Worker, type_: str) -> Event:
        return self._stamp(
            {
                "type": type_,
                "hostname": w.hostname,
                "pid": w.pid,
                "freq": w.freq,
                "active": w.active,
                "processed": w.processed,
                "loadavg": [0.34, 0.27, 0.13],
                "sw_ident": "py-celery",
                "sw_ver": "5.7.0",
                "sw_sys": "Linux",
            }
        )

    def _task_event(self, t: _Task, type_: str, **fields: Any) -> Event:
        ev = {"type": type_, "uuid": t.uuid, "hostname": t.worker.hostname, "pid": t.worker.pid}
        ev.update(fields)
        return self._stamp(ev)

    def _new_task(self) -> None:
        rng = self.rng
        w = rng.choice(self.workers)
        name = rng.choice(TASK_NAMES)
        t = _Task(self._uuid(), name, w, steps=[])
        t.args = f"[{rng.randrange(100)}, {rng.randrange(100)}]"
        if self.recent and rng.random() < self.p_child:
            t.parent_id = rng.choice(self.recent)
            t.root_id = t.parent_id
        else:
            t.root_id = t.uuid
        steps = ["sent"] if rng.random() < self.p_sent else []
        steps += ["received", "started"]
        if rng.random() < self.p_custom:
            steps.append("progress")
        r = rng.random()
        if r < 0.80:
            steps.append("succeeded")
        elif r < 0.87:
            steps.append("failed")
        elif r < 0.92:
            steps += ["retried", "received", "started", "succeeded"]
        elif r < 0.95:
            steps = steps[: steps.index("received") + 1] + ["revoked"]
        elif r < 0.97:
            steps.append("rejected")
        elif r < 0.98:
            steps.append("cancelled")
        else:
            steps.append("succeeded")
        t.steps = steps
        self.inflight.append(t)
        self.recent.append(t.uuid)
        if len(self.recent) > 50:
            del self.recent[:25]

    def _advance_task(self, t: _Task) -> Event:
        step = t.steps.pop(0)
        rng = self.rng
        if step == "sent":
            ev = self._stamp(
                {
                    "type": "task-sent",
                    "uuid": t.uuid,
                    "root_id": t.root_id,
                    "parent_id": t.parent_id,
                    "name": t.name,
                    "args": t.args,
                    "kwargs": t.kwargs,
                    "retries": t.retries,
                    "eta": None,
                    "expires": None,
                    "hostname": "gen4242@client",
                    "pid": 4242,
                    "queue": "celery",
                    "exchange": "",
                    "routing_key": "celery",
                }
            )
            return ev
        if step == "received":
            if t.retries:  # a retry is redelivered, possibly to another worker
                t.worker = rng.choice(self.workers)
            t.worker.active += 1
            return self._task_event(
                t,
                "task-received",
                name=t.name,
                args=t.args,
                kwargs=t.kwargs,
                root_id=t.root_id,
                parent_id=t.parent_id,
                retries=t.retries,
                eta=None,
                expires=None,
            )
        if step == "started":
            return self._task_event(t, "task-started")
        if step == "progress":
            return self._task_event(
                t, "task-progress", current=rng.randrange(100), total=100, stage="fetch"
            )
        t.worker.active = max(0, t.worker.active - 1)
        t.worker.processed += 1
        if step == "succeeded":
            return self._task_event(
                t, "task-succeeded", result=str(rng.randrange(1000)), runtime=rng.random()
            )
        if step == "failed":
            return self._task_event(
                t,
                "task-failed",
                exception="ValueError('boom')",
                traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom\n',
            )
        if step == "retried":
            t.retries += 1
            return self._task_event(
                t,
                "task-retried",
                exception="Retry('in 1s')",
                traceback="Traceback (most recent call last):\ncelery.exceptions.Retry\n",
            )
        if step == "revoked":
            return self._task_event(t, "task-revoked", terminated=False, signum=None, expired=False)
        if step == "rejected":
            return self._task_event(t, "task-rejected", requeue=False)
        return self._task_event(t, "task-cancelled")

    def _election(self) -> list[Event]:
        """One election as Celery emits it: N worker-elect, N*N worker-elect-ack."""
        self.elections += 1
        online = [w for w in self.workers if w.online] or self.workers[:1]
        n = min(len(online), 3)
        parts = self.rng.sample(online, n)
        eid = f"election-{self.elections}"
        out: list[Event] = []
        for w in parts:
            out.append(
                self._stamp(
                    {
                        "type": "worker-elect",
                        "hostname": w.hostname,
                        "pid": w.pid,
                        "id": eid,
                        "topic": "task",
                        "action": {"task": "proj.tasks.add", "args": [2, 3], "kwargs": {}},
                        "cver": 1,
                    }
                )
            )
        for _ in parts:
            for w in parts:
                out.append(
                    self._stamp(
                        {
                            "type": "worker-elect-ack",
                            "hostname": w.hostname,
                            "pid": w.pid,
                            "id": eid,
                        }
                    )
                )
        return out

    # ------------------------------------------------------------------ public
    def step(self) -> Event:
        """Return the next event of the simulated cluster."""
        if self.queue:
            return self.queue.pop(0)
        rng = self.rng
        for w in self.workers:
            if not w.online:
                w.online = True
                return self._worker_event(w, "worker-online")
            if self.now >= w.next_beat:
                w.next_beat = self.now + w.freq
                return self._worker_event(w, "worker-heartbeat")
        r = rng.random()
        if r < self.p_election:
            self.queue.extend(self._election())
            return self.queue.pop(0)
        if r < self.p_election + self.p_restart:
            w = rng.choice(self.workers)
            ev = self._worker_event(w, "worker-offline")
            w.online = False
            w.pid += 100
            return ev
        if len(self.inflight) < self.concurrency and (not self.inflight or rng.random() < 0.3):
            self._new_task()
        i = rng.randrange(len(self.inflight))
        t = self.inflight[i]
        ev = self._advance_task(t)
        if not t.steps:
            self.inflight[i] = self.inflight[-1]
            self.inflight.pop()
        return ev

    def events(self, n: int) -> Iterator[Event]:
        for _ in range(n):
            yield self.step()


def batched(events: Iterable[Event], *, seed: int = 0, max_batch: int = 10) -> Iterator[Item]:
    """Group consecutive task events into ``task.multi`` lists, as workers do.

    Celery workers buffer ``task-*`` events (``buffer_group = ['task']``) and
    publish them as one JSON list; worker events go out one by one.  A batch
    here holds up to ``max_batch`` consecutive task events.
    """
    rng = random.Random(seed)
    buf: list[Event] = []
    limit = rng.randint(1, max_batch)
    for ev in events:
        if ev["type"].startswith("task-"):
            buf.append(ev)
            if len(buf) >= limit:
                yield buf if len(buf) > 1 else buf[0]
                buf = []
                limit = rng.randint(1, max_batch)
        else:
            if buf:
                yield buf if len(buf) > 1 else buf[0]
                buf = []
            yield ev
    if buf:
        yield buf if len(buf) > 1 else buf[0]


def disorder(
    events: Iterable[Event],
    *,
    seed: int = 0,
    p_swap: float = 0.1,
    window: int = 8,
    p_duplicate: float = 0.05,
) -> Iterator[Event]:
    """Deliver events out of order (bounded window) and with duplicates.

    Each event is held back with probability ``p_swap`` for up to ``window``
    later events (brokers and buffered batches from different workers reorder
    like this), and re-delivered once more with probability ``p_duplicate``
    (a redelivered message).  Duplicates are deep copies, as a second
    delivery decodes to a new object.
    """
    rng = random.Random(seed)
    held: list[tuple[int, Event]] = []
    for i, ev in enumerate(events):
        if rng.random() < p_swap:
            held.append((i + rng.randint(1, window), ev))
        else:
            yield ev
            if rng.random() < p_duplicate:
                held.append((i + rng.randint(0, window), copy.deepcopy(ev)))
        if held:
            due = [h for h in held if h[0] <= i]
            if due:
                held = [h for h in held if h[0] > i]
                for _, e in due:
                    yield e
    for _, e in held:
        yield e


def realistic_stream(
    n: int,
    *,
    seed: int = 0,
    workers: int = 20,
    out_of_order: bool = False,
    duplicates: bool = False,
    batches: bool = False,
    **sim: Any,
) -> Iterator[Item]:
    """``n`` events of a simulated cluster, optionally reordered/duplicated/batched."""
    evs: Iterable[Event] = ClusterSim(seed=seed, workers=workers, **sim).events(n)
    if out_of_order or duplicates:
        evs = disorder(
            evs,
            seed=seed + 1,
            p_swap=0.1 if out_of_order else 0.0,
            p_duplicate=0.05 if duplicates else 0.0,
        )
    if batches:
        return batched(evs, seed=seed + 2)
    return iter(evs)


def _followups(ts: float) -> list[Event]:
    """Valid events touching the same worker and task as the malformed ones."""
    return [
        {
            "type": "worker-heartbeat",
            "hostname": "bad@lab",
            "pid": 1,
            "clock": 50,
            "timestamp": ts + 1,
            "local_received": ts + 1,
        },
        {
            "type": "task-started",
            "uuid": "bad-task",
            "hostname": "bad@lab",
            "clock": 51,
            "timestamp": ts + 2,
            "local_received": ts + 2,
        },
        {
            "type": "task-received",
            "uuid": "child-task",
            "name": "proj.tasks.child",
            "parent_id": "bad-task",
            "root_id": "bad-task",
            "hostname": "bad@lab",
            "clock": 52,
            "timestamp": ts + 3,
            "local_received": ts + 3,
        },
    ]


def malformed_scenarios() -> list[tuple[str, list[Any]]]:
    """Inputs that make Celery's State raise, now or on a later event or query.

    Each scenario is ``(label, items)``: one malformed item followed by valid
    events for the same worker/task.  Celery's ``State`` raises while applying
    them or when a monitor then queries it (``alive_workers()``,
    ``Task.as_dict()``, ``tasks_by_time()``); ours must do neither.  Kept as
    data so the unit tests and the differential tests share it.
    """
    ts = 1_795_249_881.0
    w = {
        "hostname": "bad@lab",
        "pid": 1,
        "freq": 2.0,
        "clock": 5,
        "timestamp": ts,
        "local_received": ts,
        "utcoffset": 0,
    }
    t = {
        "uuid": "bad-task",
        "hostname": "bad@lab",
        "clock": 6,
        "timestamp": ts,
        "local_received": ts,
    }
    bad: list[tuple[str, Any]] = [
        ("heartbeat timestamp 'now'", dict(w, type="worker-heartbeat", timestamp="now")),
        ("heartbeat local_received str", dict(w, type="worker-heartbeat", local_received="x")),
        ("heartbeat timestamp NaN", dict(w, type="worker-heartbeat", timestamp=float("nan"))),
        ("heartbeat freq str", dict(w, type="worker-heartbeat", freq="fast")),
        (
            "worker-elect",
            dict(w, type="worker-elect", id="e1", topic="task", action={"task": "x"}, cver=1),
        ),
        ("worker-elect-ack", dict(w, type="worker-elect-ack", id="e1")),
        ("worker field alive", dict(w, type="worker-heartbeat", alive=True)),
        ("worker field status_string", dict(w, type="worker-heartbeat", status_string="x")),
        ("worker field heartbeat_expires", dict(w, type="worker-heartbeat", heartbeat_expires=3)),
        ("worker field event", dict(w, type="worker-heartbeat", event="boom")),
        ("worker field heartbeats", dict(w, type="worker-heartbeat", heartbeats="abc")),
        ("worker hostname unhashable", dict(w, type="worker-heartbeat", hostname=["x"])),
        ("no type", {"hostname": "x@y", "timestamp": ts, "local_received": ts}),
        ("type int", {"type": 5, "hostname": "x@y"}),
        ("type None", {"type": None}),
        ("body is a string", "not-an-event"),
        ("body is a number", 42),
        ("body is null", None),
        ("task event without uuid", {"type": "task-received", "hostname": "x@y"}),
        ("task event without hostname/clock", {"type": "task-received", "uuid": "nofields"}),
        ("task uuid unhashable", dict(t, type="task-received", uuid=["u"])),
        ("task hostname unhashable", dict(t, type="task-received", hostname={"a": 1})),
        ("task parent_id unhashable", dict(t, type="task-received", name="t", parent_id=["p"])),
        ("task clock str", dict(t, type="task-started", clock="seven")),
        ("task timestamp 'now'", dict(t, type="task-succeeded", timestamp="now", clock=0)),
        ("task field children", dict(t, type="task-progress", children=[1, 2])),
        ("task field event", dict(t, type="task-custom", event=1)),
        ("task name unhashable", dict(t, type="task-received", name={"n": 1})),
        (
            "late custom event with state unhashable",
            [dict(t, type="task-succeeded"), dict(t, type="task-custom", state=["X"])],
        ),
    ]
    return [
        (label, [*(item if isinstance(item, list) else [item]), *_followups(ts)])
        for label, item in bad
    ]


#: Odd inputs Celery's State survives (it ignores them); ours must too.
HARMLESS_ODDITIES: list[Any] = [
    {"type": "worker-heartbeat"},
    {"type": "worker-heartbeat", "hostname": "x@y", "timestamp": 1.0},
    {"type": "queue-declared", "hostname": "x@y"},
    {
        "type": "task",
        "uuid": "t",
        "hostname": "x@y",
        "clock": 1,
        "timestamp": 1.0,
        "local_received": 1.0,
    },
    {"type": "worker-", "hostname": "x@y", "timestamp": 1.0, "local_received": 1.0},
]


def write_ndjson(items: Iterable[Item], path: Path) -> int:
    """Write a stream, one JSON body per line; returns the number of lines."""
    n = 0
    with path.open("w") as f:
        for it in items:
            f.write(json.dumps(it, separators=(",", ":")))
            f.write("\n")
            n += 1
    return n


def read_ndjson(path: Path) -> Iterator[Item]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def flatten(items: Iterable[Item]) -> Iterator[Any]:
    """Split ``task.multi`` batches into single events, in order."""
    for it in items:
        if isinstance(it, list):
            yield from it
        else:
            yield it


def main(argv: list[str] | None = None) -> int:
    """Write a generated stream as NDJSON (input for the State benchmark).

    ``python bench/harness/eventstreams.py N OUT [--batches] [--workers W]
    [--seed S] [--elections]``; elections are off by default because they
    crash Celery's State, which the benchmark runs on the same stream.
    """
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("n", type=int)
    p.add_argument("out", type=Path)
    p.add_argument("--batches", action="store_true")
    p.add_argument("--workers", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--elections", action="store_true")
    a = p.parse_args(argv)
    items = realistic_stream(
        a.n,
        seed=a.seed,
        workers=a.workers,
        batches=a.batches,
        p_election=0.0005 if a.elections else 0.0,
    )
    lines = write_ndjson(items, a.out)
    print(f"{a.n} events in {lines} lines -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
