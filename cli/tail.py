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
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import click

from wkctl.protocol.client import EventStream, StreamNotice
from wkctl.protocol.observers import EventValidator
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
DETAILED_PER_BATCH = EventValidator.DETAILED_PER_BATCH

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
    express: str | None = None,
) -> EventStream:
    """An open :class:`EventStream` (unreachable broker: the one-line error, exit 4).

    ``express``: a routing key whose events overtake the others
    (:class:`EventStream`).

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
        express=express,
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
    view = _TailView(
        json_out=app.output_format(json_flag) == "json",
        validator=EventValidator(DETAILED_PER_BATCH) if validate else None,
        wanted=wanted if types else None,
        count=count,
    )
    stream = open_stream(app)
    interrupted = False
    try:
        for batch in _batches(stream, duration):
            view.report_refused(stream.rejected, bool(validate or app.verbose))
            view.write(view.take(batch))
            if view.done:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stream.close()
    if validate or app.verbose or interrupted:
        click.echo(view.summary(stream), err=True)
    if interrupted:
        raise KeyboardInterrupt
    refused = len(stream.rejected)
    if validate and (view.invalid or refused):
        raise CliError(
            f"{view.invalid} invalid event(s) and {refused} refused message(s) seen",
            ExitCode.FAILURE,
        )


def _batches(stream: EventStream, duration: float | None) -> Iterator[list[Any]]:
    """The stream's batches (possibly empty), for ``duration`` seconds or forever."""
    deadline = None if duration is None else time.monotonic() + duration
    while True:
        if deadline is None:
            yield stream.poll(0.5)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        yield stream.poll(min(0.5, remaining), deadline)


class _TailView:
    """What ``tail`` prints: filtering, validation marks, counts, output."""

    def __init__(
        self,
        *,
        json_out: bool,
        validator: EventValidator | None,
        wanted: Callable[[str], bool] | None,
        count: int | None,
    ) -> None:
        self.json_out = json_out
        self.validator = validator
        self.wanted = wanted
        self.count = count
        self.shown = 0
        self.invalid = 0
        self.refused_seen = 0

    @property
    def done(self) -> bool:
        return self.count is not None and self.shown >= self.count

    def report_refused(self, rejected: list[tuple[str, str]], say: bool) -> None:
        """Name every newly refused message (with --validate or -v)."""
        for reason, detail in rejected[self.refused_seen :]:
            if say:
                click.echo(f"wkctl: refused message: {reason}: {detail}", err=True)
        self.refused_seen = len(rejected)

    def _selected(self, event: Any) -> bool:
        if self.wanted is None:
            return True
        type_ = event.get("type") if isinstance(event, dict) else None
        return isinstance(type_, str) and self.wanted(type_)

    def take(self, batch: list[Any]) -> list[str]:
        """The output lines of one batch (up to ``--count``)."""
        if self.validator is not None:
            self.validator.new_batch()
        lines: list[str] = []
        reported = batch_invalid = 0
        for event in batch:
            if not self._selected(event):
                continue
            issues = self.validator.issues(event) if self.validator is not None else []
            if issues:
                self.invalid += 1
                batch_invalid += 1
            if not self.json_out:
                lines.append(_human_line(event, issues))
            else:
                lines.append(encode(event))
                if issues and reported < DETAILED_PER_BATCH:
                    reported += 1
                    click.echo(_invalid_note(self.shown + 1, event, issues[0]), err=True)
            self.shown += 1
            if self.done:
                break
        if self.json_out and batch_invalid > reported:
            click.echo(
                f"wkctl: {batch_invalid - reported} more invalid event(s) in this batch", err=True
            )
        return lines

    def write(self, lines: list[str]) -> None:
        if not lines:
            return
        chunk = "\n".join(lines) + "\n"
        try:
            chunk.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate from a peer (valid in JSON): write its
            # escape, which is also what JSON would have carried.
            chunk = chunk.encode("utf-8", "backslashreplace").decode("utf-8")
        if self.json_out:
            sys.stdout.write(chunk)
            sys.stdout.flush()
        else:
            click.echo(chunk, nl=False)

    def summary(self, stream: EventStream) -> str:
        summary = f"wkctl: tail: {self.shown} event(s)"
        if self.validator is not None:
            summary += f", {self.invalid} invalid"
        if stream.rejected:
            summary += f", {len(stream.rejected)} message(s) refused (not JSON or over limits)"
        if stream.reconnects:
            summary += f", {stream.reconnects} reconnect(s)"
        return summary


def _human_line(event: Any, issues: list[str]) -> str:
    line = format_event(event)
    if issues:
        line += "  " + style(f"INVALID {issues[0]}", fg="red", bold=True)
    return line


def _invalid_note(number: int, event: Any, issue: str) -> str:
    if isinstance(event, dict):
        type_, host = event.get("type") or "?", event.get("hostname", "?")
    else:
        type_, host = "?", "?"
    return f"wkctl: invalid event #{number} ({type_} from {host}): {issue}"
