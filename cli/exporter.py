"""``wkctl exporter``: the cluster as Prometheus metrics, on ``/metrics``.

A drop-in for prometheus-exporter-celery 0.11.2 (same port, same metric
names, types and label sets, so the celery-mixin dashboards and alerts work
unchanged) plus ``wkctl_*`` metrics none of the exporters has.  The
counting rules live in :mod:`wkctl.protocol.metrics`; this module is the
adapter: it runs the shared :class:`~wkctl.cli.monitor.Monitor` loop, polls
what events cannot tell (queue lengths, consumers, processes, and, opt-in,
revoked-set sizes), and turns the model into prometheus-client metric
families at scrape time (the exposition format is prometheus-client's).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import click
from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from wkctl.protocol.client import Client, hello_table
from wkctl.protocol.metrics import (
    QUEUE_WAIT_BUCKETS,
    TASK_COUNTERS,
    ClusterMetrics,
    MetricsConfig,
)
from wkctl.protocol.state_core import ClusterState
from wkctl.protocol.vocab import CELERY_SW_IDENT, REDIS_TRANSPORTS

from .config import parse_transport_option as transport_option
from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .monitor import Monitor

__all__ = ["exporter_cmd", "MetricsCollector", "parse_listen", "transport_option"]

DEFAULT_LISTEN = "127.0.0.1:9808"

logger = logging.getLogger(__name__)

#: Help strings of prometheus-exporter-celery's task counters (same text,
#: so that ``# HELP`` lines match too).
_TASK_HELP = {
    "task-sent": "Sent when a task message is published.",
    "task-received": "Sent when the worker receives a task.",
    "task-started": "Sent just before the worker executes the task.",
    "task-succeeded": "Sent if the task executed successfully.",
    "task-failed": "Sent if the execution of the task failed.",
    "task-rejected": "The task was rejected by the worker, possibly to be re-queued or "
    "moved to a dead letter queue.",
    "task-revoked": "Sent if the task has been revoked.",
    "task-retried": "Sent if the task failed, but will be retried in the future.",
}
_TASK_LABELS = ["name", "hostname", "queue_name"]
_FAILED_LABELS = ["name", "hostname", "exception", "queue_name"]


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise CliError(f"--listen: expected HOST:PORT, got {value!r}", ExitCode.USAGE)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _parse_buckets(option: str, text: str) -> list[float]:
    """Histogram upper bounds from ``A,B,C`` (sorted)."""
    try:
        return sorted(float(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise CliError(f"{option}: not a list of numbers: {text!r}", ExitCode.USAGE) from None


def _hist_buckets(counts: list[int], bounds: list[float]) -> list[tuple[str, float]]:
    out, running = [], 0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        running += count
        out.append((floatToGoString(bound), float(running)))
    return out


class MetricsCollector:
    """A prometheus-client collector that reads the model at scrape time.

    Series are built per scrape from plain dicts (no client-side metric
    objects per label set), under the monitor's lock.
    """

    def __init__(self, state: ClusterState, metrics: ClusterMetrics, lock: Any) -> None:
        self.state = state
        self.metrics = metrics
        self.lock = lock
        self.scrapes = 0

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            families = self._families(self.state, time.time())
        self.scrapes += 1
        return iter(families)

    def _families(self, state: ClusterState, now: float) -> list[Metric]:
        m = self.metrics
        m.tick(state, now)
        out: list[Metric] = []
        for type_ in TASK_COUNTERS:
            subject = type_.split("-", 1)[1]
            failed = type_ == "task-failed"
            family = CounterMetricFamily(
                f"celery_task_{subject}",
                _TASK_HELP[type_],
                labels=_FAILED_LABELS if failed else _TASK_LABELS,
            )
            for key, value in m.counts[type_].items():
                created = m.series.get((key[0], key[1], key[-1]))
                family.add_metric(list(key), value, created=created)
            out.append(family)
        runtime = HistogramMetricFamily(
            "celery_task_runtime", "Histogram of task runtime measurements.", labels=_TASK_LABELS
        )
        for key, hist in m.runtime.items():
            runtime.add_metric(list(key), _hist_buckets(hist.counts, m.bounds), hist.total)
        out.append(runtime)
        wait = HistogramMetricFamily(
            "celery_task_queue_wait_time",
            "Histogram of the time tasks spend waiting in the queue before being executed, "
            "excluding deliberate ETA/countdown delay.",
            labels=_TASK_LABELS,
        )
        for key, hist in m.queue_waits.items():
            wait.add_metric(list(key), _hist_buckets(hist.counts, m.wait_bounds), hist.total)
        out.append(wait)
        workers = m.workers(state, now)
        up = GaugeMetricFamily(
            "celery_worker_up",
            "Indicates if a worker has recently sent a heartbeat.",
            labels=["hostname"],
        )
        active = GaugeMetricFamily(
            "celery_worker_tasks_active",
            "The number of tasks the worker is currently processing",
            labels=["hostname"],
        )
        clock = GaugeMetricFamily(
            "wkctl_worker_clock", "Lamport clock of the worker (latest event).", labels=["hostname"]
        )
        for label, row in workers.items():
            up.add_metric([label], row["up"])
            active.add_metric([label], row["active"])
            clock.add_metric([label], row["clock"])
        out += [up, active, clock]
        for field, name, help_ in (
            ("length", "celery_queue_length", "The number of message in broker queue."),
            (
                "consumers",
                "celery_active_consumer_count",
                "The number of active consumer in broker queue.",
            ),
            (
                "workers",
                "celery_active_worker_count",
                "The number of active workers in broker queue.",
            ),
            (
                "processes",
                "celery_active_process_count",
                "The number of active processes in broker queue.",
            ),
        ):
            queue_family = GaugeMetricFamily(name, help_, labels=["queue_name"])
            for queue, values in m.queues.items():
                if field in values:
                    queue_family.add_metric([queue], values[field])
            out.append(queue_family)
        out += self._wkctl(state, now)
        return out

    def _wkctl(self, state: ClusterState, now: float) -> list[Metric]:
        m = self.metrics
        out: list[Metric] = []

        def counter(name: str, help_: str, label: str, table: dict[str, int]) -> None:
            family = CounterMetricFamily(name, help_, labels=[label])
            for key, value in table.items():
                family.add_metric([key], value)
            out.append(family)

        def gauge(name: str, help_: str, value: float) -> None:
            out.append(GaugeMetricFamily(name, help_, value=value))

        counter("wkctl_events", "Events ingested, by type (after decoding).", "type", m.events)
        rejected = CounterMetricFamily(
            "wkctl_events_rejected",
            "Messages refused (kind=message: not JSON, over limits) and events failing the "
            "schemas (kind=<event type>), by reason.",
            labels=["kind", "reason"],
        )
        for (kind, reason), value in m.rejected.items():
            rejected.add_metric([kind, reason], value)
        out.append(rejected)
        counter(
            "wkctl_elections_held", "Elections seen starting, by topic.", "topic", m.elections_held
        )
        counter(
            "wkctl_elections_decided",
            "Elections where every candidate acknowledged every request, by topic.",
            "topic",
            m.elections_decided,
        )
        counter(
            "wkctl_elections_timed_out",
            "Elections not decided within the election timeout, by topic.",
            "topic",
            m.elections_timed_out,
        )
        gauge(
            "wkctl_elections_in_progress",
            "Elections started and not yet decided.",
            len(m.elections),
        )
        winner = GaugeMetricFamily(
            "wkctl_election_winner",
            "1 for the winner of the latest decided election of each topic.",
            labels=["topic", "hostname"],
        )
        for topic, host in m.winners.items():
            winner.add_metric([topic, host], 1)
        out.append(winner)
        if m.election_seconds is not None:
            decision = HistogramMetricFamily(
                "wkctl_election_decision_seconds",
                "Seconds from the first worker-elect seen to the decision.",
            )
            decision.add_metric(
                [],
                _hist_buckets(m.election_seconds.counts, m.election_bounds),
                m.election_seconds.total,
            )
            out.append(decision)
        gauge(
            "wkctl_cluster_clock_spread",
            "Highest minus lowest Lamport clock of the workers alive.",
            m.clock_spread(state, now),
        )
        drift = GaugeMetricFamily(
            "wkctl_worker_clock_drift_seconds",
            "Local receive time minus the worker's event timestamp (latest heartbeat).",
            labels=["hostname"],
        )
        for host, seconds in m.drift.items():
            drift.add_metric([host], seconds)
        out.append(drift)
        counter(
            "wkctl_clock_drift_warnings",
            "Worker events whose timestamp drifts from the local clock by more than 16 s.",
            "hostname",
            m.drift_warnings,
        )
        counter(
            "wkctl_workers_lost",
            "Workers that stopped sending heartbeats without a worker-offline event.",
            "hostname",
            m.lost,
        )
        counter(
            "wkctl_workers_rejoined",
            "Lost workers whose heartbeats came back.",
            "hostname",
            m.rejoined,
        )
        revoked = GaugeMetricFamily(
            "wkctl_worker_revoked_ids",
            "Task ids in the worker's revoked set (from the periodic hello, --hello-interval).",
            labels=["hostname"],
        )
        for key, value in m.revoked.items():
            revoked.add_metric([key], value)
        out.append(revoked)
        gauge(
            "wkctl_event_ingest_lag_seconds",
            "Local ingest time minus the timestamp of the latest event.",
            m.ingest_lag,
        )
        gauge(
            "wkctl_broker_connected",
            "1 while the event stream is connected to the broker.",
            float(m.broker_connected),
        )
        gauge("wkctl_state_tasks", "Tasks held in the exporter's State.", len(state.tasks))
        gauge("wkctl_state_workers", "Workers held in the exporter's State.", len(state.workers))
        return out


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def make_app(registry: CollectorRegistry, metrics: ClusterMetrics, broker: str) -> Any:
    """The WSGI app: ``/metrics`` (prometheus-client), ``/health``, ``/``."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/health":
            if metrics.broker_connected:
                body, status = f"Connected to the broker {broker}", "200 OK"
            else:
                body, status = (
                    f"Failed to connect to broker: '{broker}'",
                    "500 Internal Server Error",
                )
        elif path == "/":
            body, status = (
                "<!doctype html><html><head><meta charset='utf-8'><title>wkctl exporter</title>"
                "</head><body><h1>wkctl exporter</h1><p><a href='/metrics'>Metrics</a> "
                "<a href='/health'>Health</a></p></body></html>",
                "200 OK",
            )
        else:
            body, status = "not found", "404 Not Found"
        data = body.encode("utf-8")
        ctype = "text/html" if path == "/" else "text/plain"
        start_response(
            status,
            [("Content-Type", f"{ctype}; charset=utf-8"), ("Content-Length", str(len(data)))],
        )
        return [data]

    return app


