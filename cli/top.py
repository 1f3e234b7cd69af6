"""``wkctl top``: a live terminal view of the cluster, like ``top`` for Celery.

The screen is drawn with rich from the same State and metrics model the
exporter serves (one :class:`~wkctl.cli.monitor.Monitor` loop); events are
applied as fast as they come, the screen is redrawn at most every
``--interval`` seconds whatever the event rate.  Keys (read in cbreak mode,
without echo) sort, filter and quit.  When stdout is not a terminal the
same tables are printed as plain text every ``--interval`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from wkctl.protocol.metrics import ClusterMetrics, MetricsConfig
from wkctl.protocol.state_core import ClusterState

from .context import AppContext, pass_app
from .monitor import Monitor

__all__ = ["top_cmd", "View", "render", "sparkline"]

#: Sort keys of the worker table, in the order the ``s`` key cycles them.
SORTS = ("name", "heartbeat", "clock", "active", "processed", "load")

#: Task states shown with a rate line, and their colours.
RATES = (
    ("task-received", "received", "cyan"),
    ("task-started", "started", "blue"),
    ("task-succeeded", "succeeded", "green"),
    ("task-failed", "failed", "red"),
    ("task-retried", "retried", "yellow"),
    ("task-revoked", "revoked", "magenta"),
    ("task-rejected", "rejected", "red"),
)

_BARS = " ▁▂▃▄▅▆▇█"

HELP = "q quit · s sort · w filter workers · t filter tasks · c clear filters"


def sparkline(values: list[int], width: int = 30) -> str:
    """``values`` squeezed into ``width`` cells of block characters (max-scaled)."""
    if not values:
        return ""
    step = max(1, -(-len(values) // width))
    cells = [sum(values[i : i + step]) for i in range(0, len(values), step)]
    top = max(cells)
    if top <= 0:
        return " " * len(cells)
    return "".join(_BARS[min(8, -(-c * 8 // top))] if c else " " for c in cells)


@dataclass
class View:
    """What the operator chose: sort order, filters, and a filter being typed."""

    sort: str = "name"
    worker_filter: str = ""
    task_filter: str = ""
    #: "w" or "t" while a filter is being typed, with what was typed so far
    editing: str | None = None
    buffer: str = ""
    quit: bool = False
    changes: list[str] = field(default_factory=list)

    def key(self, char: str) -> bool:
        """Apply one key; True when the screen must be redrawn."""
        if self.editing is not None:
            if char in ("\r", "\n"):
                if self.editing == "w":
                    self.worker_filter = self.buffer
                else:
                    self.task_filter = self.buffer
                self.editing = None
            elif char == "\x1b":
                self.editing = None
            elif char in ("\x7f", "\b"):
                self.buffer = self.buffer[:-1]
            elif char.isprintable():
                self.buffer += char
            return True
        if char in ("q", "Q", "\x03"):
            self.quit = True
        elif char == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif char in ("w", "t", "/"):
            self.editing = "t" if char == "t" else "w"
            self.buffer = self.worker_filter if self.editing == "w" else self.task_filter
        elif char == "c":
            self.worker_filter = self.task_filter = ""
        else:
            return False
        return True


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _sort_key(sort: str, row: dict[str, Any]) -> Any:
    if sort == "name":
        return (row["name"],)
    if sort == "heartbeat":
        age = row["age"]
        return (age is None, age if age is not None else 0.0, row["name"])
    value = row[sort]
    return (-(value if isinstance(value, (int, float)) else -1), row["name"])


def _worker_rows(state: ClusterState, now: float, view: View) -> list[dict[str, Any]]:
    rows = []
    for name, worker in state.workers.data.items():
        if view.worker_filter and view.worker_filter not in name:
            continue
        heartbeats = worker.heartbeats
        load = worker.loadavg if isinstance(worker.loadavg, list) else None
        rows.append(
            {
                "name": name,
                "alive": worker.is_alive(now),
                "age": now - heartbeats[-1] if heartbeats else None,
                "clock": worker.clock if isinstance(worker.clock, int) else None,
                "active": worker.active if isinstance(worker.active, int) else None,
                "processed": worker.processed if isinstance(worker.processed, int) else None,
                "load": load[0] if load and isinstance(load[0], (int, float)) else None,
                "loadavg": load,
                "sw": f"{worker.sw_ident or '?'} {worker.sw_ver or ''}".strip(),
            }
        )
    rows.sort(key=lambda r: _sort_key(view.sort, r))
    return rows


def render(
    state: ClusterState, metrics: ClusterMetrics, view: View, now: float, broker: str
) -> RenderableType:
    """The whole screen (also the plain-text fallback) as one rich renderable."""
    rows = _worker_rows(state, now, view)
    invalid = sum(metrics.rejected.values())
    header = _header(state, metrics, rows, invalid, now, broker)
    workers = _workers_table(rows, view)
    rates = _rates_table(metrics, now)
    failures = _failures_table(metrics, view)
    elections = _elections_table(metrics, now)
    invalid_table = _invalid_table(metrics, invalid)
    if view.editing is not None:
        what = "worker" if view.editing == "w" else "task name"
        footer = Text(f"filter {what}: {view.buffer}▏ (Enter to apply, Esc to cancel)", "bold")
    else:
        footer = Text(HELP, style="dim")
    return Group(
        header,
        Text(""),
        workers,
        Text(""),
        rates,
        Text(""),
        failures,
        Text(""),
        elections,
        Text(""),
        invalid_table,
        Text(""),
        footer,
    )


def _header(
    state: ClusterState,
    metrics: ClusterMetrics,
    rows: list[dict[str, Any]],
    invalid: int,
    now: float,
    broker: str,
) -> Text:
    alive = sum(1 for r in rows if r["alive"])
    return Text.assemble(
        ("wkctl top", "bold"),
        f"  {broker}  {datetime.fromtimestamp(now).strftime('%H:%M:%S')}  ",
        ("workers ", "dim"),
        (f"{alive} alive", "green"),
        " / ",
        (f"{len(rows) - alive} lost", "red" if len(rows) > alive else "dim"),
        ("  events ", "dim"),
        str(state.event_count),
        ("  invalid ", "dim"),
        (str(invalid), "red" if invalid else "dim"),
        ("  broker ", "dim"),
        ("connected", "green") if metrics.broker_connected else ("DOWN", "bold red"),
    )


def _workers_table(rows: list[dict[str, Any]], view: View) -> Table:
    workers = Table(
        title=f"Workers (sort: {view.sort}"
        + (f", filter: {view.worker_filter!r}" if view.worker_filter else "")
        + ")",
        title_justify="left",
        expand=False,
        box=None,
        header_style="bold",
    )
    for column, justify in (
        ("worker", "left"),
        ("status", "left"),
        ("heartbeat", "right"),
        ("clock", "right"),
        ("active", "right"),
        ("processed", "right"),
        ("load", "left"),
        ("software", "left"),
    ):
        workers.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        workers.add_row(
            Text(r["name"], style="cyan"),
            Text("alive", style="green") if r["alive"] else Text("lost", style="red"),
            _age(r["age"]),
            "-" if r["clock"] is None else str(r["clock"]),
            "-" if r["active"] is None else str(r["active"]),
            "-" if r["processed"] is None else str(r["processed"]),
            " ".join(f"{x:.2f}" for x in r["loadavg"] if isinstance(x, (int, float)))
            if r["loadavg"]
            else "-",
            r["sw"],
        )
    if not rows:
        workers.add_row(Text("(no worker seen yet)" if not view.worker_filter else "(none match)"))
    return workers


def _rates_table(metrics: ClusterMetrics, now: float) -> Table:
    rates = Table(title="Tasks, last minute", title_justify="left", box=None, header_style="bold")
    rates.add_column("state")
    rates.add_column("total", justify="right")
    rates.add_column("/min", justify="right")
    rates.add_column("per second, oldest left")
    for type_, label, colour in RATES:
        series = metrics.rate(type_, now)
        rates.add_row(
            Text(label, style=colour),
            f"{metrics.total(type_):.0f}",
            str(sum(series)),
            Text(sparkline(series), style=colour),
        )
    return rates


def _failures_table(metrics: ClusterMetrics, view: View) -> Table:
    failures = Table(
        title="Latest failures" + (f" (filter: {view.task_filter!r})" if view.task_filter else ""),
        title_justify="left",
        box=None,
        header_style="bold",
        min_width=80,
    )
    for column in ("time", "task", "worker", "exception"):
        failures.add_column(column, overflow="ellipsis", no_wrap=True, max_width=60)
    shown = [
        f
        for f in reversed(metrics.recent_failures)
        if (not view.task_filter or view.task_filter in f.name)
        and (not view.worker_filter or view.worker_filter in f.hostname)
    ][:5]
    for f in shown:
        failures.add_row(
            datetime.fromtimestamp(f.at).strftime("%H:%M:%S"), f.name, f.hostname, f.exception
        )
    if not shown:
        failures.add_row("-", "(none)", "", "")
    return failures


def _elections_table(metrics: ClusterMetrics, now: float) -> Table:
    elections = Table(title="Elections", title_justify="left", box=None, header_style="bold")
    for column in ("id", "topic", "state", "candidates", "winner", "seconds"):
        elections.add_column(column, overflow="ellipsis", no_wrap=True, max_width=40)
    for id_, (watch, topic) in list(metrics.elections.items())[-3:]:
        elections.add_row(
            id_,
            topic,
            Text("in progress", style="yellow"),
            str(len(watch.requests)),
            "-",
            _age(now - watch.started_at),
        )
    for d in list(metrics.recent_decided)[-3:]:
        elections.add_row(
            d.id,
            d.topic,
            Text("decided", style="green"),
            str(d.candidates),
            d.winner or "-",
            "-" if d.seconds is None else f"{d.seconds:.3f}",
        )
    timed_out = sum(metrics.elections_timed_out.values())
    if timed_out:
        elections.title = f"Elections ({timed_out} timed out)"
    if not metrics.elections and not metrics.recent_decided:
        elections.add_row("-", "(none)", "", "", "", "")
    return elections


def _invalid_table(metrics: ClusterMetrics, invalid: int) -> Table:
    invalid_table = Table(
        title=f"Invalid events ({invalid})",
        title_justify="left",
        box=None,
        header_style="bold",
    )
    for column in ("kind", "reason", "count"):
        invalid_table.add_column(column, overflow="ellipsis", no_wrap=True, max_width=40)
    for (kind, reason), count in sorted(metrics.rejected.items(), key=lambda kv: -kv[1])[:5]:
        invalid_table.add_row(kind, reason, str(count))
    if not metrics.rejected:
        invalid_table.add_row("-", "(none)", "")
    return invalid_table


@contextlib.contextmanager
def _keys(enabled: bool) -> Iterator[Any]:
    """Read keys without echo or line buffering while the view runs."""
    if not enabled:
        yield lambda: ""
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> str:
        if not select.select([fd], [], [], 0)[0]:
            return ""
        return os.read(fd, 64).decode("utf-8", "replace")

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@click.command("top")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=None,
    metavar="SECONDS",
    help="Redraw at most this often (default 0.5 s on a terminal, 5 s as plain text).",
)
@click.option(
    "--sort",
    type=click.Choice(SORTS),
    default="name",
    show_default=True,
    help="Initial sort of the worker table (key s cycles).",
)
@click.option(
    "--worker", "worker_filter", default="", help="Show workers whose name contains this."
)
@click.option(
    "--task", "task_filter", default="", help="Show failures of tasks whose name contains this."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds (default: until q or Ctrl-C).",
)
@pass_app
def top_cmd(
    app: AppContext,
    interval: float | None,
    sort: str,
    worker_filter: str,
    task_filter: str,
    duration: float | None,
) -> None:
    """Live view of the cluster: workers, task rates, failures, elections.

    \b
    Keys: q quit, s cycle the sort (name, heartbeat, clock, active,
    processed, load), w / t filter workers / task names (type, then Enter;
    Esc cancels), c clear the filters.
    When stdout is not a terminal, prints the same tables as plain text
    every --interval seconds.
    """
    interactive = sys.stdout.isatty() and sys.stdin.isatty()
    period = interval if interval is not None else (0.5 if interactive else 5.0)
    # No histogram is drawn: no buckets.
    metrics = ClusterMetrics(
        MetricsConfig(
            buckets=(), whole_hostname=True, purge_after=0, transport=app.settings.transport
        )
    )
    monitor = Monitor(app, metrics=metrics, validate=True)
    view = View(sort=sort, worker_filter=worker_filter, task_filter=task_filter)
    broker = app.settings.masked_url
    console = Console() if interactive else Console(width=160)
    start = time.monotonic()
    next_draw = 0.0
    next_tick = 0.0

    def screen() -> RenderableType:
        return render(monitor.state, metrics, view, time.time(), broker)

    try:
        monitor.ask_heartbeats()
        with contextlib.ExitStack() as stack:
            read_keys = stack.enter_context(_keys(interactive))
            live = None
            if interactive:
                live = stack.enter_context(
                    Live(console=console, screen=True, auto_refresh=False, transient=True)
                )
            while not view.quit:
                if duration is not None and time.monotonic() - start >= duration:
                    break
                monitor.step(0.05 if interactive else 0.25)
                dirty = False
                for char in read_keys():
                    dirty = view.key(char) or dirty
                    if view.quit:
                        break
                now = time.monotonic()
                if now >= next_tick:
                    metrics.tick(monitor.state, time.time())
                    next_tick = now + 0.5
                if dirty or now >= next_draw:
                    next_draw = now + period
                    if live is not None:
                        live.update(screen(), refresh=True)
                    else:
                        console.print(screen())
                        console.print("-" * 40)
                        sys.stdout.flush()
    finally:
        monitor.close()
