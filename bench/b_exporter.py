"""Benchmark: ``wkctl exporter`` vs prometheus-exporter-celery 0.11.2.

Same recorded stream for both (``bench/harness/eventstreams.py``: 200
workers heartbeating, full task life cycles with retries, failures,
revocations and rejections, 10 % out of order, 5 % duplicated, task events
in ``task.multi`` batches as workers send them), cached under
``bench/results/cache``.  Each side runs in a fresh process
(``bench/exporter_ingest.py``), alternated ABBA: wkctl with this venv,
prometheus-exporter-celery with the tools venv's Python
(``WKCTL_TEST_TOOLS_PYTHON``, or ``.venv-tools``).  Measured: events/s
through each exporter's per-message path (decoding excluded for both), peak
RSS, the time to render ``/metrics`` with 200 workers and 10,000 tasks in
State, and whether every task event was counted (the per-type sums of the
``celery_task_*_total`` counters against the stream).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from wkctl.protocol.metrics import TASK_COUNTERS

from .common import REPO, BenchContext, alternate, case, metric, ratio, run_timed, target

NAME = "exporter"
TITLE = "Exporter ingest and scrape: wkctl exporter vs prometheus-exporter-celery 0.11.2"
CACHE = REPO / "bench" / "results" / "cache"
WORKERS = 200
SEED = 11
TASK_TYPES = TASK_COUNTERS


def stream_file(n: int) -> Path:
    """The recorded stream (one message body per line), generated once."""
    from bench.harness.eventstreams import realistic_stream, write_ndjson

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"exporter-{n}-w{WORKERS}-s{SEED}.ndjson"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_ndjson(
            realistic_stream(
                n,
                seed=SEED,
                workers=WORKERS,
                out_of_order=True,
                duplicates=True,
                batches=True,
                p_election=0.0,
            ),
            tmp,
        )
        tmp.rename(path)
    return path


def truth(path: Path) -> dict[str, int]:
    """Task events per type in the stream: what the counters must sum to."""
    counts: Counter[str] = Counter()
    with open(path) as f:
        for line in f:
            body = json.loads(line)
            for event in body if isinstance(body, list) else [body]:
                counts[event["type"]] += 1
    return {t: counts.get(t, 0) for t in TASK_TYPES}


def tools_python() -> str | None:
    from bench.harness.tools import tools_python as find

    return find()


def ingest(python: str, impl: str, path: Path, scrapes: int, *extra: str) -> dict[str, Any] | None:
    cmd = [python, str(REPO / "bench" / "exporter_ingest.py"), "--impl", impl]
    cmd += ["--file", str(path), "--scrapes", str(scrapes), *extra]
    r = run_timed(cmd, timeout=1800)
    if r.rc != 0:
        print(f"    exporter_ingest {impl} failed: {r.stderr.strip()[-500:]}", flush=True)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(ctx: BenchContext) -> dict[str, Any]:
    other = tools_python()
    if other is None:
        return {
            "name": NAME,
            "title": TITLE,
            "cases": [],
            "error": "no tools venv with prometheus-exporter-celery (WKCTL_TEST_TOOLS_PYTHON)",
        }
    n = 20_000 if ctx.quick else 200_000
    ctx.log(f"  recording a stream of {n:,} events (cached after the first run)")
    path = stream_file(n)
    expected = truth(path)
    reps = ctx.reps if ctx.quick else 3
    scrapes = 5 if ctx.quick else 15
    res = alternate(
        reps,
        {
            "wkctl": lambda r: ingest(sys.executable, "wkctl", path, scrapes),
            "celery-exporter": lambda r: ingest(other, "celery-exporter", path, scrapes),
            "wkctl-novalidate": lambda r: ingest(sys.executable, "wkctl", path, 1, "--no-validate"),
        },
    )
    nv = [x for x in res["wkctl-novalidate"] if x]
    wk = [x for x in res["wkctl"] if x]
    ce = [x for x in res["celery-exporter"] if x]
    events = wk[0]["events"] if wk else (ce[0]["events"] if ce else 0)

    def lost(x: dict[str, Any]) -> float:
        return float(sum(expected[t] - x["counted"][t] for t in TASK_TYPES))

    wk_side, ce_side = "wkctl exporter", "prometheus-exporter-celery"
    nv_side = "wkctl exporter --no-validate"
    c = case(
        f"{events:,} events, {WORKERS} workers",
        {"events": events, "workers": WORKERS, "max_tasks_in_memory": 10_000, "reps": reps},
        {
            "rate": metric(
                "events/s",
                "higher",
                {
                    wk_side: [x["rate"] for x in wk],
                    ce_side: [x["rate"] for x in ce],
                    nv_side: [x["rate"] for x in nv],
                },
                note="events through each exporter's per-message path (wkctl: stamp, State, "
                "schema check, metrics; celery-exporter: Celery's EventReceiver and its "
                "handlers); JSON decoding excluded for both",
            ),
            "cpu_rate": metric(
                "events/s",
                "higher",
                {
                    wk_side: [x["cpu_rate"] for x in wk],
                    ce_side: [x["cpu_rate"] for x in ce],
                    nv_side: [x["cpu_rate"] for x in nv],
                },
                note="the same, per CPU second of the process (less sensitive to other load "
                "on the machine than the wall-clock rate)",
            ),
            "lost": metric(
                "events",
                "lower",
                {wk_side: [lost(x) for x in wk], ce_side: [lost(x) for x in ce]},
                note="task events of the stream missing from the celery_task_*_total sums "
                "(0 = every event counted)",
            ),
            "peak_rss": metric(
                "MB",
                "lower",
                {
                    wk_side: [x["peak_rss_kb"] / 1024 for x in wk],
                    ce_side: [x["peak_rss_kb"] / 1024 for x in ce],
                },
                note="peak resident set of the exporter process (interpreter, libraries, "
                "State of 10,000 tasks and 200 workers, metric series)",
            ),
            "scrape": metric(
                "ms",
                "lower",
                {
                    wk_side: [sorted(x["scrape_ms"])[len(x["scrape_ms"]) // 2] for x in wk],
                    ce_side: [sorted(x["scrape_ms"])[len(x["scrape_ms"]) // 2] for x in ce],
                },
                note="rendering /metrics (prometheus-client's generate_latest) after the "
                "stream, median of the scrapes of one run; celery-exporter's per-scrape "
                "broker polling (two inspect broadcasts, 1 s each) excluded",
            ),
        },
    )
    c["ratios"]["rate"] = ratio(c["metrics"]["rate"], wk_side, ce_side)
    c["ratios"]["cpu_rate"] = ratio(c["metrics"]["cpu_rate"], wk_side, ce_side)
    c["ratios"]["peak_rss"] = ratio(c["metrics"]["peak_rss"], wk_side, ce_side)
    c["ratios"]["scrape"] = ratio(c["metrics"]["scrape"], wk_side, ce_side)
    target(
        c, "exporter ingest rate vs prometheus-exporter-celery (x)", c["ratios"]["rate"], 3.0, True
    )
    target(
        c,
        "exporter ingest rate per CPU second vs prometheus-exporter-celery (x)",
        c["ratios"]["cpu_rate"],
        3.0,
        True,
    )
    target(
        c,
        "exporter peak RSS: celery-exporter's / wkctl's (x; >= 1 = no more memory)",
        c["ratios"]["peak_rss"],
        1.0,
        higher=True,
    )
    c["errors"] = {"wkctl": [x["errors"] for x in wk], "celery-exporter": [x["errors"] for x in ce]}
    return {
        "name": NAME,
        "title": TITLE,
        "cases": [c],
        "notes": [
            f"stream: {WORKERS} workers, full task life cycles, 10% out of order, 5% duplicates, "
            "task events batched as task.multi, no worker-elect events (Celery's State raises "
            "on them); recorded times moved to the time of the run",
            "wkctl exporter --no-validate: the same without the schema check of every event "
            "(what the validation costs); rate rows only",
            "truth per type: " + ", ".join(f"{t} {expected[t]:,}" for t in TASK_TYPES),
        ],
        "setup": {
            "note": "Each side ingests the same recorded stream in its own fresh process "
            "(ru_maxrss), alternated; State limits 10,000 tasks / 5,000 workers for both; "
            "wkctl with schema validation on (its default)."
        },
    }
