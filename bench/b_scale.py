"""Benchmark 6: scale, a cluster of 200 reference nodes on one broker.

200 wkctl reference nodes hosted 50 to a process (Gossip on, heartbeat
every 2 s, Celery's default), on each broker:

* start-up: from spawning the host processes to every node having finished
  its first Mingle round (each node's ``hello`` is answered by every node
  already up: O(N^2) replies in the burst);
* a full ``hello``: ``wkctl hello --expect 200`` (own figure, wall time,
  messages = 1 request + one reply per node) vs Celery's in-process
  broadcast (1 s collection; how many of the 200 replies it got);
* steady state: heartbeat events per second seen on the event exchange and
  the CPU the hosts burn per node, over a quiet window;
* memory: resident set per node (hosts' RSS / nodes, and the marginal cost
  of a node: (RSS with 50 - RSS with 1) / 49) vs one Celery worker process;
* an election among 50: three of the four hosts stop (150 nodes leave
  with ``worker-offline``), then elections among the 50 left, started by
  ``wkctl elect`` and by Celery's ``app.control.election`` alternately,
  with the ``worker-elect`` / ``worker-elect-ack`` events counted (Celery's
  scheme: N + N^2 = 2,550).
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from typing import Any

from .common import (
    BenchContext,
    NodeHost,
    Tap,
    alternate,
    case,
    metric,
    proc_rss_kb,
    ratio,
    run_timed,
    wait_responsive,
    wkctl_cmd,
)

NAME = "scale"
TITLE = "scale: 200 reference nodes on one broker"


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _hello(url: str, n: int) -> dict[str, Any] | None:
    r = run_timed(
        wkctl_cmd(url) + ["hello", "--expect", str(n), "--timeout", "10", "--stats", "--json"],
        timeout=60,
    )
    stats = next((json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")), None)
    if r.rc != 0 or stats is None:
        print(f"    wkctl hello failed (rc {r.rc}): {r.stderr.strip()[-300:]}", flush=True)
        return None
    return {"own_ms": stats["elapsed_ms"], "wall_ms": r.wall * 1000, "replies": stats["replied"]}


def _celery_hello(app: Any) -> dict[str, Any]:
    arrivals: list[float] = []
    t0 = time.perf_counter()
    replies = app.control.broadcast(
        "hello",
        arguments={"from_node": "bench-celery-client@bench", "revoked": []},
        reply=True,
        timeout=1.0,
        callback=lambda _r: arrivals.append(time.perf_counter()),
    )
    return {
        "return_ms": (time.perf_counter() - t0) * 1000,
        "last_reply_ms": (max(arrivals) - t0) * 1000 if arrivals else None,
        "replies": len(replies or []),
    }


def _elect_counts(tap: Tap, eid: str, want: int, timeout: float) -> tuple[int, int, float | None]:
    tap.wait_for(lambda evs: sum(1 for _, e in evs if e.get("id") == eid) >= want, timeout)
    time.sleep(0.3)
    events, _ = tap.snapshot()
    mine = [(t, e) for t, e in events if e.get("id") == eid]
    elects = sum(1 for _, e in mine if e.get("type") == "worker-elect")
    acks = sum(1 for _, e in mine if e.get("type") == "worker-elect-ack")
    last = max((t for t, _ in mine), default=None)
    return elects, acks, last


def run(ctx: BenchContext) -> dict[str, Any]:
    per_host = 5 if ctx.quick else 50
    hosts_n = 2 if ctx.quick else 4
    total = per_host * hosts_n
    survivors = per_host
    quiet = 2.0 if ctx.quick else 6.0
    reps = ctx.reps if ctx.quick else 2
    cases = []
    from bench.harness.celeryapp import client_app

    for kind in ctx.available_brokers():
        with ctx.broker(kind) as url:
            ctx.log(f"  {kind}: starting {total} nodes, {per_host} per process")
            tap = Tap(url)
            app = client_app(url)
            t0 = time.perf_counter()
            hosts: list[NodeHost] = []
            one: NodeHost | None = None
            try:
                # All hosts at once: every node's Mingle hello is answered by
                # every node already up, the worst start-up burst.
                hosts = [
                    NodeHost(url, per_host, f"s{i}n", ready_timeout=180) for i in range(hosts_n)
                ]
                one = NodeHost(url, 1, "solo")
                for h in hosts + [one]:
                    h.wait_ready()
                startup_s = time.perf_counter() - t0
                ctx.log(f"  {kind}: {total + 1} nodes up in {startup_s:.1f} s")
                time.sleep(1.0)
                n = total + 1
                res = alternate(
                    reps,
                    {
                        "wkctl": functools.partial(lambda r, url, n: _hello(url, n), url=url, n=n),
                        "celery": functools.partial(lambda r, app: _celery_hello(app), app=app),
                    },
                )
                wk = [x for x in res["wkctl"] if x]
                ce = res["celery"]
                c = case(
                    f"{kind} hello, {n} nodes",
                    {"broker": kind, "nodes": n, "per_process": per_host, "reps": reps},
                    {
                        "answer": metric(
                            "ms",
                            "lower",
                            {
                                "wkctl hello (own figure)": [x["own_ms"] for x in wk],
                                "celery broadcast (returns)": [x["return_ms"] for x in ce],
                            },
                        ),
                        "replies": metric(
                            "replies",
                            "higher",
                            {
                                "wkctl hello": [x["replies"] for x in wk],
                                "celery broadcast (1 s)": [x["replies"] for x in ce],
                            },
                            note="hello messages = 1 broadcast request + one reply per node",
                        ),
                        "process": metric(
                            "ms", "lower", {"wkctl hello process": [x["wall_ms"] for x in wk]}
                        ),
                    },
                )
                c["ratios"]["answer"] = ratio(
                    c["metrics"]["answer"], "wkctl hello (own figure)", "celery broadcast (returns)"
                )
                c["metrics"]["startup"] = metric(
                    "s",
                    "lower",
                    {"wkctl nodes, all started at once": [startup_s]},
                    note="spawn of the host processes -> every node through its first Mingle",
                )
                cases.append(c)

                # steady state: heartbeats and CPU over a quiet window
                tap.reset()
                pids = [h.proc.pid for h in hosts]
                cpu0 = sum(_cpu_ticks(p) for p in pids)
                w0 = time.perf_counter()
                time.sleep(quiet)
                wall = time.perf_counter() - w0
                cpu = (sum(_cpu_ticks(p) for p in pids) - cpu0) / os.sysconf("SC_CLK_TCK")
                _, counts = tap.snapshot()
                beats = counts.get("worker-heartbeat", 0)
                rss_hosts = [h.rss_kb() for h in hosts]
                per_node = sum(rss_hosts) / total / 1024
                marginal = (sum(rss_hosts) / hosts_n - one.rss_kb()) / (per_host - 1) / 1024
                ctx.log(f"  {kind}: measuring a Celery worker's memory for comparison")
                worker = ctx.workers.start(url, n=1, prefix="sc")[0]
                time.sleep(1.0)
                celery_rss = proc_rss_kb(worker.pid) / 1024
                ctx.workers.stop([worker])
                c2 = case(
                    f"{kind} steady state, {total} nodes",
                    {"broker": kind, "nodes": total, "window_s": round(wall, 1)},
                    {
                        "memory_per_node": metric(
                            "MB",
                            "lower",
                            {
                                "wkctl node (hosts' RSS / nodes)": [per_node],
                                "wkctl node (marginal)": [marginal],
                                "celery worker process (solo)": [celery_rss],
                            },
                        ),
                        "heartbeats": metric(
                            "events/s",
                            "lower",
                            {"wkctl nodes, heartbeat 2 s": [beats / wall]},
                            note=f"expected {total} nodes / 2 s = {total / 2:g}/s",
                        ),
                        "cpu": metric(
                            "% of a core per 100 nodes",
                            "lower",
                            {"wkctl node hosts": [cpu / wall * 100 / total * 100]},
                            note="hosts' user+system CPU time over the window",
                        ),
                    },
                )
                c2["ratios"]["memory_per_node"] = ratio(
                    c2["metrics"]["memory_per_node"],
                    "wkctl node (hosts' RSS / nodes)",
                    "celery worker process (solo)",
                )
                cases.append(c2)

                # election among the survivors
                ctx.log(f"  {kind}: stopping {total - survivors} nodes, election among {survivors}")
                for h in hosts[1:]:
                    h.stop()
                one.stop()
                wait_responsive(url, survivors)
                want = survivors + survivors * survivors

                def wk_elect(
                    r: int, url: str = url, tap: Tap = tap, want: int = want
                ) -> dict[str, Any]:
                    eid = f"scale-wk-{uuid.uuid4()}"
                    res_ = run_timed(
                        wkctl_cmd(url)
                        + ["elect", "--topic", "task", "--id", eid, "--json", "--timeout", "30"]
                        + ["--action", '{"task": "tasks.add", "args": [1, 1]}'],
                        timeout=90,
                    )
                    elects, acks, _ = _elect_counts(tap, eid, want, 10)
                    try:
                        own = json.loads(res_.stdout)["elapsed_ms"]
                    except (ValueError, KeyError):
                        print(f"    wkctl elect failed: {res_.stderr[-300:]}", flush=True)
                        own = None
                    settle = wait_responsive(url, survivors)
                    return {"own_ms": own, "messages": elects + acks, "settle_s": settle}

                def ce_elect(
                    r: int, app: Any = app, tap: Tap = tap, want: int = want
                ) -> dict[str, Any]:
                    eid = f"scale-ce-{uuid.uuid4()}"
                    t_pub = time.time()
                    app.control.election(
                        eid,
                        "task",
                        action={"task": "tasks.add", "args": [1, 1], "kwargs": {}, "options": {}},
                    )
                    elects, acks, last = _elect_counts(tap, eid, want, 30)
                    done = (last - t_pub) * 1000 if last and elects + acks >= want else None
                    settle = wait_responsive(url, survivors)
                    return {"own_ms": done, "messages": elects + acks, "settle_s": settle}

                er = alternate(reps, {"wkctl": wk_elect, "celery": ce_elect})
                c3 = case(
                    f"{kind} election among {survivors}",
                    {"broker": kind, "participants": survivors, "celery_scheme_messages": want},
                    {
                        "decision": metric(
                            "ms",
                            "lower",
                            {
                                "wkctl elect (own figure)": [x["own_ms"] for x in er["wkctl"]],
                                "celery control election (last ack seen)": [
                                    x["own_ms"] for x in er["celery"]
                                ],
                            },
                            note="Celery's client reports nothing: its figure is when the tap saw "
                            "the last worker-elect-ack",
                        ),
                        "messages": metric(
                            "messages",
                            "lower",
                            {
                                "wkctl elect election": [x["messages"] for x in er["wkctl"]],
                                "celery control election": [x["messages"] for x in er["celery"]],
                            },
                            note=f"N + N^2 = {want}",
                        ),
                        "recovery": metric(
                            "s",
                            "lower",
                            {
                                "after wkctl elect": [x["settle_s"] for x in er["wkctl"]],
                                "after celery control election": [
                                    x["settle_s"] for x in er["celery"]
                                ],
                            },
                            note="from the end of the measurement until the 50 nodes answer a "
                            "hello again: the hosts work through the N^2 events after the "
                            "decision was observable, and drop pidbox requests that expire "
                            "meanwhile",
                        ),
                    },
                )
                cases.append(c3)
            finally:
                for h in hosts + ([one] if one else []):
                    h.stop()
                tap.close()
                try:
                    app.close()
                except Exception:
                    pass
    return {
        "name": NAME,
        "title": TITLE,
        "cases": cases,
        "notes": [
            f"{total} reference nodes in {hosts_n} processes of {per_host} (plus one process "
            "with 1 node for the marginal memory), all started at the same moment",
        ],
        "setup": {
            "note": "Every node runs Mingle at start, Gossip with 2 s heartbeats, and answers "
            "pidbox requests; one broker connection and one loop thread per host process."
        },
    }
