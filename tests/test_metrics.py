"""The exporter's counting rules (``wkctl.protocol.metrics``), sans-IO:
events in, counters out, time passed in."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from wkctl.cli.exporter import parse_listen, transport_option
from wkctl.cli.monitor import Ingest
from wkctl.protocol.metrics import (
    OTHER,
    QUEUE_WAIT_BUCKETS,
    ClusterMetrics,
    MetricsConfig,
    eta_timestamp,
    exception_class,
    hostname_label,
    queue_wait,
)

T0 = 1_800_000_000.0
BUCKETS = (0.1, 1.0, 10.0, float("inf"))


def make(**config: Any) -> tuple[Ingest, ClusterMetrics]:
    metrics = ClusterMetrics(MetricsConfig(buckets=BUCKETS, **config))
    return Ingest(metrics=metrics, validate=True), metrics


def heartbeat(host: str, ts: float, clock: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "type": "worker-heartbeat",
        "hostname": host,
        "timestamp": ts,
        "clock": clock,
        "freq": 2.0,
        "active": 0,
        "processed": 0,
        "loadavg": [0.0, 0.0, 0.0],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "utcoffset": 0,
        "pid": 1,
        **extra,
    }


def task(type_: str, uuid: str, host: str, ts: float, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "uuid": uuid, "hostname": host, "timestamp": ts, **extra}


def test_labels_as_prometheus_exporter_celery() -> None:
    assert hostname_label("w1@host-a") == "host-a"
    assert hostname_label("a@b@c") == "b@c"
    assert hostname_label("plain") == "plain"
    assert hostname_label("w1@host-a", whole=True) == "w1@host-a"
    assert exception_class("ValueError('x')") == "ValueError"
    assert exception_class("boom") == "UnknownException"
    assert exception_class(None) == "UnknownException"


def test_task_counters_and_zero_series() -> None:
    ingest, m = make()
    ingest.apply(
        [
            task("task-received", "u1", "w1@h", T0, name="tasks.add"),
            task("task-started", "u1", "w1@h", T0),
            task("task-failed", "u1", "w1@h", T0, exception="KeyError('k')"),
            task("task-received", "u2", "w1@h", T0, name="tasks.add"),
            task("task-succeeded", "u2", "w1@h", T0, runtime=0.5),
        ],
        T0,
    )
    key = ("tasks.add", "h", "celery")
    assert m.counts["task-received"][key] == 2
    assert m.counts["task-succeeded"][key] == 1
    assert m.counts["task-failed"][("tasks.add", "h", "KeyError", "celery")] == 1
    # every counter shows the label set at zero, task-failed with exception=""
    assert m.counts["task-rejected"][key] == 0
    assert m.counts["task-sent"][key] == 0
    assert m.counts["task-failed"][("tasks.add", "h", "", "celery")] == 0
    hist = m.runtime[key]
    assert hist.counts == [0, 1, 0, 0] and hist.total == 0.5
    assert m.recent_failures[-1].exception == "KeyError('k')"


def iso(ts: float, hours_east: float = 0.0) -> str:
    """An ETA as Celery sends it: ISO 8601 with the producer's UTC offset."""
    return datetime.fromtimestamp(ts, timezone(timedelta(hours=hours_east))).isoformat()


def sent(uuid: str, ts: float, eta: str | None = None, **extra: Any) -> dict[str, Any]:
    return task("task-sent", uuid, "client@web", ts, name="tasks.add", queue="q1", eta=eta, **extra)


WAIT_KEY = ("tasks.add", "h", "q1")


@pytest.mark.parametrize(
    ("eta", "started_after", "waited"),
    [
        pytest.param(None, 5.0, 5.0, id="plain-task"),
        pytest.param(iso(T0 + 120), 123.0, 3.0, id="future-eta-not-waiting"),
        pytest.param(iso(T0 - 60), 5.0, 5.0, id="past-eta-changes-nothing"),
        pytest.param(None, -2.0, 0.0, id="clock-skew-clamped-to-zero"),
        # the producer's and the worker's time zone (utcoffset) play no part:
        # timestamps are not shifted by it, the ETA names an instant
        pytest.param(iso(T0 + 120, hours_east=5.5), 123.0, 3.0, id="eta-with-an-offset"),
        # a naive ETA is UTC, as a Celery worker of the default timezone reads it
        pytest.param(iso(T0 + 120).replace("+00:00", ""), 123.0, 3.0, id="naive-eta-is-utc"),
        pytest.param("tomorrow", 5.0, 5.0, id="unreadable-eta-ignored"),
    ],
)
def test_queue_wait_time(eta: str | None, started_after: float, waited: float) -> None:
    """celery_task_queue_wait_time (prometheus-exporter-celery after 0.11.2):
    observed at task-started, from the later of task-sent and the ETA."""
    ingest, m = make()
    offsets = {"utcoffset": -5.5} if eta and "+05:30" in eta else {}
    ingest.apply(
        [
            sent("u1", T0, eta=eta, **offsets),
            task("task-received", "u1", "w1@h", T0 + 0.1, **offsets),
            task("task-started", "u1", "w1@h", T0 + started_after, **offsets),
        ],
        T0 + 200,
    )
    hist = m.queue_waits[WAIT_KEY]
    assert sum(hist.counts) == 1
    assert hist.total == pytest.approx(waited)
    assert queue_wait(T0, T0 + started_after, eta) == pytest.approx(waited)