class Pollers:
    """What events cannot tell, asked now and then from a thread of its own.

    The polls wait for replies (up to a second each when a worker does not
    answer): on the event loop's thread they would delay the events behind
    them, and State stamps events when they are applied, so a dead
    worker would look alive for longer.  The thread has its own broker
    connection (kombu connections are not shared between threads) and
    reads State and writes the metrics under the monitor's lock.
    """

    def __init__(
        self,
        monitor: Monitor,
        metrics: ClusterMetrics,
        queues: Iterable[str],
        *,
        queue_interval: float,
        hello_interval: float,
    ) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.known_queues: set[str] = set(queues)
        self.queue_interval = queue_interval
        self.hello_interval = hello_interval
        self.stop = threading.Event()
        self.connection: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="wkctl-exporter-poll", daemon=True)

    def start(self) -> None:
        if self.queue_interval or self.hello_interval:
            self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self._drop_connection()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # wkctl's own bug: handed to the main thread
            self.error = exc

    def _loop(self) -> None:
        settings = self.monitor.app.settings
        probe = settings.connection()  # not connected: only its error types are read
        errors = (*probe.connection_errors, *probe.channel_errors, OSError, ConnectionError)
        next_queues = next_hello = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            try:
                if self.connection is None:
                    self.connection = settings.connection()
                    self.connection.ensure_connection(
                        max_retries=0, timeout=settings.connect_timeout
                    )
                if self.queue_interval and now >= next_queues:
                    next_queues = now + self.queue_interval
                    self.queues()
                if self.hello_interval and now >= next_hello:
                    next_hello = now + self.hello_interval
                    self.hello()
            except errors as exc:  # the broker went away: a new connection next round
                logger.info("exporter poll failed: %r", exc)
                self._drop_connection()
            due = [
                at
                for at, every in (
                    (next_queues, self.queue_interval),
                    (next_hello, self.hello_interval),
                )
                if every
            ]
            self.stop.wait(max(0.05, min(due) - time.monotonic()))

    def _drop_connection(self) -> None:
        if self.connection is not None:
            try:
                self.connection.release()
            except Exception:  # closing a dead connection: it is dropped anyway
                pass
        self.connection = None

    def _alive(self, celery_only: bool = False) -> int:
        now = time.time()
        with self.monitor.lock:
            return sum(
                1
                for w in self.monitor.state.workers.data.values()
                if w.is_alive(now) and (not celery_only or w.sw_ident == CELERY_SW_IDENT)
            )

    def _client(self) -> Client:
        app = self.monitor.app
        return Client(self.connection, app.settings.names, limits=app.config.limits)

    def queues(self) -> None:
        """Queue lengths and consumers, workers and processes per queue."""
        # Only Celery workers answer active_queues / stats: expecting them
        # ends the wait as soon as they did.
        expect = self._alive(celery_only=True) or None
        with self._client() as client:
            active = client.call("active_queues", timeout=1.0, expect=expect).replies
            stats = client.call("stats", timeout=1.0, expect=expect).replies
        workers: dict[str, int] = {}
        processes: dict[str, int] = {}
        for node, infos in active.items():
            if not isinstance(infos, list):
                continue
            pool = stats.get(node, {}).get("pool") if isinstance(stats.get(node), dict) else None
            procs = pool.get("processes") if isinstance(pool, dict) else None
            nprocs = len(procs) if isinstance(procs, list) else 0
            for info in infos:
                name = info.get("name") if isinstance(info, dict) else None
                if isinstance(name, str):
                    self.known_queues.add(name)
                    workers[name] = workers.get(name, 0) + 1
                    processes[name] = processes.get(name, 0) + nprocs
        sizes = {name: self._queue_size(name) for name in sorted(self.known_queues)}
        with self.monitor.lock:
            for name, (length, consumers) in sizes.items():
                values: dict[str, float] = {
                    "workers": workers.get(name, 0),
                    "processes": processes.get(name, 0),
                }
                if length is not None:
                    values["length"] = length
                if consumers is not None:
                    values["consumers"] = consumers
                self.metrics.set_queue(name, **values)

    def _queue_size(self, name: str) -> tuple[int | None, int | None]:
        conn = self.connection
        transport = self.monitor.app.settings.transport
        channel = conn.channel()
        try:
            if transport in REDIS_TRANSPORTS:
                return int(channel.client.llen(name)), None
            if transport in ("amqp", "amqps", "pyamqp"):
                try:
                    ok = channel.queue_declare(queue=name, passive=True)
                except conn.channel_errors:  # the queue does not exist (yet)
                    return 0, 0
                return int(ok.message_count), int(ok.consumer_count)
            return None, None
        finally:
            try:
                channel.close()
            except Exception:  # a channel closed by the broker (404) is gone already
                pass

    def hello(self) -> None:
        """Revoked-set size of every node, from Mingle's ``hello``."""
        with self._client() as client:
            replies = client.hello(timeout=1.0, expect=self._alive() or None).replies
        with self.monitor.lock:
            self.metrics.set_revoked(hello_table(replies))


