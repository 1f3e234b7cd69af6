"""``wkctl tail``: the event exchange as a readable stream, or as NDJSON.

Like ``celery events --dump``, but batched ``task.multi`` messages are
expanded into their events, only JSON is ever decoded, events can be
filtered by type and checked against the schemas as they pass, and a
dropped broker connection is re-established (and reported) instead of
ending the stream.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from wkctl.protocol.client import EventStream, StreamNotice
from wkctl.protocol.vocab import EVENT_TYPES

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .render import style

__all__ = ["tail_cmd", "type_filter", "format_event", "open_stream", "notice_printer"]

#: One encoder for every NDJSON line (``json.dumps`` with options builds a
#: new encoder per call, which shows at tens of thousands of events/s).
encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode

#: Invalid events of one batch explained in detail (and reported on stderr
#: with --json); the rest are counted.
DETAILED_PER_BATCH = 100

_PATTERN_OK = re.compile(r"^[A-Za-z0-9_.*?!\[\]-]+$")


def type_filter(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A predicate over event types from shell-style patterns (any may match).

    Patterns are checked up front so that a typo is reported, not silently
    matching nothing: only letters, digits, ``-_.`` and the wildcards
    ``* ? [...]`` are allowed, and brackets must balance.
    """
    if not patterns:
        return lambda _type: True
    for pattern in patterns:
        if not _PATTERN_OK.match(pattern) or pattern.count("[") != pattern.count("]"):
            raise CliError(
                f"--type: bad pattern {pattern!r} (shell-style, for example 'worker-*' or "
                "'task-failed'; letters, digits, '-', '_', '.', '*', '?', '[...]')",
                ExitCode.USAGE,
            )
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    return lambda type_: bool(regex.match(type_))


def unknown_type_warnings(patterns: Sequence[str]) -> list[str]:
    """A warning per pattern that matches no event type a Celery cluster
    sends (a typo such as ``hartbeat`` would otherwise match nothing in
    silence); custom ``task-<name>`` events stay possible, so it is not an
    error."""
    known = sorted(EVENT_TYPES)
    out = []
    for pattern in patterns:
        if pattern.startswith("task-") or fnmatch.filter(known, pattern):
            continue
        close = difflib.get_close_matches(pattern, known, n=2, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        out.append(f"--type {pattern!r} matches no known event type ({', '.join(known)}){hint}")
    return out


_TYPE_COLORS = {
    "task-failed": "red",
    "task-rejected": "red",
    "task-revoked": "magenta",
    "task-retried": "yellow",
    "task-succeeded": "green",
    "worker-offline": "red",
    "worker-online": "green",
    "worker-elect": "magenta",
    "worker-elect-ack": "magenta",
}


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def salient(event: dict[str, Any]) -> str:
    """The few fields that say what happened, per event type."""
    type_ = str(event.get("type", ""))
    keys: tuple[str, ...]
    if type_ == "worker-heartbeat":
        keys = ("clock", "active", "processed", "freq")
    elif type_ in ("worker-online", "worker-offline"):
        keys = ("clock", "sw_ident", "sw_ver", "freq")
    elif type_ == "worker-elect":
        keys = ("id", "topic", "clock", "pid")
    elif type_ == "worker-elect-ack":
        keys = ("id", "clock")
    elif type_ in ("task-received", "task-sent"):
        keys = ("uuid", "name", "args", "kwargs")
    elif type_ == "task-succeeded":
        keys = ("uuid", "result", "runtime")
    elif type_ == "task-failed":
        keys = ("uuid", "exception")
    elif type_ == "task-retried":
        keys = ("uuid", "exception")
    elif type_.startswith("task-"):
        keys = ("uuid",)
    else:
        keys = ("clock",)
    parts = []
    for key in keys:
        if key in event:
            value = event[key]
            if key == "runtime" and isinstance(value, (int, float)):
                parts.append(f"runtime={value:.4f}s")
            else:
                parts.append(f"{key}={_short(value)}")
    return " ".join(parts)


def format_event(event: Any) -> str:
    """One human line: local time, node, type, salient fields."""
    if not isinstance(event, dict):
        return style("?", fg="red") + f" (not an event: {_short(event)})"
    ts = event.get("timestamp")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        try:
            when = datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]
        except (OverflowError, OSError, ValueError):
            when = "??:??:??.???"
    else:
        when = "--:--:--.---"
    type_ = str(event.get("type", "?"))
    color = _TYPE_COLORS.get(type_)
    return (
        f"{style(when, dim=True)} {style(str(event.get('hostname', '?')), fg='cyan')} "
        f"{style(type_, fg=color, bold=color is not None)} {salient(event)}"
    ).rstrip()


def notice_printer(app: AppContext) -> Callable[[StreamNotice], None]:
    def say(notice: StreamNotice) -> None:
        click.echo(f"wkctl: {notice.message}", err=True)

    return say


