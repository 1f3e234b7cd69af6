"""``wkctl hello``: Mingle's hello, broadcast on demand, with every node's state.

Celery sends ``hello`` only when a worker starts and never shows the
answers; this command asks the whole cluster at any time and prints each
node's clock and revoked ids.  It returns as soon as the cluster has
answered (``--expect N`` nodes, or every node known alive, or no reply for
the settle window: :class:`~wkctl.protocol.client.ReplyCollector`) instead of
waiting a fixed second, and says how long that took (``-v``, or ``--stats``
for a JSON line on stderr).

The helpers at the bottom are shared by ``clock``, ``revoked`` and ``revoke``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from wkctl.protocol.broker import EMBEDDED_SOURCE
from wkctl.protocol.client import DEFAULT_SETTLE, Client, Collected, hello_table

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .known import KnownNodes
from .render import emit, emit_json, format_options, style

__all__ = [
    "RequestWindow",
    "request_options",
    "hello_cmd",
    "open_client",
    "report_collection",
    "short_list",
    "timeout_option",
    "expect_option",
    "settle_option",
    "destination_option",
    "ask",
    "stats_option",
    "styled_table",
    "check_replies",
    "embedded_note",
    "footer",
]

timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="How long to wait for replies (default: the config file's timeout, 1.0 s).",
)
expect_option = click.option(
    "--expect",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Return as soon as N distinct nodes replied; fail if fewer did.",
)
destination_option = click.option(
    "-d",
    "--destination",
    "destination",
    multiple=True,
    metavar="NODE",
    help="Send the request to this node only (repeatable); ends as soon as all of them "
    "replied. Default: every node.",
)
settle_option = click.option(
    "--settle",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_SETTLE,
    show_default=True,
    metavar="SECONDS",
    help="Without --expect, end once every node known alive (answered a recent request) "
    "replied, or no reply came for this long after the last one (at least the first "
    "reply's round trip); --timeout stays the upper bound. Set it to the timeout to "
    "wait the whole timeout as Celery does.",
)


@dataclass(frozen=True)
class RequestWindow:
    """What ``--timeout``, ``--expect``, ``--settle`` and ``--destination``
    said: whom a request command asks and when it stops waiting.

    One value instead of four parameters, so that every command hands the
    same keywords to the client (:meth:`keywords`) and none forgets one."""

    timeout: float | None
    expect: int | None
    settle: float
    destination: tuple[str, ...]

    def keywords(self, app: AppContext, known: frozenset[str]) -> dict[str, Any]:
        """The keyword arguments of every :class:`Client` request method
        (``timeout`` defaulted from the config file, ``known`` the nodes
        known alive: :func:`ask` passes them)."""
        return {
            "timeout": app.default_timeout(self.timeout),
            "expect": self.expect,
            "settle": self.settle,
            "known": known,
            "destination": list(self.destination) or None,
        }


def request_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--timeout``, ``--expect``, ``--settle`` and ``--destination``: how every
    request command (``hello``, ``clock``, ``inspect``, ...) chooses whom it
    asks and when it stops waiting.  The command gets them as one
    :class:`RequestWindow` argument, ``window``."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        timeout: float | None,
        expect: int | None,
        settle: float,
        destination: tuple[str, ...],
        **kwargs: Any,
    ) -> Any:
        return fn(*args, window=RequestWindow(timeout, expect, settle, destination), **kwargs)

    for option in (destination_option, settle_option, expect_option, timeout_option):
        command = option(command)
    return command


stats_option = click.option(
    "--stats",
    is_flag=True,
    help="Print the measured figures (replies, elapsed_ms from publish to last reply) "
    "as one JSON line on stderr.",
)


@contextmanager
def open_client(app: AppContext) -> Iterator[Client]:
    """A :class:`Client` on a fresh connection, closed afterwards."""
    settings = app.settings
    conn = app.connect(settings)
    limits = app.config.limits
    try:
        with Client(conn, settings.names, limits=limits) as client:
            try:
                yield client
            except tuple(conn.connection_errors) + (OSError,) as exc:
                from .context import broker_error

                raise broker_error(settings, exc) from None
    finally:
        try:
            conn.release()
        except Exception:  # the connection may already be gone
            pass


def ask(
    app: AppContext,
    request: Callable[[Client, frozenset[str]], Collected | None],
    client: Client | None = None,
) -> Collected:
    """Run one request with the nodes known alive, and remember who answered
    (cli/known.py: how a request ends without ``--expect``).  On ``client``
    when given, else on a connection of its own."""
    known = KnownNodes.load(app.settings)
    if client is not None:
        result = request(client, known.alive())
    else:
        with open_client(app) as own:
            result = request(own, known.alive())
    assert result is not None, "ask() runs requests that want replies"
    known.update(result)
    known.save()
    return result


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def report_collection(app: AppContext, result: Collected, *, stats: bool, what: str) -> None:
    """The measured figures: with ``-v`` as a sentence, with ``--stats`` as JSON."""
    meta = result.meta()
    if stats:
        click.echo(json.dumps(meta, separators=(",", ":")), err=True)
    expect = f"/{result.expect}" if result.expect else ""
    app.log(
        f"{what}: {len(result.replies)}{expect} node(s) replied, last reply after "
        f"{_fmt_ms(result.elapsed_ms)} (waited {meta['waited_ms']:.1f} ms, ended: {result.ended}, "
        f"timeout {result.timeout:g} s"
        + (f", {len(result.rejected)} message(s) refused" if result.rejected else "")
        + ")"
    )


def embedded_note(app: AppContext) -> str:
    """`` on the embedded broker at PATH (...)`` when nothing chose a broker:
    said when nobody answered, since the user may have forgotten to configure one."""
    settings = app.settings
    if not (settings.embedded and settings.source == EMBEDDED_SOURCE):
        return ""
    folder = Path(str(settings.transport_options.get("data_folder_in", ""))).parent
    return (
        f" on the embedded broker at {folder} (no broker configured; choose one with "
        "--broker, WKCTL_BROKER_URL, -A APP or broker_url in wkctl.yaml)"
    )


def check_replies(result: Collected, what: str, app: AppContext | None = None) -> None:
    """Exit 1 with a sentence saying how many replied within how long.

    When nobody replied and no broker was configured, the sentence says
    that the embedded broker was used, where, and how to choose another:
    a user who forgot to configure one is otherwise left guessing.
    """
    n = len(result.replies)
    if n == 0:
        message = f"no node replied to {what} within {result.timeout:g} s"
        raise CliError(message + (embedded_note(app) if app else ""), ExitCode.FAILURE)
    if result.expect is not None and n < result.expect:
        raise CliError(
            f"only {n} of {result.expect} expected node(s) replied to {what} "
            f"within {result.timeout:g} s",
            ExitCode.FAILURE,
        )


def short_list(items: Sequence[str], limit: int = 5) -> str:
    if not items:
        return "-"
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" (+{len(items) - limit} more)"
    return shown


def footer(result: Collected) -> None:
    """A dim last line in human output: how many nodes, how fast."""
    click.echo(
        style(
            f"{len(result.replies)} node(s) replied; last reply after {_fmt_ms(result.elapsed_ms)}",
            dim=True,
        )
    )


@click.command("hello")
@request_options
@click.option(
    "--revoked",
    "revoked",
    multiple=True,
    metavar="ID",
    help="Task id to send along as revoked (repeatable); Celery workers merge them.",
)
@click.option(
    "--from-node",
    metavar="NAME",
    default=None,
    help="Node name to ask as (default: a unique wkctl.<id>@<host>; a worker answers "
    "nothing to its own name).",
)
@click.option("--raw", is_flag=True, help="Print the reply bodies exactly as received (NDJSON).")
@format_options
@stats_option
@pass_app
def hello_cmd(
    app: AppContext,
    window: RequestWindow,
    revoked: tuple[str, ...],
    from_node: str | None,
    raw: bool,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Broadcast Mingle's hello and print every node's clock and revoked ids.

    Ends as soon as the cluster has answered: with --expect N once N nodes
    replied; otherwise once every node known alive (those that answered a
    request in the last 10 minutes) replied, or no reply came for --settle
    seconds after the last one. --timeout is the upper bound.

    \b
    --json: {"<node>": {"clock": N, "revoked": [ids]}, ...}
    Exit 0 when a node replied (with --expect: when N did), else 1.
    """
    fmt = app.output_format(json_flag, yaml_flag)
    result = ask(
        app,
        lambda client, known: client.hello(
            from_node,
            list(revoked),
            **window.keywords(app, known),
        ),
    )
    report_collection(app, result, stats=stats, what="hello")
    if raw:
        for body in result.raw:
            emit_json(body, compact=True)
    else:
        data = hello_table(result.replies)
        if not emit(data, fmt) and result.replies:
            render_hello(data)
            footer(result)
    check_replies(result, "hello", app)


def render_hello(data: dict[str, dict[str, Any]]) -> None:
    rows = [
        (
            style(node, fg="cyan"),
            "-" if info["clock"] is None else info["clock"],
            len(info["revoked"]),
            short_list(info["revoked"]),
        )
        for node, info in sorted(data.items())
    ]
    styled_table(["node", "clock", "revoked", "revoked ids"], rows)


def styled_table(headers: list[str], rows: list[tuple[Any, ...]]) -> None:
    """Like render.table, aligned on the visible width of styled cells."""
    plain = [[click.unstyle(str(c)) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in plain:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    head = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    click.echo(style(head, bold=True))
    for styled, prow in zip(rows, plain, strict=True):
        cells = [str(cell) + " " * (widths[i] - len(prow[i])) for i, cell in enumerate(styled)]
        click.echo("  ".join(cells).rstrip())
