"""Shared machinery of the benchmarks: statistics, processes, brokers, results.

Every benchmark measures wkctl and what a user would otherwise run *in the
same run*, alternating the two sides rep by rep (ABBA order), so that a
machine that slows down half-way affects both sides alike.  Results are plain
dicts (JSON-ready) of this shape::

    {"name": "hello", "title": ..., "setup": {...}, "notes": [...],
     "cases": [{"case": "amqp N=10", "params": {...},
                "metrics": {"latency": {"unit": "ms", "better": "lower",
                                        "sides": {"wkctl hello": STATS,
                                                  "celery inspect clock": STATS}}},
                "ratios": {"latency": 21.3},
                "targets": [{"what": ..., "goal": ..., "value": ..., "met": true}]}]}

where STATS is :func:`summarize` of the samples (median, quartiles, min,
max, n, samples).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness.brokers import BrokerPool, base_url, flush_redis
from bench.harness.workers import HERE as HARNESS
from bench.harness.workers import CeleryWorker, WorkerPool

REPO = Path(__file__).resolve().parent.parent

__all__ = [
    "REPO",
    "HARNESS",
    "BenchContext",
    "BrokerPool",
    "CeleryWorker",
    "NodeHost",
    "WorkerPool",
    "alternate",
    "case",
    "die_with_parent",
    "machine_info",
    "metric",
    "proc_rss_kb",
    "run_timed",
    "summarize",
    "wkctl_cmd",
]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child between fork and exec: own session, SIGKILL when we die.

    A benchmark killed half-way must not leave Celery workers, node hosts
    or load generators behind on the shared machine.
    """
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the owner still stops its children
        pass


# -- statistics -----------------------------------------------------------


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), for small samples."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return float(sorted_values[lo] * (1 - frac) + sorted_values[hi] * frac)


def summarize(samples: Sequence[float | None]) -> dict[str, Any]:
    """Median and spread of repeated measurements (``None`` = failed run)."""
    values = sorted(float(v) for v in samples if v is not None)
    failed = sum(1 for v in samples if v is None)
    if not values:
        return {"n": 0, "failed": failed, "median": None, "samples": []}
    return {
        "n": len(values),
        "failed": failed,
        "median": round(statistics.median(values), 4),
        "q1": round(_quantile(values, 0.25), 4),
        "q3": round(_quantile(values, 0.75), 4),
        "min": round(values[0], 4),
        "max": round(values[-1], 4),
        "samples": [None if v is None else round(float(v), 4) for v in samples],
    }


def metric(
    unit: str, better: str, sides: Mapping[str, Sequence[float | None]], note: str = ""
) -> dict[str, Any]:
    """One measured quantity, summarized per side."""
    out: dict[str, Any] = {
        "unit": unit,
        "better": better,
        "sides": {name: summarize(values) for name, values in sides.items()},
    }
    if note:
        out["note"] = note
    return out


def ratio(m: dict[str, Any], ours: str, theirs: str) -> float | None:
    """How many times better ``ours`` is than ``theirs`` on medians (>1 = better)."""
    a = m["sides"].get(ours, {}).get("median")
    b = m["sides"].get(theirs, {}).get("median")
    if not a or not b:
        return None
    return round(b / a if m["better"] == "lower" else a / b, 2)


def case(name: str, params: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"case": name, "params": params, "metrics": metrics, "ratios": {}, "targets": []}


def target(c: dict[str, Any], what: str, value: float | None, goal: float, higher: bool) -> None:
    """Record a target of the issue and whether the measured median meets it."""
    met = value is not None and (value >= goal if higher else value < goal)
    c["targets"].append(
        {
            "what": what,
            "goal": f"{'>=' if higher else '<'} {goal:g}",
            "value": value,
            "met": met,
        }
    )