def open_stream(
    app: AppContext,
    routing_key: str = "#",
    on_notice: Callable[[StreamNotice], None] | None = None,
) -> EventStream:
    """An open :class:`EventStream` (unreachable broker: the one-line error, exit 4).

    Notices (connection lost / back) are printed on stderr, then passed to
    ``on_notice`` (the exporter turns them into ``wkctl_broker_connected``).
    """
    settings = app.settings
    say = notice_printer(app)

    def notify(notice: StreamNotice) -> None:
        say(notice)
        if on_notice is not None:
            on_notice(notice)

    conn = app.connect(settings)
    stream = EventStream(
        settings,
        routing_key=routing_key,
        limits=app.config.limits,
        on_notice=notify,
        connection=conn,
    )
    try:
        stream.open()
    except Exception as exc:  # declaring on a broken broker: same message as connect
        from .context import broker_error

        stream.close()
        raise broker_error(settings, exc) from None
    app.log(
        f"listening on queue {stream.queue_name} (exchange {settings.names.event_exchange}, "
        f"routing key {routing_key!r})"
    )
    return stream


@click.command("tail")
@click.option(
    "--duration",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Stop after this many seconds (default: run until interrupted).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Stop after N events (after filtering).",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="PATTERN",
    help="Only events whose type matches this shell-style pattern (repeatable), "
    "e.g. 'worker-*', 'task-failed'.",
)
@click.option(
    "--validate",
    is_flag=True,
    help="Check every event against the schemas; flag invalid ones and count them at exit "
    "(exit 1 when any was invalid).",
)
@click.option("--json", "json_flag", is_flag=True, help="Print NDJSON: one event body per line.")
@pass_app
def tail_cmd(
    app: AppContext,
    duration: float | None,
    count: int | None,
    types: tuple[str, ...],
    validate: bool,
    json_flag: bool,
) -> None:
    """Stream events from the event exchange, one line per event.

    Batched task events (task.multi) are shown one by one. Runs until
    interrupted (Ctrl-C, exit 130), or for --duration seconds, or --count
    events. A dropped broker connection is re-established and reported on
    stderr.
    """
    wanted = type_filter(types)
    for warning in unknown_type_warnings(types):
        click.echo(f"wkctl: warning: {warning}", err=True)
    json_out = app.output_format(json_flag) == "json"
    check: Callable[[Any], list[Any]] | None = None
    if validate:
        from wkctl.protocol.validation import is_valid
        from wkctl.protocol.validation import validate as validate_body

        budget = [DETAILED_PER_BATCH]

        def check(body: Any) -> list[Any]:
            # The fast path says valid or not for every event; the detailed
            # (slow) pass explains only the first invalid ones of each batch,
            # so one hostile message of millions of invalid items cannot
            # stall the stream.
            if is_valid(body, "event"):
                return []
            if budget[0] <= 0:
                return ["invalid (details skipped: too many invalid events at once)"]
            budget[0] -= 1
            return validate_body(body, "event") or ["invalid"]

    stream = open_stream(app)
    shown = invalid = 0
    refused_seen = 0
    out = sys.stdout
    deadline = None if duration is None else time.monotonic() + duration
    interrupted = False
    try:
        while True:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                batch = stream.poll(min(0.5, remaining), deadline)
            else:
                batch = stream.poll(0.5)
            while refused_seen < len(stream.rejected):
                reason, detail = stream.rejected[refused_seen]
                refused_seen += 1
                if validate or app.verbose:
                    click.echo(f"wkctl: refused message: {reason}: {detail}", err=True)
            lines: list[str] = []
            if validate:
                budget[0] = DETAILED_PER_BATCH
            reported = batch_invalid = 0
            for event in batch:
                type_ = event.get("type") if isinstance(event, dict) else None
                if types and not (isinstance(type_, str) and wanted(type_)):
                    continue
                issues = check(event) if check is not None else []
                if issues:
                    invalid += 1
                    batch_invalid += 1
                if json_out:
                    lines.append(encode(event))
                    if issues and reported < DETAILED_PER_BATCH:
                        reported += 1
                        click.echo(
                            f"wkctl: invalid event #{shown + 1} ({type_ or '?'} from "
                            f"{event.get('hostname', '?') if isinstance(event, dict) else '?'}): "
                            f"{issues[0]}",
                            err=True,
                        )
                else:
                    line = format_event(event)
                    if issues:
                        line += "  " + style(f"INVALID {issues[0]}", fg="red", bold=True)
                    lines.append(line)
                shown += 1
                if count is not None and shown >= count:
                    break
            if json_out and batch_invalid > reported:
                click.echo(
                    f"wkctl: {batch_invalid - reported} more invalid event(s) in this batch",
                    err=True,
                )
            if lines:
                chunk = "\n".join(lines) + "\n"
                try:
                    chunk.encode("utf-8")
                except UnicodeEncodeError:
                    # A lone surrogate from a peer (valid in JSON): write its
                    # escape, which is also what JSON would have carried.
                    chunk = chunk.encode("utf-8", "backslashreplace").decode("utf-8")
                if json_out:
                    out.write(chunk)
                    out.flush()
                else:
                    click.echo(chunk, nl=False)
            if count is not None and shown >= count:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stream.close()
    refused = len(stream.rejected)
    if validate or app.verbose or interrupted:
        summary = f"wkctl: tail: {shown} event(s)"
        if validate:
            summary += f", {invalid} invalid"
        if refused:
            summary += f", {refused} message(s) refused (not JSON or over limits)"
        if stream.reconnects:
            summary += f", {stream.reconnects} reconnect(s)"
        click.echo(summary, err=True)
    if interrupted:
        raise KeyboardInterrupt
    if validate and (invalid or refused):
        raise CliError(
            f"{invalid} invalid event(s) and {refused} refused message(s) seen", ExitCode.FAILURE
        )
