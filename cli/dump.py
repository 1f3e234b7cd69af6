"""``wkctl dump``: the cluster state, as a monitor would build it.

Listens to the event exchange for a while (after asking every worker for a
heartbeat, as Celery's monitors do when they start, and pinging them so
that every live node is listed even before its first event) and feeds everything
into the library's :class:`~wkctl.protocol.state.State`, which, unlike
Celery's, accepts every event (elections included) without raising.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any

import click

from wkctl.protocol.client import Client
from wkctl.protocol.state_core import ClusterState
from wkctl.protocol.state_worker import Worker

from .context import AppContext, pass_app
from .hello import ask, embedded_note, styled_table
from .monitor import Monitor
from .render import clip, emit, format_options, style

__all__ = ["dump_cmd", "state_document", "worker_info", "task_info"]

#: Celery workers send a heartbeat every 2 s by default: three of them
#: (plus the one asked for at start) give every live worker time to show.
DEFAULT_DURATION = 6.0

_TASK_KEYS = (
    "uuid",
    "name",
    "state",
    "worker",
    "sent",
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "revoked",
    "rejected",
    "timestamp",
    "args",
    "kwargs",
    "result",
    "exception",
    "runtime",
    "retries",
    "parent_id",
    "root_id",
)


#: The fields of a worker that come straight from State's ``Worker`` (its
#: hostname and heartbeats are shown their own way).
_WORKER_ATTRS = tuple(f for f in Worker._fields if f not in ("hostname", "heartbeats"))


def worker_info(worker: Any, now: float) -> dict[str, Any]:
    heartbeats = list(getattr(worker, "heartbeats", []) or [])
    return {
        "hostname": worker.hostname,
        "alive": bool(worker.is_alive(now)),
        **{key: getattr(worker, key) for key in _WORKER_ATTRS},
        "heartbeats": len(heartbeats),
        "last_heartbeat": heartbeats[-1] if heartbeats else None,
    }


def pinged_info(hostname: str) -> dict[str, Any]:
    """A node that answered the opening ping but sent no event yet."""
    return {
        "hostname": hostname,
        "alive": True,
        **dict.fromkeys(_WORKER_ATTRS),
        "heartbeats": 0,
        "last_heartbeat": None,
    }


def task_info(task: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _TASK_KEYS:
        value = getattr(task, key, None)
        if key == "worker" and value is not None:
            value = getattr(value, "hostname", value)
        out[key] = value
    return out


def state_document(
    state: ClusterState, now: float, pinged: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``--json`` / ``--yaml`` document.

    ``pinged``: the replies to the ping ``dump`` starts with.  A node that
    answered but sent no event yet is listed too (alive, its event fields
    empty); every worker says whether it answered (``answered_ping``).
    """
    pinged = pinged or {}
    workers = {name: worker_info(worker, now) for name, worker in state.workers.items()}
    for name in pinged:
        if name not in workers:
            workers[name] = pinged_info(name)
    for name, info in workers.items():
        info["answered_ping"] = name in pinged
    workers = dict(sorted(workers.items()))
    tasks = {uuid: task_info(task) for uuid, task in state.tasks_by_time()}
    # tasks_by_time leaves out tasks that had no event yet; keep every task.
    for uuid, task in state.tasks.items():
        if uuid not in tasks:
            tasks[uuid] = task_info(task)
    return {
        "workers": workers,
        "tasks": tasks,
        "event_count": state.event_count,
        "task_count": state.task_count,
    }


class Progress:
    """A one-line countdown on stderr, only when stderr is a terminal."""

    def __init__(self, duration: float) -> None:
        self.enabled = sys.stderr.isatty()
        self.duration = duration
        self.shown = False

    def update(self, remaining: float, events: int) -> None:
        if not self.enabled:
            return
        done = 1.0 - max(remaining, 0.0) / self.duration if self.duration else 1.0
        bar = "#" * int(done * 20)
        click.echo(
            f"\rlistening [{bar:<20}] {max(remaining, 0.0):4.1f} s left, {events} event(s) ",
            nl=False,
            err=True,
        )
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            click.echo("\r" + " " * 70 + "\r", nl=False, err=True)


