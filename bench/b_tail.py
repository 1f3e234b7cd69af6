"""Benchmark 5: tail throughput, ``wkctl tail --json`` vs ``celery events --dump``.

A load generator process (:mod:`bench.loadgen`) publishes Celery-format
events (heartbeats one per message, task events in ``task.multi`` batches)
at a fixed rate for a few seconds; the consumer under test runs as its own
process with its stdout piped to a reader thread here, which counts the
load's events and samples their lag (arrival of the output line minus the
event's ``timestamp``, its send time).

A rate is *sustained* when the generator achieved it (within 5 %), every
published event came out of the consumer, and the last one came out within
one second of the load stopping (a consumer further behind is not keeping
up, it is queueing).  Each side climbs the same
ladder of rates and stops at its first loss; its figure is the highest
sustained rate.  Both consumers are up (a probe event seen on their
output) before the load starts.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from kombu import Connection, Producer

from .common import (
    HARNESS,
    REPO,
    BenchContext,
    alternate,
    case,
    child_env,
    die_with_parent,
    metric,
    ratio,
    target,
    wkctl_cmd,
)

NAME = "tail"
TITLE = "tail throughput: wkctl tail --json vs celery events --dump"

#: A consumer that needs longer than this after the load stopped to print
#: the last event is falling behind: the rate is not sustained.
MAX_DRAIN = 1.0

_WK_TS = re.compile(rb'"timestamp":\s*([0-9.]+)')
_CE_TS = re.compile(rb"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\+00:00)\]")


class Consumer:
    """A consumer process whose output lines are counted as they arrive."""

    def __init__(self, side: str, url: str, tag: str) -> None:
        self.side = side
        self.tag = tag.encode()
        self.probe = f"probe-{tag}".encode()
        if side == "wkctl":
            cmd = wkctl_cmd(url) + ["tail", "--json"]
            cwd = REPO
        else:
            cmd = [sys.executable, "-m", "celery", "-A", "celeryapp", "-b", url, "events", "--dump"]
            cwd = HARNESS
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=str(cwd),
            env=child_env(),
            preexec_fn=die_with_parent,
        )
        self.count = 0
        self.probes = 0
        self.last_arrival = 0.0
        self.samples: list[tuple[float, bytes]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        tag, probe = self.tag, self.probe
        samples = self.samples
        n = 0
        for line in self.proc.stdout:
            if tag in line:
                if probe in line:
                    self.probes += 1
                    continue
                n += 1
                self.count = n
                self.last_arrival = time.time()
                if n % 37 == 0:
                    samples.append((self.last_arrival, line))

    def lags_ms(self) -> list[float]:
        out = []
        for arrival, line in self.samples:
            if self.side == "wkctl":
                m = _WK_TS.search(line)
                ts = float(m.group(1)) if m else None
            else:
                m = _CE_TS.search(line)
                ts = datetime.fromisoformat(m.group(1).decode()).timestamp() if m else None
            if ts is not None:
                out.append((arrival - ts) * 1000)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.thread.join(2)


def _wait_up(consumer: Consumer, url: str, tag: str, timeout: float = 20.0) -> bool:
    """Publish probe heartbeats until the consumer shows one."""
    from wkctl.protocol.broker import event_exchange, transport_of
    from wkctl.protocol.wire import Names

    host = f"probe-{tag}@bench"
    with Connection(url) as conn:
        ex = event_exchange(Names(), transport_of(url))
        producer = Producer(conn.channel(), exchange=ex, auto_declare=False)
        ex(producer.channel).declare()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if consumer.probes:
                return True
            if consumer.proc.poll() is not None:
                return False
            body = json.dumps(
                {
                    "hostname": host,
                    "type": "worker-heartbeat",
                    "timestamp": time.time(),
                    "utcoffset": 0,
                    "pid": 1,
                    "clock": 1,
                    "freq": 2.0,
                    "active": 0,
                    "processed": 0,
                    "loadavg": [0, 0, 0],
                    "sw_ident": "py-celery",
                    "sw_ver": "5.7.0",
                    "sw_sys": "Linux",
                }
            )
            producer.publish(
                body,
                routing_key="worker.heartbeat",
                content_type="application/json",
                content_encoding="utf-8",
                headers={"hostname": host},
            )
            time.sleep(0.1)
    return False


def one_run(url: str, side: str, rate: float, duration: float) -> dict[str, Any] | None:
    tag = uuid.uuid4().hex[:8]
    consumer = Consumer(side, url, tag)
    try:
        if not _wait_up(consumer, url, tag):
            print(f"    {side} consumer did not come up", flush=True)
            return None
        gen = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--broker", url, "--rate", str(rate)]
            + ["--duration", str(duration), "--tag", tag],
            capture_output=True,
            text=True,
            cwd=str(REPO),
            env=child_env(),
            preexec_fn=die_with_parent,
            timeout=duration + 60,
        )
        if gen.returncode != 0:
            print(f"    loadgen failed: {gen.stderr[-500:]}", flush=True)
            return None
        pub = json.loads(gen.stdout.strip().splitlines()[-1])
        # drain: until everything arrived or nothing new for 1.5 s
        last, last_change = -1, time.monotonic()
        deadline = time.monotonic() + 30
        while consumer.count < pub["events"] and time.monotonic() < deadline:
            if consumer.count != last:
                last, last_change = consumer.count, time.monotonic()
            elif time.monotonic() - last_change > 1.5:
                break
            time.sleep(0.05)
        lags = consumer.lags_ms()
        received = consumer.count
        return {
            "rate": rate,
            "achieved": pub["rate"],
            "published": pub["events"],
            "messages": pub["messages"],
            "received": received,
            "lost": pub["events"] - received,
            "sustained": received >= pub["events"]
            and pub["rate"] >= 0.95 * rate
            and (consumer.last_arrival - pub["stop"]) <= MAX_DRAIN,
            "lag_p50_ms": statistics.median(lags) if lags else None,
            "lag_p99_ms": sorted(lags)[int(0.99 * (len(lags) - 1))] if lags else None,
            "drain_ms": (consumer.last_arrival - pub["stop"]) * 1000 if received else None,
        }
    finally:
        consumer.stop()


def ladder(url: str, side: str, rates: list[float], duration: float, log: Any) -> dict[str, Any]:
    """Climb the rates until the first loss; the highest sustained one."""
    best = 0.0
    runs = []
    for rate in rates:
        r = one_run(url, side, rate, duration)
        if r is None:
            break
        runs.append(r)
        log(
            f"    {side} @ {rate:,.0f}/s: achieved {r['achieved']:,.0f}/s, lost {r['lost']}, "
            f"lag p50 {r['lag_p50_ms'] or 0:.0f} ms"
        )
        if not r["sustained"]:
            break
        best = rate
    return {"best": best, "runs": runs}


def run(ctx: BenchContext) -> dict[str, Any]:
    rates = [1_000.0] if ctx.quick else [5_000.0, 10_000.0, 20_000.0, 30_000.0, 40_000.0]
    duration = 0.5 if ctx.quick else 3.0
    reps = 1 if ctx.quick else 2
    cases = []
    for kind in ctx.available_brokers():
        with ctx.broker(kind) as url:
            ctx.log(
                f"  {kind}: rates {', '.join(f'{r:,.0f}' for r in rates)} events/s, {duration:g} s each"
            )
            res = alternate(
                reps,
                {
                    "wkctl": lambda r: ladder(url, "wkctl", rates, duration, ctx.log),
                    "celery": lambda r: ladder(url, "celery", rates, duration, ctx.log),
                },
            )

        def at(
            side: str, rate: float, key: str, res: dict[str, list[Any]] = res
        ) -> list[float | None]:
            return [
                run_[key]
                for lad in res[side]
                for run_ in lad["runs"]
                if run_["rate"] == rate and run_["sustained"]
            ]

        ref_rate = 20_000.0 if not ctx.quick else rates[-1]
        c = case(
            f"{kind}",
            {"broker": kind, "rates": rates, "seconds_per_rate": duration, "reps": reps},
            {
                "max_rate": metric(
                    "events/s",
                    "higher",
                    {
                        "wkctl tail --json": [lad["best"] for lad in res["wkctl"]],
                        "celery events --dump": [lad["best"] for lad in res["celery"]],
                    },
                    note="highest rate of the ladder consumed without loss (0 = lost at the lowest)",
                ),
                "lag_p50": metric(
                    "ms",
                    "lower",
                    {
                        "wkctl tail --json": at("wkctl", ref_rate, "lag_p50_ms"),
                        "celery events --dump": at("celery", ref_rate, "lag_p50_ms"),
                    },
                    note=f"median lag at {ref_rate:,.0f} events/s, sustained runs only "
                    "(event timestamp -> its output line read)",
                ),
                "lag_p99": metric(
                    "ms",
                    "lower",
                    {
                        "wkctl tail --json": at("wkctl", ref_rate, "lag_p99_ms"),
                        "celery events --dump": at("celery", ref_rate, "lag_p99_ms"),
                    },
                ),
            },
        )
        c["runs"] = {side: [lad["runs"] for lad in res[side]] for side in res}
        c["ratios"]["max_rate"] = ratio(
            c["metrics"]["max_rate"], "wkctl tail --json", "celery events --dump"
        )
        target(
            c,
            f"wkctl tail --json lossless rate on {kind} (events/s)",
            c["metrics"]["max_rate"]["sides"]["wkctl tail --json"]["median"],
            20_000,
            True,
        )
        cases.append(c)
    return {
        "name": NAME,
        "title": TITLE,
        "cases": cases,
        "notes": [
            "load: heartbeats one per message (about 200/s), task events in task.multi "
            "batches of up to 10; 20 simulated workers",
            f"{rates[-1]:,.0f} events/s is the top of the ladder: that figure means at least "
            "that much (one Python load generator on 2 shared cores reaches about that)",
        ],
        "setup": {
            "note": "Load generator, consumer and broker share the 2 cores; the consumer's "
            "stdout is a pipe read by the benchmark."
        },
    }
