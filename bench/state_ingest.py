"""One State ingest run, in a process of its own (fair peak-memory figures).

``python -m bench.state_ingest --impl wkctl|celery --file EVENTS.ndjson``
reads the recorded stream in chunks, decodes a chunk (not timed), feeds
its events to ``State.event`` (timed), and prints one JSON line: events,
seconds spent in ``State.event``, events/s, the resident set size before
ingest and the peak (``ru_maxrss``), and how many events raised.

Decoding is kept out of the timing because both monitors receive events
already decoded by kombu; chunks keep the decoded input small, so the peak
is dominated by what each State keeps.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from typing import Any

CHUNK = 20_000


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.state_ingest")
    parser.add_argument("--impl", choices=("wkctl", "celery"), required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--max-tasks", type=int, default=10_000)
    parser.add_argument("--max-workers", type=int, default=5_000)
    parser.add_argument("--profile", default=None, help="write cProfile stats here")
    args = parser.parse_args(argv)
    if args.impl == "celery":
        from celery.events.state import State
    else:
        from wkctl.protocol.state import State  # type: ignore[assignment]
    state: Any = State(max_tasks_in_memory=args.max_tasks, max_workers_in_memory=args.max_workers)
    loads = json.loads
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    gc.collect()
    base = _rss_kb()
    spent = 0.0
    events = errors = 0
    feed = state.event
    with open(args.file) as f:
        while True:
            lines = [line for _, line in zip(range(CHUNK), f, strict=False)]
            if not lines:
                break
            chunk = [loads(line) for line in lines]
            del lines
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            for ev in chunk:
                try:
                    feed(ev)
                except Exception:
                    errors += 1
            spent += time.perf_counter() - t0
            if profiler is not None:
                profiler.disable()
            events += len(chunk)
            del chunk
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if profiler is not None:
        profiler.dump_stats(args.profile)
    print(
        json.dumps(
            {
                "impl": args.impl,
                "events": events,
                "seconds": spent,
                "rate": events / spent if spent else None,
                "base_rss_kb": base,
                "peak_rss_kb": peak,
                "end_rss_kb": _rss_kb(),
                "errors": errors,
                "tasks": len(state.tasks),
                "workers": len(state.workers),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
