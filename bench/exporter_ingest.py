"""One exporter ingest run, in a process of its own (fair peak-memory figures).

``python -m bench.exporter_ingest --impl wkctl|celery-exporter --file EVENTS.ndjson``

Each line of the file is one message body as it travels on the event
exchange (an event, or a ``task.multi`` list).  A chunk of lines is decoded
(not timed: both exporters get bodies decoded by kombu), then handed to the
exporter's own per-message path (timed):

* wkctl: :class:`wkctl.cli.monitor.Ingest` (stamping, State, schema check,
  metrics), exactly what ``wkctl exporter`` runs per poll;
* prometheus-exporter-celery 0.11.2 (run with the tools venv's Python): its
  ``Exporter`` handlers behind Celery's own ``EventReceiver._receive``
  (stamping, batch expansion, dispatch), exactly what its ``capture`` loop
  runs per message.

Then the registry is rendered to the Prometheus text format ``--scrapes``
times (timed: the scrape latency, broker-side polling excluded for both),
and the per-type task counters are summed to check that no event was lost.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import time
from typing import Any

CHUNK = 5_000
TASK_TYPES = (
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-rejected",
    "task-revoked",
    "task-retried",
)


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wkctl_side(max_tasks: int, validate: bool = True) -> tuple[Any, Any, Any]:
    from prometheus_client import CollectorRegistry, Histogram

    from wkctl.cli.exporter import MetricsCollector
    from wkctl.cli.monitor import Ingest
    from wkctl.protocol.metrics import ClusterMetrics, MetricsConfig

    metrics = ClusterMetrics(MetricsConfig(buckets=Histogram.DEFAULT_BUCKETS))
    ingest = Ingest(metrics=metrics, validate=validate, max_tasks=max_tasks)
    if validate:
        # The schema check is generated and compiled at its first use: a
        # start-up cost (like the other side's imports), not ingest.
        from wkctl.protocol.validation import is_valid

        is_valid({}, "event")
    registry = CollectorRegistry(auto_describe=False)
    import contextlib

    registry.register(MetricsCollector(ingest.state, metrics, contextlib.nullcontext()))

    def feed(body: Any) -> None:
        ingest.apply(body if body.__class__ is list else [body], time.time())

    return feed, registry, lambda: None


def celery_exporter_side(max_tasks: int, validate: bool = True) -> tuple[Any, Any, Any]:
    from celery import Celery
    from loguru import logger
    from src.exporter import Exporter  # prometheus-exporter-celery 0.11.2

    logger.remove()  # its debug/info logging is off in production too
    exporter = Exporter()
    app = Celery(broker="memory://")
    exporter.app = app
    exporter.state = app.events.State(max_tasks_in_memory=max_tasks)
    handlers = {
        "worker-heartbeat": exporter.track_worker_heartbeat,
        "worker-online": lambda event: exporter.track_worker_status(event, True),
        "worker-offline": lambda event: exporter.track_worker_status(event, False),
    }
    for key in exporter.state_counters:
        handlers[key] = exporter.track_task_event
    receiver = app.events.Receiver(app.connection(), handlers=handlers)
    errors = [0]

    def feed(body: Any) -> None:
        try:
            receiver._receive(body, None)
        except Exception:  # counted: an event its handlers raise on is lost
            errors[0] += 1

    feed.errors = errors  # type: ignore[attr-defined]
    return feed, exporter.registry, exporter.track_timed_out_workers


def counted(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = dict.fromkeys(TASK_TYPES, 0.0)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            for type_ in TASK_TYPES:
                if s.name == f"celery_task_{type_.split('-', 1)[1]}_total":
                    out[type_] += s.value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.exporter_ingest")
    parser.add_argument("--impl", choices=("wkctl", "celery-exporter"), required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--max-tasks", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=15)
    parser.add_argument("--no-validate", action="store_true", help="wkctl: no schema check")
    args = parser.parse_args(argv)
    side = wkctl_side if args.impl == "wkctl" else celery_exporter_side
    feed, registry, before_scrape = side(args.max_tasks, not args.no_validate)
    from prometheus_client import generate_latest

    loads = json.loads
    gc.collect()
    base = _rss_kb()
    spent = cpu = 0.0
    messages = events = 0
    shift: float | None = None
    with open(args.file) as f:
        while True:
            lines = [line for _, line in zip(range(CHUNK), f, strict=False)]
            if not lines:
                break
            chunk = [loads(line) for line in lines]
            del lines
            if shift is None:
                first = chunk[0][0] if chunk[0].__class__ is list else chunk[0]
                shift = time.time() - first["timestamp"]
            for body in chunk:
                for event in body if body.__class__ is list else [body]:
                    # The recording's times, moved to now (both exporters
                    # judge liveness and purges on them).
                    if isinstance(event.get("timestamp"), float):
                        event["timestamp"] += shift
                    event.pop("local_received", None)
            t0, c0 = time.perf_counter(), time.process_time()
            for body in chunk:
                feed(body)
            spent += time.perf_counter() - t0
            cpu += time.process_time() - c0
            messages += len(chunk)
            events += sum(len(b) if b.__class__ is list else 1 for b in chunk)
            del chunk
    scrape_ms = []
    text = ""
    for _ in range(args.scrapes):
        t0 = time.perf_counter()
        before_scrape()
        text = generate_latest(registry).decode()
        scrape_ms.append((time.perf_counter() - t0) * 1000.0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "impl": args.impl,
                "messages": messages,
                "events": events,
                "seconds": spent,
                "rate": events / spent if spent else None,
                "cpu_rate": events / cpu if cpu else None,
                "base_rss_kb": base,
                "peak_rss_kb": peak,
                "scrape_ms": scrape_ms,
                "scrape_bytes": len(text),
                "counted": counted(text),
                "errors": getattr(feed, "errors", [0])[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
