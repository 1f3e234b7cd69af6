"""How often Celery's own elections kill Celery workers (opt-in, about 20 min).

``python -m bench.elect_crash`` holds ``--elections`` elections (default
20) with Celery's own ``app.control.election`` in clusters of 2, 3 and 5
stock Celery workers of one release (5.7 from this venv, 5.4 from
``WKCTL_TEST_CELERY54_PYTHON``), on RabbitMQ and on Redis, and in the mixed
shapes ``wkctl elect`` has to judge (1 or 2 Celery workers beside wkctl
reference nodes).  After each election it waits ``--settle`` seconds and
counts the workers that exited (``Unrecoverable error: IndexError`` in
``LamportClock.sort_heap``, DEFECT-1); after a crash the whole cluster is
restarted, so that no survivor counts a dead peer as alive.

It also counts the elections in which the surviving Celery workers logged
different leaders (DEFECT-2), and writes every election's event order (as
a tap queue saw it) with the workers' logged decisions to ``--traces``
(JSON lines): the data the Celery-rule replay of ``wkctl elect`` is checked
against.

Prints a table and writes ``--out`` (JSON).  Nothing here is a pass/fail
test; the figures go into spec DEFECT-1/DEFECT-2 and the ``wkctl elect``
refusal rule.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.common import BenchContext, NodeHost, Tap  # noqa: E402

_WON = re.compile(r"I won the election '([^']+)'")
_ELECTED = re.compile(r"node (\S+) elected for '([^']+)'")


def logged_decisions(text: str) -> dict[str, str]:
    """Election id -> ``hostname.pid`` of the leader this worker logged
    (``"self"`` when it logged that it won)."""
    out: dict[str, str] = {}
    for m in _WON.finditer(text):
        out[m.group(1)] = "self"
    for m in _ELECTED.finditer(text):
        out[m.group(2)] = m.group(1)
    return out


def shapes(sizes: list[int], versions: list[str], mixed: bool) -> list[dict[str, Any]]:
    out = [{"name": f"{n}x{v}", "celery": [v] * n, "wkctl": 0} for v in versions for n in sizes]
    if mixed:
        out += [
            {"name": "1x5.7+2wk", "celery": ["5.7"], "wkctl": 2},
            {"name": "2x5.7+1wk", "celery": ["5.7", "5.7"], "wkctl": 1},
            {"name": "2x5.7+1x5.4", "celery": ["5.7", "5.7", "5.4"], "wkctl": 0},
        ]
    return out


class Run:
    def __init__(self, ctx: BenchContext, url: str, shape: dict[str, Any]) -> None:
        self.ctx = ctx
        self.url = url
        self.shape = shape
        self.workers: list[Any] = []
        self.host: NodeHost | None = None

    def start(self) -> None:
        for v in self.shape["celery"]:
            self.workers += self.ctx.workers.start(self.url, n=1, version=v, prefix="x", wait=False)
        if self.shape["wkctl"]:
            self.host = NodeHost(self.url, self.shape["wkctl"], f"e{uuid.uuid4().hex[:4]}n")
            self.host.wait_ready()
        for w in self.workers:
            w.wait_ready()
        # Celery learns its peers from heartbeats (every 2 s)
        time.sleep(4.5)

    def stop(self) -> None:
        self.ctx.workers.stop(self.workers)
        self.workers = []
        if self.host is not None:
            self.host.stop()
            self.host = None


def run_shape(
    ctx: BenchContext, kind: str, shape: dict[str, Any], elections: int, settle: float, traces: Any
) -> dict[str, Any]:
    from bench.harness.celeryapp import client_app

    res = {
        "broker": kind,
        "shape": shape["name"],
        "elections": 0,
        "crashed_elections": 0,
        "workers_died": 0,
        "disagreements": 0,
        "undecided": 0,
    }
    with ctx.broker(kind) as url:
        app = client_app(url)
        tap = Tap(url, pidbox=True)
        run = Run(ctx, url, shape)
        try:
            run.start()
            for _ in range(elections):
                eid = f"crash-{uuid.uuid4().hex[:10]}"
                tap.reset()
                app.control.election(eid, "task", {"task": "tasks.add", "args": [2, 3]})
                time.sleep(settle)
                dead = [w for w in run.workers if not w.alive()]
                decisions = {}
                for w in run.workers:
                    d = logged_decisions(w.log_text()).get(eid)
                    if d is not None:
                        decisions[w.hostname] = f"{w.hostname}.{w.pid}" if d == "self" else d
                events, _ = tap.snapshot()
                order = [
                    {
                        "t": t,
                        "type": e.get("type"),
                        "hostname": e.get("hostname"),
                        "pid": e.get("pid"),
                        "clock": e.get("clock"),
                    }
                    for t, e in events
                    if e.get("id") == eid
                ]
                pid_t = [t for t, b in tap.pidbox if b.get("method") == "election"]
                traces.write(
                    json.dumps(
                        {
                            "broker": kind,
                            "shape": shape["name"],
                            "id": eid,
                            "election_published": pid_t[0] if pid_t else None,
                            "workers": {
                                w.hostname: {"pid": w.pid, "version": w.version, "alive": w.alive()}
                                for w in run.workers
                            },
                            "decisions": decisions,
                            "events": order,
                        }
                    )
                    + "\n"
                )
                traces.flush()
                res["elections"] += 1
                alive_decided = {v for h, v in decisions.items()}
                if len(alive_decided) > 1:
                    res["disagreements"] += 1
                if len(decisions) < len(run.workers) - len(dead):
                    res["undecided"] += 1
                if dead:
                    res["crashed_elections"] += 1
                    res["workers_died"] += len(dead)
                    ctx.log(f"    {eid}: {len(dead)} worker(s) died; restarting the cluster")
                    run.stop()
                    run.start()
        finally:
            run.stop()
            tap.close()
            app.close()
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.elect_crash")
    p.add_argument("--brokers", default="amqp,redis")
    p.add_argument("--versions", default="5.7,5.4")
    p.add_argument("--sizes", default="2,3,5")
    p.add_argument("--elections", type=int, default=20)
    p.add_argument("--settle", type=float, default=1.5)
    p.add_argument("--no-mixed", action="store_true")
    p.add_argument("--out", default="bench/results/elect_crash.json")
    p.add_argument("--traces", default="bench/results/elect_traces.jsonl")
    args = p.parse_args(argv)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(
        quick=False,
        reps=1,
        brokers=args.brokers.split(","),
        workdir=Path(tempfile.mkdtemp(prefix="wkctl-elect-crash-")),
    )
    results = []
    try:
        with open(args.traces, "a", encoding="utf-8") as traces:
            for kind in ctx.available_brokers():
                for shape in shapes(
                    [int(s) for s in args.sizes.split(",")],
                    args.versions.split(","),
                    not args.no_mixed,
                ):
                    ctx.log(f"{kind} {shape['name']}: {args.elections} elections")
                    r = run_shape(ctx, kind, shape, args.elections, args.settle, traces)
                    ctx.log(f"  {r}")
                    results.append(r)
                    Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        ctx.close()
    print("| broker | cluster | elections | crashed | workers died | disagreed | undecided |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['broker']} | {r['shape']} | {r['elections']} | {r['crashed_elections']} | "
            f"{r['workers_died']} | {r['disagreements']} | {r['undecided']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
