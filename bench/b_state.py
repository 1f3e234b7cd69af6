"""Benchmark 3: State ingest, wkctl's ``State`` vs ``celery.events.state.State``.

The stream is recorded once (``bench/harness/eventstreams.py``: Celery 5.x
field sets, 200 workers heartbeating every 2 s, full task life cycles with
retries, failures, revocations, custom events, parent/child links, 10 %
of events delivered out of order and 5 % duplicated) and cached under
``bench/results/cache``.  It carries no ``worker-elect`` events: Celery's
State raises on them, which would measure exception handling instead of
ingest.  Each side ingests the whole stream in a fresh subprocess with the
same limits (Celery's defaults: 10,000 tasks, 5,000 workers), so peak RSS
is each State's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .common import REPO, BenchContext, alternate, case, metric, ratio, run_timed, target

NAME = "state"
TITLE = "State ingest: wkctl State vs celery.events.state.State"
CACHE = REPO / "bench" / "results" / "cache"
WORKERS = 200
SEED = 7


def stream_file(n: int) -> Path:
    """The recorded stream of at least ``n`` events (generated once, cached)."""
    from bench.harness.eventstreams import flatten, realistic_stream, write_ndjson

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"state-{n}-w{WORKERS}-s{SEED}.ndjson"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_ndjson(
            flatten(
                realistic_stream(
                    n,
                    seed=SEED,
                    workers=WORKERS,
                    out_of_order=True,
                    duplicates=True,
                    p_election=0.0,
                )
            ),
            tmp,
        )
        tmp.rename(path)
    return path


def ingest(impl: str, path: Path, profile: Path | None = None) -> dict[str, Any] | None:
    cmd = [sys.executable, "-m", "bench.state_ingest", "--impl", impl, "--file", str(path)]
    if profile is not None:
        cmd += ["--profile", str(profile)]
    r = run_timed(cmd, timeout=900)
    if r.rc != 0:
        print(f"    state_ingest {impl} failed: {r.stderr.strip()[-500:]}", flush=True)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(ctx: BenchContext) -> dict[str, Any]:
    n = 20_000 if ctx.quick else 1_000_000
    ctx.log(f"  recording a stream of {n:,} events (cached after the first run)")
    path = stream_file(n)
    reps = ctx.reps if ctx.quick else 3
    res = alternate(
        reps, {"wkctl": lambda r: ingest("wkctl", path), "celery": lambda r: ingest("celery", path)}
    )
    wk = [x for x in res["wkctl"] if x]
    ce = [x for x in res["celery"] if x]
    events = wk[0]["events"] if wk else (ce[0]["events"] if ce else 0)
    c = case(
        f"{events:,} events",
        {"events": events, "workers": WORKERS, "max_tasks_in_memory": 10_000, "reps": reps},
        {
            "rate": metric(
                "events/s",
                "higher",
                {"wkctl State": [x["rate"] for x in wk], "celery State": [x["rate"] for x in ce]},
                note="time spent in State.event only (decoding excluded, same for both)",
            ),
            "peak_rss": metric(
                "MB",
                "lower",
                {
                    "wkctl State": [x["peak_rss_kb"] / 1024 for x in wk],
                    "celery State": [x["peak_rss_kb"] / 1024 for x in ce],
                },
                note="peak resident set of the ingesting process (interpreter + one 20,000-event "
                "decoded chunk + the State)",
            ),
            "growth": metric(
                "MB",
                "lower",
                {
                    "wkctl State": [(x["peak_rss_kb"] - x["base_rss_kb"]) / 1024 for x in wk],
                    "celery State": [(x["peak_rss_kb"] - x["base_rss_kb"]) / 1024 for x in ce],
                },
                note="peak minus the resident set before the first event",
            ),
        },
    )
    c["ratios"]["rate"] = ratio(c["metrics"]["rate"], "wkctl State", "celery State")
    c["ratios"]["peak_rss"] = ratio(c["metrics"]["peak_rss"], "wkctl State", "celery State")
    c["errors"] = {"wkctl": [x["errors"] for x in wk], "celery": [x["errors"] for x in ce]}
    target(c, "State ingest rate vs Celery (x)", c["ratios"]["rate"], 2.0, higher=True)
    target(
        c,
        "State peak RSS: Celery's / wkctl's (x; >= 1 = no higher)",
        c["ratios"]["peak_rss"],
        1.0,
        higher=True,
    )
    return {
        "name": NAME,
        "title": TITLE,
        "cases": [c],
        "notes": [
            "stream: 200 workers, full task life cycles, 10% out of order, 5% duplicates, "
            "no worker-elect events (Celery's State raises AttributeError on them)",
        ],
        "setup": {
            "note": "Each side ingests the same recorded stream in its own fresh process "
            "(ru_maxrss), alternated; limits: max_tasks_in_memory=10,000, "
            "max_workers_in_memory=5,000 for both."
        },
    }
