"""``wkctl elect``: hold an election and say who won.

``celery control election`` fires the ``election`` command and returns; the
outcome is only in the winner's log.  This command sends the very same
request, watches the ``worker-elect`` / ``worker-elect-ack`` events on the
event exchange (its queue is bound before anything is published, so no
event is missed) and reports the winner by the spec's rule, the candidates
with their clocks, the acks, and how long the decision took.

Celery workers crash when an election is held while exactly one gossiping
Celery worker is on the broker (``LamportClock.sort_heap`` indexes a second
request that does not exist), so the command first asks every node for a
heartbeat, and refuses in that situation unless ``--force`` is given.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import click

from wkctl.protocol.client import (
    Client,
    ElectionOutcome,
    ElectionWatch,
    EventStream,
    gossiping_celery_workers,
)
from wkctl.protocol.vocab import CELERY_SW_IDENT, GOSSIP_TRANSPORTS

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .hello import styled_table
from .render import emit, style
from .tail import open_stream

__all__ = ["elect_cmd", "KNOWN_TOPICS", "parse_action", "probe_nodes"]

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


def probe_nodes(
    client: Client, stream: EventStream, window: float, settle: float = 0.15
) -> dict[str, dict[str, Any]]:
    """Ask every node for a heartbeat and collect the answers.

    Returns ``{hostname: last heartbeat}``.  Listening ends ``settle``
    seconds after the last new node answered, or after ``window``.
    """
    client.heartbeat()
    nodes: dict[str, dict[str, Any]] = {}
    start = time.monotonic()
    last_new = None
    while True:
        now = time.monotonic()
        end = start + window
        if last_new is not None:
            end = min(end, last_new + settle)
        if now >= end:
            break
        for event in stream.poll(end - now, start + window):
            if not isinstance(event, dict) or not isinstance(event.get("hostname"), str):
                continue
            type_ = event.get("type")
            if type_ in ("worker-heartbeat", "worker-online"):
                if event["hostname"] not in nodes:
                    last_new = time.monotonic()
                nodes[event["hostname"]] = event
            elif type_ == "worker-offline":
                nodes.pop(event["hostname"], None)
    return nodes


def _participants(nodes: dict[str, dict[str, Any]], transport: str) -> set[str]:
    """Nodes expected to stand: every non-Celery node, and Celery workers
    where they run Gossip."""
    gossip = transport in GOSSIP_TRANSPORTS
    return {name for name, hb in nodes.items() if hb.get("sw_ident") != CELERY_SW_IDENT or gossip}


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
    help="How long to wait for every candidate's requests and acks.",
)
@click.option(
    "--probe",
    type=click.FloatRange(min=0.0),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How long to listen for heartbeats before the election (who is there).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Hold the election even with exactly one gossiping Celery worker (it will crash) "
    "or with an unknown topic.",
)
@click.option("--json", "json_flag", is_flag=True, help="Print JSON.")
@click.option("--yaml", "yaml_flag", is_flag=True, help="Print YAML.")
@pass_app
def elect_cmd(
    app: AppContext,
    topic: str,
    action_text: str | None,
    election_id: str | None,
    timeout: float,
    probe: float,
    force: bool,
    json_flag: bool,
    yaml_flag: bool,
) -> None:
    """Start an election as `celery control election` does and report who won.

    \b
    --json: {"id", "topic", "winner", "winner_id", "candidates": [...], "acks", "elapsed_ms"}
    Exit 0 when a winner was determined, 1 when none was within the timeout.
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

    stream = open_stream(app, routing_key="worker.#")
    try:
        assert stream.connection is not None
        client = Client(stream.connection, settings.names, limits=app.config.limits)
        try:
            nodes = probe_nodes(client, stream, probe) if probe > 0 else {}
            celery = gossiping_celery_workers(nodes.values(), settings.transport)
            app.log(
                f"elect: {len(nodes)} node(s) answered the heartbeat request"
                + (f" ({len(celery)} gossiping Celery worker(s))" if celery else "")
            )
            if len(celery) == 1 and not force:
                raise CliError(
                    f"refusing to hold an election: exactly one gossiping Celery worker "
                    f"({celery[0]}) is on this broker, and a Celery worker alone in an election "
                    "crashes (IndexError in LamportClock.sort_heap); start another worker, "
                    "or pass --force to hold it anyway",
                    ExitCode.FAILURE,
                )
            if not nodes:
                app.log("elect: no node answered the heartbeat request; electing anyway")
            watch = ElectionWatch(
                election_id,
                expected=_participants(nodes, settings.transport),
                started_at=time.perf_counter(),
            )
            watch.started_at = time.perf_counter()
            client.election(election_id, topic, action)
            deadline = time.monotonic() + timeout
            while not watch.complete:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for event in stream.poll(min(remaining, 0.5), deadline):
                    watch.feed(event, time.perf_counter())
        finally:
            client.close()
    finally:
        stream.close()

    outcome = watch.outcome()
    if outcome.winner is not None and outcome.elapsed is None:
        # decided at the timeout among the nodes that stood
        outcome.elapsed = timeout
    data = outcome.as_dict()
    if outcome.winner is None:
        data["not_acked"] = outcome.not_acked
    if outcome.absent:
        data["absent"] = outcome.absent
    if not emit(data, fmt):
        render(outcome, election_id, topic)
    if outcome.absent:
        click.echo(
            f"wkctl: warning: node(s) seen alive did not stand in the election: "
            f"{', '.join(outcome.absent)}",
            err=True,
        )
    if outcome.winner is None:
        if not outcome.candidates:
            raise CliError(
                f"no node stood in election {election_id!r} within {timeout:g} s "
                "(no worker-elect event: are the workers running with gossip, on amqp or redis?)",
                ExitCode.FAILURE,
            )
        raise CliError(
            f"no winner for election {election_id!r} within {timeout:g} s: "
            f"candidate(s) that did not acknowledge every request: {', '.join(outcome.not_acked)}",
            ExitCode.FAILURE,
        )


def render(outcome: ElectionOutcome, election_id: str, topic: str) -> None:
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
    elapsed = "-" if outcome.elapsed is None else f"{outcome.elapsed * 1000:.1f} ms"
    click.echo(
        style(
            f"{len(outcome.candidates)} candidate(s), {outcome.acks} ack(s), decided in {elapsed}",
            dim=True,
        )
    )
