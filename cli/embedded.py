"""``wkctl broker``: show and clean the embedded broker.

The embedded broker (kombu's filesystem transport in a state folder) keeps
one file per waiting message and one binding per queue.  Queues whose owner
process exited are removed by every wkctl process as it runs (see
:mod:`wkctl.protocol.fsbroker`); this command shows what the folder holds
and sweeps it on demand.
"""

from __future__ import annotations

from pathlib import Path

import click

from wkctl.protocol.fsbroker import QueueInfo, Survey, survey, sweep

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .hello import styled_table
from .render import clip, emit, style

__all__ = ["broker_group"]


def _folders(app: AppContext) -> tuple[Path, Path]:
    settings = app.settings
    if not settings.embedded:
        raise CliError(
            f"wkctl broker shows and cleans the embedded broker; the broker in use is "
            f"{settings.masked_url} (from {settings.source})",
            ExitCode.USAGE,
        )
    options = settings.transport_options
    return Path(str(options["data_folder_in"])), Path(str(options["control_folder"]))


def _state(q: QueueInfo) -> str:
    if q.stale:
        return style("stale", fg="red")
    if q.alive is True:
        return style("alive", fg="green")
    return "unknown" if q.owner is not None else "no owner"


def _totals(found: Survey) -> str:
    return (
        f"{len(found.queues)} queue(s), {found.bindings} binding(s), {found.files} file(s), "
        f"{found.bytes:,} bytes, {len(found.stale)} stale queue(s)"
    )


@click.group("broker", invoke_without_command=True)
@click.option("--json", "json_flag", is_flag=True, help="Print JSON.")
@pass_app
@click.pass_context
def broker_group(ctx: click.Context, app: AppContext, json_flag: bool) -> None:
    """Show the embedded broker: queues, bindings, files, bytes, stale queues.

    A queue is stale when the process that declared it exited (or, for a
    queue without an owner record, when a message has waited over 2
    minutes). wkctl processes remove stale queues as they run; `wkctl
    broker clean` does it now.
    """
    if ctx.invoked_subcommand is not None:
        return
    queues, control = _folders(app)
    found = survey(queues, control)
    if emit(found.as_dict(), app.output_format(json_flag)):
        return
    click.echo(f"embedded broker at {found.root}")
    rows = [
        (
            clip(q.name, 60),
            "-" if q.owner is None else q.owner.pid,
            _state(q),
            q.messages,
            f"{q.bytes:,}",
            q.bindings,
            q.reason,
        )
        for q in sorted(found.queues.values(), key=lambda q: (not q.stale, q.name))
    ]
    if rows:
        styled_table(["queue", "pid", "state", "messages", "bytes", "bindings", "why stale"], rows)
    click.echo(style(_totals(found), dim=True))


@broker_group.command("clean")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove every queue, binding and waiting message, live ones too (running wkctl "
    "processes on the embedded broker then stop receiving until they reconnect).",
)
@click.option("--json", "json_flag", is_flag=True, help="Print JSON.")
@pass_app
def clean_cmd(app: AppContext, everything: bool, json_flag: bool) -> None:
    """Remove the stale queues (with --all: every queue) and dead processes' leftovers."""
    queues, control = _folders(app)
    before = sweep(queues, control, everything=everything)
    after = survey(queues, control)
    removed = sorted(before.queues) if everything else sorted(q.name for q in before.stale)
    doc = {
        "removed": removed,
        "leftovers_removed": len(before.leftovers),
        "files_before": before.files,
        "files_after": after.files,
        "bytes_before": before.bytes,
        "bytes_after": after.bytes,
    }
    if emit(doc, app.output_format(json_flag)):
        return
    click.echo(
        f"removed {len(removed)} queue(s) and {len(before.leftovers)} leftover file(s): "
        f"{before.files} -> {after.files} file(s), {before.bytes:,} -> {after.bytes:,} bytes"
    )
    click.echo(style(_totals(after), dim=True))