def alternate(
    reps: int, sides: dict[str, Callable[[int], Any]], warmup: int = 0
) -> dict[str, list[Any]]:
    """Run each side ``reps`` times, alternating in ABBA order.

    ``warmup`` extra rounds run first and are discarded (first-use costs:
    queue declarations, page cache).  Returns the per-side results in rep
    order.
    """
    names = list(sides)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(warmup + reps):
        order = names if r % 2 == 0 else list(reversed(names))
        for n in order:
            result = sides[n](r)
            if r >= warmup:
                out[n].append(result)
    return out


# -- processes --------------------------------------------------------------


def venv_script(name: str) -> list[str]:
    """A console script of this interpreter's environment, or ``python -m``."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", name.replace("-", "_")]


def wkctl_cmd(broker: str | None = None) -> list[str]:
    cmd = venv_script("wkctl")
    return cmd + (["-b", broker] if broker else [])


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL", "XDG_CONFIG_HOME"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(HARNESS)])
    env["PYTHONUNBUFFERED"] = "1"
    # No config file of the user's may change what is measured.
    env["XDG_CONFIG_HOME"] = str(Path(tempfile.gettempdir()) / "wkctl-bench-noconfig")
    if extra:
        env.update(extra)
    return env


@dataclass
class Timed:
    wall: float
    rc: int
    stdout: str
    stderr: str
    #: user + system CPU seconds of the child (its waited-for descendants included)
    cpu: float = 0.0


def run_timed(
    cmd: Sequence[str],
    *,
    timeout: float = 120.0,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Timed:
    """Run a command to completion; wall time from spawn to exit."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(cmd),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd or REPO),
        env=child_env(env),
        preexec_fn=die_with_parent,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timed(wall, proc.returncode, proc.stdout, proc.stderr, cpu)


def wait_responsive(url: str, n: int, timeout: float = 60.0) -> float | None:
    """Seconds until ``wkctl hello --expect n`` succeeds again (None: never).

    Nodes that fell behind (an election's N^2 events still being worked
    through) drop pidbox requests that expired meanwhile; a benchmark must
    not start its next round before the cluster answers again.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        r = run_timed(wkctl_cmd(url) + ["hello", "--expect", str(n), "--timeout", "1"], timeout=30)
        if r.rc == 0:
            return time.perf_counter() - t0
    return None


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class NodeHost:
    """A ``bench.nodehost`` process hosting ``count`` wkctl reference nodes."""

    def __init__(
        self,
        broker: str,
        count: int,
        prefix: str,
        *,
        heartbeat: float = 2.0,
        gossip: bool = True,
        ready_timeout: float = 90.0,
    ) -> None:
        self.count = count
        self.prefix = prefix
        cmd = [
            sys.executable,
            "-m",
            "bench.nodehost",
            "--broker",
            broker,
            "--count",
            str(count),
            "--prefix",
            prefix,
            "--heartbeat",
            str(heartbeat),
            "--ready-timeout",
            str(ready_timeout),
        ]
        if not gossip:
            cmd.append("--no-gossip")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            cwd=str(REPO),
            env=child_env(),
            preexec_fn=die_with_parent,
        )
        self.ready_rss_kb = 0
        self.ready_timeout = ready_timeout
        self.names = [f"{prefix}{i}@bench" for i in range(count)]

    def wait_ready(self) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            self.stderr.seek(0)
            err = self.stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"node host {self.prefix}: {line.strip() or 'exited'}\n{err}")
        self.ready_rss_kb = int(line.split()[2])

    def rss_kb(self) -> int:
        return proc_rss_kb(self.proc.pid)

    def join(self, name: str) -> tuple[float | None, int]:
        """Start one more node in this host: (its Mingle time in ms, peers synced)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"join {name}\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        if len(words) != 4 or words[0] != "JOINED" or words[3] != "1":
            return None, 0
        return float(words[1]), int(words[2])

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.stderr.close()