def test_queue_wait_time_retry_backoff_and_missing_sent() -> None:
    ingest, m = make(queue_wait_buckets=(1.0, 5.0))
    ingest.apply(
        [
            # first delivery waits 1 s, then a retry republishes it with a
            # 30 s backoff (an ETA): the second delivery waits 3 s past it
            sent("u1", T0),
            task("task-started", "u1", "w1@h", T0 + 1),
            task("task-retried", "u1", "w1@h", T0 + 2, exception="E()"),
            sent("u1", T0 + 2, eta=iso(T0 + 32), retries=1),
            task("task-started", "u1", "w1@h", T0 + 35),
            # started without a task-sent seen (task_send_sent_event off):
            # nothing to measure from
            task("task-received", "u2", "w1@h", T0, name="tasks.add", queue="q1"),
            task("task-started", "u2", "w1@h", T0 + 1),
        ],
        T0 + 40,
    )
    hist = m.queue_waits[WAIT_KEY]
    assert hist.counts == [1, 1, 0] and hist.total == pytest.approx(4.0)
    assert m.wait_bounds == [1.0, 5.0]
    assert ClusterMetrics(MetricsConfig(buckets=BUCKETS)).wait_bounds == list(QUEUE_WAIT_BUCKETS)
    assert eta_timestamp(None) is None and eta_timestamp("x" * 100) is None
    assert queue_wait(None, T0) is None and queue_wait(T0, float("nan")) is None
    assert queue_wait(True, T0) is None


def test_queue_wait_time_when_task_sent_comes_after_the_start() -> None:
    """The producer's task-sent and the worker's events come over different
    connections: a task picked up at once may start before its task-sent
    arrives (seen live).  Its wait is observed when it comes, once per
    delivery."""
    ingest, m = make()
    ingest.apply(
        [
            task("task-received", "u1", "w1@h", T0 + 0.2, name="tasks.add", queue="q1"),
            task("task-started", "u1", "w1@h", T0 + 0.3),
        ],
        T0 + 1,
    )
    assert WAIT_KEY not in m.queue_waits  # nothing to measure from yet
    ingest.apply([sent("u1", T0)], T0 + 1)  # the late task-sent
    hist = m.queue_waits[WAIT_KEY]
    assert sum(hist.counts) == 1 and hist.total == pytest.approx(0.3)
    ingest.apply(
        [
            task("task-started", "u1", "w1@h", T0 + 0.3),  # a duplicate start: not again
            # a retry republished without a task-sent of its own (a worker
            # without task_send_sent_event; seen live): waited from the retry
            task("task-retried", "u1", "w1@h", T0 + 2, exception="E()"),
            task("task-received", "u1", "w1@h", T0 + 2.1, retries=1),
            task("task-started", "u1", "w1@h", T0 + 2.5),
        ],
        T0 + 3,
    )
    assert sum(hist.counts) == 2 and hist.total == pytest.approx(0.3 + 0.5)
    # a task-sent of that delivery arriving now adds nothing
    ingest.apply([sent("u1", T0 + 1.9, retries=1)], T0 + 3)
    assert sum(hist.counts) == 2


def test_queue_wait_time_is_purged_with_its_worker() -> None:
    ingest, m = make(purge_after=60.0)
    ingest.apply([heartbeat("w1@h", T0), sent("u1", T0)], T0)
    ingest.apply([task("task-started", "u1", "w1@h", T0 + 1)], T0 + 1)
    assert WAIT_KEY in m.queue_waits
    m.tick(ingest.state, T0 + 100)
    assert WAIT_KEY not in m.queue_waits


def test_label_cap_sends_overflow_to_other_and_memory_stays_flat() -> None:
    ingest, m = make(max_label_values=5)
    for i in range(2000):
        ingest.apply([task("task-received", f"u{i}", f"w{i}@host{i}", T0, name=f"t{i}")], T0)
    names = {k[0] for k in m.counts["task-received"]}
    hosts = {k[1] for k in m.counts["task-received"]}
    assert len(names) == 6 and OTHER in names
    assert len(hosts) == 6 and OTHER in hosts
    # series: at most (5+1) names x (5+1) hosts
    assert len(m.counts["task-received"]) <= 36
    assert sum(m.counts["task-received"].values()) == 2000


