"""``wkctl elect``: hold an election, say what every participant decided.

Parse, call the library, render: finding the participants, refusing an
election a known Celery defect can turn into a crash, holding it, watching
it and checking the participants' liveness afterwards are
:mod:`wkctl.protocol.elect` (I/O) over :mod:`wkctl.protocol.observers`
(the rules).  The command adds the known-nodes cache (the survey's ping ends
once the nodes known alive answered), ``--force``, and the rendering; it
exits 1 when participants disagree, none won, or one died.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import click

from wkctl.protocol.client import Client, ElectionOutcome, ElectionWatch, EventStream
from wkctl.protocol.elect import EXPRESS_KEY, Survey, check_alive, hold, survey
from wkctl.protocol.observers import election_problems, plan_election

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .hello import ask, embedded_note, styled_table
from .render import emit, format_options, style
from .tail import open_stream

__all__ = ["elect_cmd", "KNOWN_TOPICS", "find_nodes", "parse_action", "probe_nodes"]

#: Topics the nodes of a cluster act on.  Celery's workers know only
#: ``task`` (the winner sends the action, a task signature); any other topic
#: makes every Celery winner log "Unknown election topic", so it needs
#: ``--force`` (for clusters of nodes with handlers of their own).
KNOWN_TOPICS = ("task",)

_SIGNATURE_DEFAULTS: dict[str, Any] = {
    "args": [],
    "kwargs": {},
    "options": {},
    "subtask_type": None,
    "immutable": False,
}


def parse_action(text: str | None, topic: str) -> Any:
    """``--action JSON`` or ``--action @FILE`` -> the action sent to the nodes.

    For the ``task`` topic the action is a Celery signature; a bare
    ``{"task": "name", "args": [...]}`` is completed with the fields a
    signature always carries, as ``celery control election`` would send it.
    """
    if text is None:
        return None
    source = "--action"
    if text.startswith("@"):
        path = Path(text[1:])
        source = f"--action file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(
                f"{source}: cannot read: {exc.strerror or exc}", ExitCode.USAGE
            ) from None
    try:
        action = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{source}: invalid JSON: {exc}", ExitCode.USAGE) from None
    if topic == "task" and action is not None:
        if not isinstance(action, dict) or not isinstance(action.get("task"), str):
            raise CliError(
                f"{source}: for topic 'task' the action must be a task signature, "
                'for example {"task": "tasks.add", "args": [2, 3]}',
                ExitCode.USAGE,
            )
        action = {"task": action["task"], **_SIGNATURE_DEFAULTS, **action}
    return action


def find_nodes(
    app: AppContext, client: Client, stream: EventStream, window: float, settle: float = 0.1
) -> Survey:
    """:func:`wkctl.protocol.elect.survey` with the known-nodes cache: its
    ping ends once the nodes known alive answered, and who answered is
    remembered (:func:`wkctl.cli.hello.ask`)."""
    found: list[Survey] = []

    def request(own: Client, known: frozenset[str]) -> Any:
        found.append(survey(own, stream, window, settle=settle, known=known))
        return found[0].pinged

    ask(app, request, client)
    return found[0]


def probe_nodes(
    app: AppContext, client: Client, stream: EventStream, window: float, settle: float = 0.1
) -> dict[str, dict[str, Any]]:
    """``{hostname: its heartbeat}`` of the live nodes (:func:`find_nodes`)."""
    return find_nodes(app, client, stream, window, settle).nodes


@click.command("elect")
@click.option(
    "--topic",
    required=True,
    metavar="TOPIC",
    help=f"Election topic ({', '.join(KNOWN_TOPICS)}; others need --force).",
)
@click.option(
    "--action",
    "action_text",
    metavar="JSON|@FILE",
    default=None,
    help='What the winner does: for topic task a task signature, e.g. \'{"task": "tasks.add", '
    '"args": [2, 3]}\'.',
)
@click.option(
    "--id", "election_id", metavar="ID", default=None, help="Election id (default: a UUID)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for every participant to decide (with --wait-acks: for every ack); "
    "then, for one that does not answer ping, at most this long again (2 s at least).",
)
@click.option(
    "--probe",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="At most this long to find the participants: a heartbeat request and a ping; it ends "
    "once the nodes known alive answered (else when replies settle) and every one sent its "
    "heartbeat (0: do not look, and so do not refuse anything).",
)
@click.option(
    "--wait-acks",
    is_flag=True,
    help="Wait for every acknowledgement (N x N) before reporting, not only for every "
    "participant's decision.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Hold the election even when a stock Celery worker may crash in it (alone, or one "
    "of two participants: spec DEFECT-1), with an unknown topic, or when no node answered.",
)
@format_options
@pass_app
def elect_cmd(
    app: AppContext,
    topic: str,
    action_text: str | None,
    election_id: str | None,
    timeout: float,
    probe: float,
    wait_acks: bool,
    force: bool,
    json_flag: bool,
    yaml_flag: bool,
) -> None:
    """Start an election as `celery control election` does and report what each
    participant decided.

    \b
    --json: {"id", "topic", "winner", "winner_id", "agreed", "candidates": [...],
             "decisions": {host: {"kind", "rule", "winner", "crashed", ...}}, "runs_action",
             "acks", "complete", "elapsed_ms" (winner fixed), "decided_ms" (every
             participant decided), "completed_ms" (every ack), ["dead"], ["absent"]}
    Exit 0 when every participant picked the same winner and all are alive
    afterwards; 1 when none won within the timeout, when participants
    disagree (each side is named), or when one no longer answers ping.
    """
    if not topic.strip():
        raise CliError("--topic: must not be empty", ExitCode.USAGE)
    if topic not in KNOWN_TOPICS and not force:
        raise CliError(
            f"--topic: unknown election topic {topic!r} (known: {', '.join(KNOWN_TOPICS)}; "
            "Celery workers only act on 'task'; add --force to send it anyway)",
            ExitCode.USAGE,
        )
    action = parse_action(action_text, topic)
    election_id = election_id or str(uuid.uuid4())
    fmt = app.output_format(json_flag, yaml_flag)
    settings = app.settings

    stream = open_stream(app, routing_key="worker.#", express=EXPRESS_KEY)
    try:
        assert stream.connection is not None
        client = Client(stream.connection, settings.names, limits=app.config.limits)
        try:
            found = find_nodes(app, client, stream, probe) if probe > 0 else None
            nodes = found.nodes if found is not None else {}
            plan = plan_election(nodes, settings.transport)
            app.log("elect: " + plan.describe(len(nodes), found.elapsed if found else 0.0))
            if plan.hazard is not None:
                if not force:
                    raise CliError(
                        f"refusing to hold an election: {plan.hazard}; start another worker or "
                        "node, harden the Celery workers (wkctl.celery.install), or pass "
                        "--force to hold it anyway",
                        ExitCode.FAILURE,
                    )
                click.echo(f"wkctl: warning: --force: {plan.hazard}", err=True)
            if plan.mixed is not None:
                click.echo(f"wkctl: warning: {plan.mixed}", err=True)
            if found is not None and not nodes and not found.pinged.replies:
                if not force:
                    where = embedded_note(app) or (
                        f" on {settings.masked_url} (are the workers running against it?)"
                    )
                    raise CliError(
                        f"nobody to elect: no node answered ping or the heartbeat request "
                        f"within {probe:g} s{where}; --probe waits longer, --force sends the "
                        "election anyway",
                        ExitCode.FAILURE,
                    )
                click.echo("wkctl: warning: --force: no node answered; electing anyway", err=True)
            elif not nodes:
                app.log("elect: no node answered the heartbeat request; electing anyway")
            watch = ElectionWatch(election_id, participants=plan.participants, alive=nodes)
            hold(client, stream, watch, topic, action, timeout=timeout, wait_acks=wait_acks)
            dead = check_alive(client, plan.participants, max(2.0, timeout))
        finally:
            client.close()
    finally:
        stream.close()

    outcome = watch.outcome()
    data = outcome.as_dict()
    if outcome.winner is None:
        data["not_acked"] = outcome.not_acked
    if outcome.absent:
        data["absent"] = outcome.absent
    if dead:
        data["dead"] = dead
    if not emit(data, fmt):
        render(outcome, election_id, topic, wait_acks)
    if outcome.absent:
        click.echo(
            f"wkctl: warning: node(s) seen alive did not stand in the election: "
            f"{', '.join(outcome.absent)}",
            err=True,
        )
    problems = election_problems(outcome, dead, election_id, timeout)
    if problems:
        raise CliError("; ".join(problems), ExitCode.FAILURE)


def render(outcome: ElectionOutcome, election_id: str, topic: str, wait_acks: bool = False) -> None:
    click.echo(f"{style('Election', bold=True)} {election_id}  topic {topic}")
    winner = outcome.winner
    if winner is not None:
        click.echo(
            f"{style('Winner', bold=True)}   {style(winner.hostname, fg='green', bold=True)} "
            f"({winner.node_id}, clock {winner.clock})"
        )
    else:
        click.echo(f"{style('Winner', bold=True)}   {style('none', fg='red', bold=True)}")
    rows = []
    for cand in outcome.candidates:
        mark = style("*", fg="green") if winner is not None and cand == winner else ""
        rows.append((mark, style(cand.hostname, fg="cyan"), cand.node_id, cand.clock))
    if rows:
        styled_table(["", "candidate", "id", "clock"], rows)
    drows = []
    for host, d in sorted(outcome.decisions.items()):
        if d.crashed:
            picked = style("crashed (IndexError)", fg="red")
        elif d.winner is None:
            picked = style("undecided", fg="yellow")
        else:
            ok = winner is not None and d.winner == winner
            picked = style(d.winner.node_id, fg="green" if ok else "red")
        drows.append((style(host, fg="cyan"), outcome.kinds.get(host, "other"), d.rule, picked))
    if drows:
        styled_table(["participant", "kind", "rule", "picked"], drows)
    fixed = "-" if outcome.elapsed is None else f"{outcome.elapsed * 1000:.1f} ms"
    times = [f"decided in {fixed}"]
    if outcome.settled is not None and outcome.decisions:
        times.append(f"every participant in {outcome.settled * 1000:.1f} ms")
    if outcome.completed is not None:
        times.append(f"all acks in {outcome.completed * 1000:.1f} ms")
    n = len(outcome.candidates)
    acks = f"{outcome.acks} ack(s)"
    if outcome.not_acked:  # it returned once the winner was fixed, or timed out
        acks += (
            f" ({len(outcome.not_acked)} of {n} candidate(s) still acknowledging when it returned"
            + ("" if wait_acks else "; --wait-acks waits for them")
            + ")"
        )
    click.echo(style(f"{n} candidate(s), {acks}, {', '.join(times)}", dim=True))