def start_node_hosts(
    broker: str, count: int, prefix: str, per_process: int = 20, **kwargs: Any
) -> list[NodeHost]:
    """``count`` reference nodes in processes of at most ``per_process``."""
    hosts: list[NodeHost] = []
    i = 0
    while count > 0:
        k = min(per_process, count)
        hosts.append(NodeHost(broker, k, f"{prefix}{i}x", **kwargs))
        count -= k
        i += 1
    for host in hosts:
        host.wait_ready()
    return hosts


# -- logs -----------------------------------------------------------------------

_LOG_TS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): ")


def log_lines(text: str) -> Iterator[tuple[float, str]]:
    """(wall-clock seconds, line) for each timestamped line of a Celery log."""
    for line in text.splitlines():
        m = _LOG_TS.match(line)
        if m:
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            yield when, line


# -- machine --------------------------------------------------------------------


def _version_of(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return None


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln for ln in (out.stdout or out.stderr).splitlines() if ln.strip()]
    return lines[-1].strip() if lines else None


def machine_info() -> dict[str, Any]:
    """Where the figures come from: cores, CPU, memory, OS, brokers, versions."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    redis_v = _first_line(["redis-server", "--version"])
    if redis_v:
        m = re.search(r"v=(\S+)", redis_v)
        redis_v = m.group(1) if m else redis_v
    c54 = None
    try:
        from bench.harness.workers import celery_python

        py54 = celery_python("5.4")
        if py54:
            c54 = "5.4 available"
    except Exception:
        pass
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "rabbitmq": _first_line(["rabbitmqctl", "version"]),
        "redis": redis_v,
        "versions": {
            "wkctl": _version_of("wkctl"),
            "celery": _version_of("celery"),
            "kombu": _version_of("kombu"),
            "py-amqp": _version_of("amqp"),
            "redis-py": _version_of("redis"),
            "jsonschema": _version_of("jsonschema"),
            "check-jsonschema": _version_of("check-jsonschema"),
        },
        "celery_5.4": c54,
    }


# -- context -------------------------------------------------------------------


@dataclass
class BenchContext:
    """What every benchmark gets: sizes, brokers, worker pool, scratch dir."""

    quick: bool
    reps: int
    brokers: list[str]
    workdir: Path
    log: Callable[[str], None] = print
    _pool: BrokerPool | None = None
    _workers: WorkerPool | None = None
    shared: dict[str, Any] = field(default_factory=dict)
    _redis_taken: set[int] = field(default_factory=set)

    @property
    def pool(self) -> BrokerPool:
        if self._pool is None:
            self._pool = BrokerPool(base_url("amqp"), base_url("redis"))
        return self._pool

    @property
    def workers(self) -> WorkerPool:
        if self._workers is None:
            logdir = self.workdir / "celery-logs"
            rec = self.workdir / "records"
            logdir.mkdir(parents=True, exist_ok=True)
            rec.mkdir(parents=True, exist_ok=True)
            self._workers = WorkerPool(logdir=logdir, record_dir=rec)
        return self._workers

    def available_brokers(self) -> list[str]:
        out = []
        for kind in self.brokers:
            if (self.pool.amqp_url if kind == "amqp" else self.pool.redis_url) is not None:
                out.append(kind)
            else:
                self.log(f"  {kind}: no broker answers, skipped")
        return out

    @contextmanager
    def broker(self, kind: str) -> Iterator[str]:
        """An isolated vhost (RabbitMQ) or database (Redis), released after."""
        url = self.pool.isolated(kind) if kind == "amqp" else self._free_redis_db()
        try:
            yield url
        finally:
            if kind == "amqp":
                self.pool.release(url)
            else:
                flush_redis(url)

    def _free_redis_db(self) -> str:
        """A Redis database nobody uses right now, from the top down.

        Test suites running on the same machine hand out databases from 1
        upwards; a database with keys or with subscribers on its fanout
        channels (kombu names them ``/<db>.<exchange>``) is someone else's,
        and sharing it would put their workers into our cluster.
        """
        import redis

        assert self.pool.redis_url is not None
        base = self.pool.redis_url.rsplit("/", 1)[0]
        client = redis.Redis.from_url(base + "/0")
        try:
            busy = {int(k[2:]) for k in client.info("keyspace")}
            channels = [
                c.decode() if isinstance(c, bytes) else c for c in client.pubsub_channels("/*")
            ]
        finally:
            client.close()
        for db in range(15, 0, -1):
            if db in busy or db in self._redis_taken:
                continue
            if any(c.startswith(f"/{db}.") for c in channels):
                continue
            self._redis_taken.add(db)
            return f"{base}/{db}"
        raise RuntimeError("no free Redis database (1-15) for the benchmark")

    def close(self) -> None:
        if self._workers is not None:
            self._workers.stop_all()
        if self._pool is not None:
            self._pool.close()


class Tap:
    """Counts what crosses the event and pidbox exchanges, on a thread.

    The broker's own counters are not comparable across RabbitMQ and Redis;
    a consumer bound to every exchange sees each published message once,
    which is the protocol's message count.
    """

    def __init__(self, url: str, *, events: bool = True, pidbox: bool = True) -> None:
        from kombu import Connection, Consumer, Queue

        from wkctl.protocol.broker import event_exchange, pidbox_exchange, transport_of
        from wkctl.protocol.wire import Names

        names = Names()
        self.conn = Connection(url)
        self.conn.ensure_connection(max_retries=3)
        transport = transport_of(url)
        queues = []
        tag = os.urandom(4).hex()
        if events:
            queues.append(
                Queue(
                    f"benchtap.ev.{tag}",
                    exchange=event_exchange(names, transport),
                    routing_key="#",
                    auto_delete=True,
                    durable=False,
                    exclusive=True,
                )
            )
        if pidbox:
            queues.append(
                Queue(
                    f"benchtap.pb.{tag}",
                    exchange=pidbox_exchange(names),
                    auto_delete=True,
                    durable=False,
                    exclusive=True,
                )
            )
        self.lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.messages: dict[str, int] = {}
        #: body bytes of every message counted (events and pidbox)
        self.bytes = 0
        self.pidbox: list[tuple[float, dict[str, Any]]] = []
        self.keep_events = True
        self._stop = threading.Event()
        channel = self.conn.channel()
        self.consumer = Consumer(channel, queues, no_ack=True, on_message=self._on_message)
        self.consumer.consume()
        try:
            self.conn.drain_events(timeout=0.05)
        except TimeoutError:
            pass
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _on_message(self, message: Any) -> None:
        now = time.time()
        exchange = (message.delivery_info or {}).get("exchange") or "?"
        try:
            body = json.loads(message.body)
        except ValueError:
            body = None
        with self.lock:
            self.bytes += len(message.body or b"")
            if "pidbox" in str(exchange):
                self.messages["pidbox"] = self.messages.get("pidbox", 0) + 1
                if isinstance(body, dict):
                    self.pidbox.append((now, body))
                return
            self.messages["event-messages"] = self.messages.get("event-messages", 0) + 1
            items = body if isinstance(body, list) else [body]
            for ev in items:
                if isinstance(ev, dict):
                    t = str(ev.get("type"))
                    self.messages[t] = self.messages.get(t, 0) + 1
                    if self.keep_events:
                        self.events.append((now, ev))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.conn.drain_events(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:
                if self._stop.is_set():
                    return
                raise

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.pidbox.clear()
            self.messages.clear()
            self.bytes = 0

    def snapshot(self) -> tuple[list[tuple[float, dict[str, Any]]], dict[str, int]]:
        with self.lock:
            return list(self.events), dict(self.messages)

    def wait_for(
        self, pred: Callable[[list[tuple[float, dict[str, Any]]]], bool], timeout: float
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if pred(self.events):
                    return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        try:
            self.conn.release()
        except Exception:
            pass