def test_lost_rejoined_and_purge() -> None:
    ingest, m = make(purge_after=60.0)
    ingest.apply([heartbeat("w1@h1", T0, clock=5), heartbeat("w2@h2", T0, clock=9)], T0)
    ingest.apply([task("task-received", "u", "w1@h1", T0, name="x")], T0)
    m.tick(ingest.state, T0 + 1)
    assert m.workers(ingest.state, T0 + 1)["h1"]["up"] == 1
    assert m.clock_spread(ingest.state, T0 + 1) == 4
    m.tick(ingest.state, T0 + 10)  # 2 s heartbeats expire after about 4 s
    assert m.lost == {"h1": 1, "h2": 1}
    assert m.workers(ingest.state, T0 + 10)["h1"]["up"] == 0
    ingest.apply([heartbeat("w1@h1", T0 + 20, clock=7)], T0 + 20)
    assert m.rejoined == {"h1": 1}
    m.tick(ingest.state, T0 + 70)  # h2 not alive for 69 s > 60: purged
    assert "h2" not in m.workers(ingest.state, T0 + 70)
    assert m.lost.get("h2") is None
    assert "h2" not in m.cap_host.values
    # h1 was alive at T0+20 (50 s ago), and keeps its series
    assert ("x", "h1", "celery") in m.counts["task-received"]
    m.tick(ingest.state, T0 + 200)
    assert ("x", "h1", "celery") not in m.counts["task-received"]


def test_offline_is_not_lost() -> None:
    ingest, m = make()
    ingest.apply([heartbeat("w1@h1", T0)], T0)
    ingest.apply([dict(heartbeat("w1@h1", T0 + 1), type="worker-offline")], T0 + 1)
    m.tick(ingest.state, T0 + 30)
    assert m.lost == {}


def _elect(host: str, id_: str, clock: int, ts: float) -> dict[str, Any]:
    return {
        "type": "worker-elect",
        "hostname": host,
        "id": id_,
        "topic": "task",
        "clock": clock,
        "pid": 1,
        "action": None,
        "cver": 1,
        "timestamp": ts,
    }


def _ack(host: str, id_: str, ts: float) -> dict[str, Any]:
    return {"type": "worker-elect-ack", "hostname": host, "id": id_, "clock": 1, "timestamp": ts}


def test_elections_decided_and_timed_out() -> None:
    ingest, m = make(election_timeout=5.0, whole_hostname=True)
    nodes = ["a@h", "b@h", "c@h"]
    ingest.apply([heartbeat(n, T0) for n in nodes], T0)
    events = [_elect(n, "e1", 10 + i, T0) for i, n in enumerate(nodes)]
    events += [_ack(n, "e1", T0) for n in nodes for _ in nodes]
    ingest.apply(events[:2], T0)
    assert m.elections_held == {"task": 1} and m.elections_decided == {}  # c@h not in yet
    ingest.apply(events[2:], T0 + 0.25)
    assert m.elections_held == {"task": 1} and m.elections_decided == {"task": 1}
    assert m.winners == {"task": "a@h"}
    assert m.election_seconds is not None and m.election_seconds.total == pytest.approx(0.25)
    assert m.elections == {}
    # an election nobody completes
    ingest.apply([_elect("a@h", "e2", 20, T0 + 1)], T0 + 1)
    m.tick(ingest.state, T0 + 2)
    assert m.elections_timed_out == {}
    m.tick(ingest.state, T0 + 7)
    assert m.elections_timed_out == {"task": 1} and m.elections == {}


def test_invalid_and_hostile_events_are_counted_not_raised() -> None:
    ingest, m = make()
    ingest.apply(
        [
            heartbeat("evil@x", "now"),  # type: ignore[arg-type]
            "not an object",
            {"no": "type"},
            task("task-succeeded", "u", "w@h", T0, runtime="slow"),
            {"type": "task-received", "uuid": {"x": 1}},
        ],
        T0,
    )
    assert m.rejected[("worker-heartbeat", "schema")] == 1
    assert m.rejected[("item", "not an object")] == 1
    assert sum(m.rejected.values()) >= 4
    assert m.runtime == {}  # a non-numeric runtime is not observed


def test_drift_is_measured() -> None:
    ingest, m = make(whole_hostname=True)
    ingest.apply([heartbeat("w@h", T0 - 30)], T0)
    assert m.drift["w@h"] == pytest.approx(30)
    assert m.drift_warnings == {"w@h": 1}


