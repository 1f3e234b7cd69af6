"""Stock Celery workers against workers hardened with ``wkctl.celery.install(app)``.

Run: ``python -m bench.b_celery`` (options: ``--brokers amqp,redis``,
``--reps N`` start-ups per side (default 5), ``--window S`` seconds of
broker traffic counted per load case (default 30), ``--sizes 3,10``,
``--quick``, ``--out PATH``, ``--hardened-args "--heartbeat-interval 4"``
to measure a knob on the hardened side).

* **start-up**: ``celery worker`` (Celery 5.7, ``-P solo``) from the
  process start to its ``ready.`` line, and its Mingle round (``mingle:
  searching for neighbors`` to ``sync complete``), with 3 stock peers
  present; stock and hardened alternate (ABBA), ``--reps`` each.
* **broker load**: a tap queue bound to the event and pidbox exchanges
  counts every protocol message and its body bytes while ``N`` workers of
  one kind run, idle and under a task load (20 ``tasks.add`` per second
  with ``-E`` task events); reported per worker per minute.  Task
  messages themselves go to the task queue, which is the same for both.

Prints one line per measurement and writes the JSON results.  Timings are
noisy on a shared machine: compare medians of one run only.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, SUPPORT, BenchContext, Tap, alternate, log_lines, summarize  # noqa: I001
from support.celeryapp import client_app  # noqa: E402
from support.hardened import build_overlay, hardened_env  # noqa: E402
from support.workers import CeleryWorker  # noqa: E402

SIDES = ("stock", "hardened")


#: Extra ``celery worker`` arguments of the hardened side (``--hardened-args``),
#: e.g. ``--heartbeat-interval 4`` to measure that knob.
HARDENED_ARGS: list[str] = []


def _start(ctx: BenchContext, url: str, side: str, n: int, prefix: str) -> list[CeleryWorker]:
    env = hardened_env("5.7", ctx.workdir) if side == "hardened" else {}
    extra = tuple(HARDENED_ARGS) if side == "hardened" else ()
    return ctx.workers.start(
        url, n=n, version="5.7", prefix=prefix, env=env, extra_args=extra, wait=False
    )


def _mingle_seconds(text: str) -> float | None:
    begin = end = None
    for stamp, line in log_lines(text):
        if "mingle: searching for neighbors" in line and begin is None:
            begin = stamp
        elif begin is not None and ("mingle: sync complete" in line or "mingle: all alone" in line):
            end = stamp
            break
    return None if begin is None or end is None else end - begin


def startup(ctx: BenchContext, kind: str, reps: int) -> dict[str, Any]:
    with ctx.broker(kind) as url:
        peers = _start(ctx, url, "stock", 3, "peer")
        for peer in peers:
            peer.wait_ready()
        time.sleep(2.5)  # a heartbeat: the peers know each other

        def one(side: str) -> tuple[float | None, float | None]:
            [worker] = _start(ctx, url, side, 1, side[0] + "start")
            try:
                worker.wait_ready(60)
            except RuntimeError:
                return None, None
            ready = time.monotonic() - worker.started_at
            mingle = _mingle_seconds(worker.log_text())
            ctx.workers.stop([worker])
            return ready, mingle

        results = alternate(reps, {side: (lambda r, s=side: one(s)) for side in SIDES})
        ctx.workers.stop(peers)
    return {
        side: {
            "ready_s": summarize([r for r, _ in results[side]]),
            "mingle_s": summarize([m for _, m in results[side]]),
        }
        for side in SIDES
    }


def _load(url: str, stop: threading.Event, rate: float) -> None:
    app = client_app(url)
    interval = 1.0 / rate
    next_at = time.monotonic()
    with app.producer_or_acquire() as producer:
        while not stop.is_set():
            app.send_task("tasks.add", args=[2, 3], producer=producer)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))


def load(ctx: BenchContext, kind: str, side: str, n: int, window: float) -> dict[str, Any]:
    with ctx.broker(kind) as url:
        workers = _start(ctx, url, side, n, side[0] + "load")
        for worker in workers:
            worker.wait_ready(90)
        time.sleep(3.0)  # past start-up: steady state
        out: dict[str, Any] = {}
        for mode in ("idle", "tasks"):
            tap = Tap(url)
            tap.keep_events = False
            stop = threading.Event()
            feeder = None
            if mode == "tasks":
                feeder = threading.Thread(target=_load, args=(url, stop, 20.0), daemon=True)
                feeder.start()
            tap.reset()
            time.sleep(window)
            with tap.lock:
                messages = sum(
                    v for k, v in tap.messages.items() if k in ("event-messages", "pidbox")
                )
                size = tap.bytes
            stop.set()
            if feeder is not None:
                feeder.join(5)
            tap.close()
            per = 60.0 / window / n
            out[mode] = {
                "messages_per_worker_min": round(messages * per, 1),
                "bytes_per_worker_min": round(size * per),
                "alive": sum(1 for w in workers if w.alive()),
            }
        ctx.workers.stop(workers)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.b_celery")
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--sizes", default="3,10")
    parser.add_argument("--only", default="startup,load")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--hardened-args", default="", help="extra celery worker arguments of the hardened side"
    )
    args = parser.parse_args(argv)
    HARDENED_ARGS[:] = args.hardened_args.split()
    import tempfile

    reps, window = (2, 5.0) if args.quick else (args.reps, args.window)
    sizes = [int(s) for s in args.sizes.split(",")] if not args.quick else [2]
    with tempfile.TemporaryDirectory(prefix="wkctl-bench-celery-") as tmp:
        ctx = BenchContext(
            quick=args.quick, reps=reps, brokers=args.brokers.split(","), workdir=Path(tmp)
        )
        build_overlay(ctx.workdir)
        results: dict[str, Any] = {"startup": {}, "load": {}}
        try:
            for kind in ctx.available_brokers():
                if "startup" in args.only:
                    r = results["startup"][kind] = startup(ctx, kind, reps)
                    for side in SIDES:
                        print(
                            f"startup {kind} {side:8}: ready median {r[side]['ready_s']['median']} s "
                            f"(IQR {r[side]['ready_s'].get('q1')}-{r[side]['ready_s'].get('q3')}), "
                            f"mingle median {r[side]['mingle_s']['median']} s, n={reps}",
                            flush=True,
                        )
                if "load" in args.only:
                    for n in sizes:
                        for side in SIDES:
                            r = results["load"].setdefault(kind, {}).setdefault(str(n), {})[
                                side
                            ] = load(ctx, kind, side, n, window)
                            for mode, v in r.items():
                                print(
                                    f"load {kind} n={n:2} {side:8} {mode:5}: "
                                    f"{v['messages_per_worker_min']} msg and "
                                    f"{v['bytes_per_worker_min']} B per worker per minute "
                                    f"({v['alive']}/{n} alive, {window:g} s window)",
                                    flush=True,
                                )
        finally:
            ctx.close()
    out = args.out or REPO / "bench" / "results" / f"celery-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"results: {out}")
    return 0


__all__ = ["SUPPORT", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
