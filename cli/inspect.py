"""``wkctl clock``, ``wkctl revoked`` and ``wkctl revoke``.

The same requests ``celery inspect clock``, ``celery inspect revoked`` and
``celery control revoke`` send, answered as soon as the expected number of
nodes replied, with the output normalized across Celery releases.
"""

from __future__ import annotations

import signal as _signal

import click

from wkctl.protocol.client import normalize_clock, normalize_revoked

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .hello import (
    RequestWindow,
    ask,
    check_replies,
    footer,
    report_collection,
    request_options,
    short_list,
    stats_option,
    styled_table,
)
from .render import clip, emit, format_options, style

__all__ = ["clock_cmd", "revoked_cmd", "revoke_cmd", "signal_name"]

#: Widest answer ``revoke`` prints per node in a table (``--json``: all of it).
ANSWER_WIDTH = 100


def signal_name(value: str) -> str:
    """``TERM``, ``sigterm``, ``15`` -> ``SIGTERM`` (what Celery's workers accept)."""
    text = value.strip().upper()
    if text.isdigit():
        try:
            return _signal.Signals(int(text)).name
        except ValueError:
            pass
    else:
        name = text if text.startswith("SIG") else f"SIG{text}"
        if name in _signal.Signals.__members__:
            return name
    raise CliError(
        f"--signal: unknown signal {value!r} (for example TERM, KILL, INT, HUP, USR1)",
        ExitCode.USAGE,
    )


@click.command("clock")
@request_options
@format_options
@stats_option
@pass_app
def clock_cmd(
    app: AppContext,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Print every node's logical (Lamport) clock.

    --json: {"<node>": N, ...}
    """
    result = ask(
        app,
        lambda client, known: client.clock_values(**window.keywords(app, known)),
    )
    report_collection(app, result, stats=stats, what="clock")
    data = {node: normalize_clock(value) for node, value in sorted(result.replies.items())}
    if not emit(data, app.output_format(json_flag, yaml_flag)) and data:
        styled_table(
            ["node", "clock"],
            [(style(node, fg="cyan"), "-" if c is None else c) for node, c in data.items()],
        )
        footer(result)
    check_replies(result, "clock", app)


@click.command("revoked")
@request_options
@format_options
@stats_option
@pass_app
def revoked_cmd(
    app: AppContext,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Print the revoked task ids every node holds.

    --json: {"<node>": [ids], ...}
    """
    result = ask(
        app,
        lambda client, known: client.revoked_ids(**window.keywords(app, known)),
    )
    report_collection(app, result, stats=stats, what="revoked")
    data = {node: normalize_revoked(value) for node, value in sorted(result.replies.items())}
    fmt = app.output_format(json_flag, yaml_flag)
    if not emit(data, fmt) and data:
        styled_table(
            ["node", "revoked", "ids"],
            [(style(node, fg="cyan"), len(ids), short_list(ids)) for node, ids in data.items()],
        )
        footer(result)
    check_replies(result, "revoked", app)


@click.command("revoke")
@click.argument("task_ids", nargs=-1, required=True, metavar="ID...")
@click.option("--terminate", is_flag=True, help="Also terminate the task if it is running.")
@click.option(
    "--signal",
    "signal_",
    default="TERM",
    show_default=True,
    metavar="NAME",
    help="Signal to terminate with (with --terminate).",
)
@request_options
@format_options
@stats_option
@pass_app
def revoke_cmd(
    app: AppContext,
    task_ids: tuple[str, ...],
    terminate: bool,
    signal_: str,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Revoke task ids on every node (as `celery control revoke` does).

    Prints what each node answered, cut to 100 characters (--json: all of
    it, {"<node>": {"ok": "..."}, ...}).
    Exit 1 when no node acknowledged within the timeout (the request was
    still broadcast).
    """
    sig = signal_name(signal_)
    result = ask(
        app,
        lambda client, known: client.revoke(
            list(task_ids),
            terminate=terminate,
            signal=sig,
            reply=True,
            **window.keywords(app, known),
        ),
    )
    report_collection(app, result, stats=stats, what="revoke")
    data = dict(sorted(result.replies.items()))
    if not emit(data, app.output_format(json_flag, yaml_flag)):
        rows = []
        for node, value in data.items():
            # Celery's answer lists every id: 300 ids make a 12,000-character
            # line.  Cut like hello's ids; --json has the full answer.
            if isinstance(value, dict) and "ok" in value:
                answer = style("ok", fg="green") + f"  {clip(value['ok'], ANSWER_WIDTH)}"
            elif isinstance(value, dict) and "error" in value:
                answer = style("error", fg="red") + f"  {clip(value['error'], ANSWER_WIDTH)}"
            else:
                answer = clip(value, ANSWER_WIDTH)
            rows.append((style(node, fg="cyan"), answer))
        styled_table(["node", "answer"], rows)
        if data:
            footer(result)
    check_replies(result, "revoke", app)