def test_rates_per_second() -> None:
    ingest, m = make()
    for i in range(5):
        ingest.apply([task("task-received", f"u{i}", "w@h", T0, name="x")], T0 + i // 2)
    series = m.rate("task-received", T0 + 3, seconds=5)
    assert series == [0, 2, 2, 1, 0]


def test_cli_option_parsing() -> None:
    assert parse_listen("127.0.0.1:9808") == ("127.0.0.1", 9808)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert transport_option("visibility_timeout=18000") == ("visibility_timeout", 18000)
    assert transport_option('queue_order_strategy="priority"') == (
        "queue_order_strategy",
        "priority",
    )
    assert transport_option("master_name=mymaster") == ("master_name", "mymaster")
    assert transport_option('x={"a": 1}') == ("x", {"a": 1})
    from wkctl.cli.errors import CliError

    with pytest.raises(CliError, match="--listen"):
        parse_listen("9808")
    with pytest.raises(CliError, match="KEY=VALUE"):
        transport_option("novalue")


def test_memory_stays_flat_under_churn() -> None:
    """Hours of churn compressed: ever new task ids, names, nodes and
    exception types, time running on so that nodes go and get purged.
    Every structure the exporter keeps stops growing at its bound."""
    m = ClusterMetrics(MetricsConfig(buckets=BUCKETS, max_label_values=50, purge_after=30.0))
    ingest = Ingest(metrics=m, validate=True, max_tasks=2000)

    def sizes() -> dict[str, int]:
        return {
            "series": sum(len(b) for b in m.counts.values()),
            "label sets": len(m.series),
            "histograms": len(m.runtime),
            "queue waits": len(m.queue_waits),
            "waits remembered": len(m._waited) + len(m._wait_pending),
            "nodes": len(m.nodes),
            "label cache": len(m._labels),
            "drift": len(m.drift),
            "events": len(m.events),
            "rejected": len(m.rejected),
        }

    def run(start: int, stop: int) -> None:
        for i in range(start, stop):
            now = T0 + i / 100.0  # 100 events per second
            node = f"w{i // 500}@host{i // 500}"  # a new node every 5 s
            ingest.apply(
                [
                    heartbeat(node, now),
                    # half the tasks start without their task-sent (awaited)
                    *([task("task-sent", f"u{i}", "client@web", now - 0.5)] if i % 2 else []),
                    task("task-received", f"u{i}", node, now, name=f"tasks.t{i % 5000}"),
                    task("task-started", f"u{i}", node, now),
                    task("task-failed", f"u{i}", node, now, exception=f"E{i % 700}('x')"),
                    {"type": f"custom-{i % 300}", "hostname": node, "timestamp": now},
                ],
                now,
            )
            if i % 100 == 0:
                m.tick(ingest.state, now)

    run(0, 20_000)
    first = sizes()
    run(20_000, 60_000)
    second = sizes()
    for name, value in second.items():
        assert value <= max(first[name], 1) * 1.1 + 60, (name, first[name], value)
    assert len(ingest.state.tasks) <= 2000
    assert second["queue waits"] > 0  # the histogram was fed (and stayed bounded)
    assert second["series"] <= 8 * 51 * 51 * 51  # names x hosts x exceptions at most


def test_top_screen_shows_elections_failures_and_invalid_events() -> None:
    """What ``wkctl top`` draws from the model (its live tests drive the
    screen with a real worker; elections and hostile events are fed here)."""
    from rich.console import Console

    from wkctl.cli.top import View, render

    ingest, m = make(whole_hostname=True)
    nodes = ["a@h", "b@h"]
    ingest.apply([heartbeat(n, T0) for n in nodes], T0)
    ingest.apply([_elect(n, "e-done", 10 + i, T0) for i, n in enumerate(nodes)], T0)
    ingest.apply([_ack(n, "e-done", T0) for n in nodes for _ in nodes], T0 + 0.1)
    ingest.apply([_elect("a@h", "e-open", 30, T0 + 0.5)], T0 + 0.5)
    ingest.apply(
        [
            task("task-received", "f", "a@h", T0, name="tasks.boom"),
            task("task-failed", "f", "a@h", T0, exception="ZeroDivisionError('x')"),
            heartbeat("evil@x", "now"),  # type: ignore[arg-type]
        ],
        T0 + 1,
    )
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(render(ingest.state, m, View(sort="clock"), T0 + 1.5, "amqp://x"))
    text = console.export_text()
    assert "e-done" in text and "decided" in text and "a@h" in text
    assert "e-open" in text and "in progress" in text
    assert "tasks.boom" in text and "ZeroDivisionError" in text
    assert "worker-heartbeat" in text and "schema" in text  # invalid events table
    assert "sort: clock" in text
    view = View()
    for key in "tboom\r":  # t, the filter typed, Enter
        view.key(key)
    assert view.task_filter == "boom" and view.editing is None
    assert view.key("q") and view.quit