@click.command("exporter")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve /metrics and /health (9808: prometheus-exporter-celery's port).",
)
@click.option(
    "--broker-transport-option",
    "transport_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Broker transport option (repeatable), e.g. visibility_timeout=18000; digits are an "
    "int, JSON is decoded (as prometheus-exporter-celery).",
)
@click.option(
    "-Q",
    "--queues",
    default="",
    metavar="Q1,Q2",
    help="Queues to report from the start (others appear once a worker consumes them).",
)
@click.option(
    "--buckets",
    default=",".join(str(b) for b in Histogram.DEFAULT_BUCKETS if b != float("inf")),
    show_default=True,
    help="Upper bounds of the celery_task_runtime histogram buckets.",
)
@click.option(
    "--queue-wait-buckets",
    default=",".join(str(b) for b in QUEUE_WAIT_BUCKETS),
    show_default=True,
    help="Upper bounds of the celery_task_queue_wait_time histogram buckets (observed only "
    "for tasks whose producer sends task-sent events: task_send_sent_event).",
)
@click.option(
    "--hostname-label",
    type=click.Choice(["host", "node"]),
    default="host",
    show_default=True,
    help="hostname label: the part after '@' (as prometheus-exporter-celery) or the whole "
    "node name (one series per worker).",
)
@click.option(
    "--generic-hostname-task-sent-metric",
    is_flag=True,
    help="Label celery_task_sent_total with hostname=generic (many short-lived clients).",
)
@click.option(
    "--max-label-values",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Distinct values kept per label (task names, hostnames, exceptions, queues, ...); "
    "more are counted under 'other'.",
)
@click.option(
    "--purge-offline-worker-metrics",
    "purge_after",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Drop the series of a worker not alive for this long (0: never).",
)
@click.option(
    "--queue-interval",
    type=click.FloatRange(min=0),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to ask workers for their queues and the broker for queue lengths (0: never).",
)
@click.option(
    "--hello-interval",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Send Mingle's hello this often for wkctl_worker_revoked_ids (0: off).",
)
@click.option(
    "--election-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="An election not decided within this time counts as timed out.",
)
@click.option(
    "--max-tasks",
    type=click.IntRange(min=1),
    default=10000,
    show_default=True,
    help="Tasks kept in State (memory bound; counters are not affected).",
)
@click.option(
    "--no-validate",
    is_flag=True,
    help="Do not check events against the schemas (wkctl_events_rejected counts only refused "
    "messages then).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds (default: run until interrupted).",
)
@pass_app
def exporter_cmd(
    app: AppContext,
    listen: str,
    transport_options: tuple[str, ...],
    queues: str,
    buckets: str,
    queue_wait_buckets: str,
    hostname_label: str,
    generic_hostname_task_sent_metric: bool,
    max_label_values: int,
    purge_after: float,
    queue_interval: float,
    hello_interval: float,
    election_timeout: float,
    max_tasks: int,
    no_validate: bool,
    duration: float | None,
) -> None:
    """Serve Prometheus metrics of the cluster on /metrics (and /health).

    Drop-in for prometheus-exporter-celery: the same celery_* metric names,
    types and labels (and its later celery_task_queue_wait_time), plus wkctl_* metrics (elections, clocks, drift,
    rejected events, lost workers, revoked sets, ingest lag, broker
    connection). Counts come from the event stream, as `wkctl dump` reads
    it; queue figures from the broker and the workers every
    --queue-interval seconds.
    """
    host, port = parse_listen(listen)
    bounds = _parse_buckets("--buckets", buckets)
    wait_bounds = _parse_buckets("--queue-wait-buckets", queue_wait_buckets)
    if transport_options:
        app.add_transport_options(dict(transport_option(text) for text in transport_options))
    config = MetricsConfig(
        buckets=bounds,
        queue_wait_buckets=wait_bounds,
        max_label_values=max_label_values,
        whole_hostname=hostname_label == "node",
        generic_sent_hostname=generic_hostname_task_sent_metric,
        purge_after=purge_after,
        election_timeout=election_timeout,
        transport=app.settings.transport,
    )
    metrics = ClusterMetrics(config)
    lock = threading.Lock()
    monitor = Monitor(
        app, metrics=metrics, validate=not no_validate, lock=lock, max_tasks=max_tasks
    )
    assert monitor.stream.connection is not None
    app.log(
        "broker transport options (names only): "
        + (", ".join(sorted(monitor.stream.connection.transport_options or {})) or "none"),
        2,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(monitor.state, metrics, lock))
    try:
        server = make_server(
            host,
            port,
            make_app(registry, metrics, app.settings.masked_url),
            server_class=_Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        monitor.close()
        raise CliError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", ExitCode.FAILURE
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="wkctl-exporter-http", daemon=True)
    thread.start()
    click.echo(
        f"wkctl: exporter on http://{host}:{server.server_port}/metrics "
        f"(broker {app.settings.masked_url})",
        err=True,
    )
    pollers = Pollers(
        monitor,
        metrics,
        [q for q in queues.split(",") if q],
        queue_interval=queue_interval,
        hello_interval=hello_interval,
    )
    start = time.monotonic()
    next_tick = start
    try:
        monitor.ask_heartbeats()
        pollers.start()
        while duration is None or time.monotonic() - start < duration:
            monitor.step(0.25)
            if pollers.error is not None:
                raise pollers.error
            now = time.monotonic()
            if now >= next_tick:
                with lock:
                    metrics.tick(monitor.state, time.time())
                next_tick = now + 0.5
    finally:
        pollers.close()
        server.shutdown()
        server.server_close()
        monitor.close()