def _ts(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return time.strftime("%H:%M:%S", time.localtime(value))
        except (OverflowError, OSError, ValueError):
            return "?"
    return "-"


_STATE_COLORS = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "REVOKED": "magenta",
    "REJECTED": "red",
    "RETRY": "yellow",
    "STARTED": "blue",
}


def render(doc: dict[str, Any]) -> None:
    workers = doc["workers"]
    click.echo(style(f"Workers ({len(workers)})", bold=True))
    if workers:
        rows: list[tuple[Any, ...]] = []
        for name, w in workers.items():
            load = w["loadavg"]
            rows.append(
                (
                    style(name, fg="cyan"),
                    style("alive", fg="green") if w["alive"] else style("lost", fg="red"),
                    clip(w["clock"]),
                    clip(w["freq"]),
                    clip(w["active"]),
                    clip(w["processed"]),
                    " ".join(str(x) for x in load) if isinstance(load, list) else "-",
                    f"{w['sw_ident'] or '?'} {w['sw_ver'] or ''}".strip(),
                )
            )
        styled_table(
            ["worker", "status", "clock", "freq", "active", "processed", "load", "software"], rows
        )
    tasks = doc["tasks"]
    click.echo("")
    click.echo(style(f"Tasks ({len(tasks)})", bold=True))
    if tasks:
        rows = []
        for uuid, t in tasks.items():
            state_ = t["state"] or "?"
            outcome = t["exception"] if t["exception"] is not None else t["result"]
            runtime = t["runtime"]
            rows.append(
                (
                    uuid,
                    clip(t["name"]),
                    style(state_, fg=_STATE_COLORS.get(state_)),
                    clip(t["worker"]),
                    _ts(t["received"] or t["sent"]),
                    f"{runtime:.4f}s" if isinstance(runtime, (int, float)) else "-",
                    clip(outcome),
                )
            )
        styled_table(["uuid", "name", "state", "worker", "received", "runtime", "result"], rows)
    click.echo(style(f"{doc['event_count']} event(s) received", dim=True))


@click.command("dump")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.0, min_open=True),
    default=DEFAULT_DURATION,
    show_default=True,
    metavar="SECONDS",
    help="How long to listen (a few heartbeat intervals).",
)
@format_options
@pass_app
def dump_cmd(app: AppContext, duration: float, json_flag: bool, yaml_flag: bool) -> None:
    """Listen for events, then print the cluster state: workers and tasks.

    Starts with a ping, so every live node is listed however short
    --duration is (answered_ping: true); the events heard during --duration
    fill in the rest. A countdown shows on stderr when it is a terminal.

    \b
    --json: {"workers": {"<hostname>": {...}}, "tasks": {"<uuid>": {...}},
             "event_count": N, "task_count": N}
    """
    fmt = app.output_format(json_flag, yaml_flag)
    monitor = Monitor(app)
    state, stream = monitor.state, monitor.stream
    progress = Progress(duration)
    interrupted = False
    try:
        assert stream.connection is not None
        with Client(stream.connection, app.settings.names, limits=app.config.limits) as client:
            client.heartbeat()
            # Heartbeats take up to their interval (2 s for Celery) to come:
            # a ping lists every live node at once, however short --duration.
            pinged = ask(
                app,
                lambda c, known: c.ping(timeout=app.default_timeout(None), known=known),
                client=client,
            )
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            progress.update(remaining, state.event_count)
            if remaining <= 0:
                break
            monitor.step(min(remaining, 0.25), deadline)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.clear()
        monitor.close()
    if interrupted:
        raise KeyboardInterrupt
    doc = state_document(state, time.time(), pinged.replies)
    if not emit(doc, fmt):
        render(doc)
    if stream.rejected:
        click.echo(
            f"wkctl: {len(stream.rejected)} message(s) refused (not JSON or over limits)",
            err=True,
        )
    if state.event_count == 0:
        note = "" if pinged.replies else embedded_note(app)
        click.echo(f"wkctl: no event received within {duration:g} s{note}", err=True)
