"""``wkctl ping``, ``wkctl status`` and ``wkctl inspect METHOD [ARGS]``.

``celery inspect`` / ``celery control`` / ``celery status`` for any pidbox
method, built on :meth:`wkctl.protocol.client.Client.call`: each reply is
checked against the method's reply schema (spec section 16) and an invalid
one is flagged, so the command doubles as a quick conformance look at every
node of a cluster.
"""

from __future__ import annotations

import json
from typing import Any

import click

from wkctl.protocol.client import Collected
from wkctl.protocol.validation import validate
from wkctl.protocol.vocab import CELERY_METHODS, METHOD_SIGNATURES, canonical_method, reply_kind

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .hello import (
    RequestWindow,
    ask,
    check_replies,
    footer,
    report_collection,
    request_options,
    stats_option,
    styled_table,
)
from .render import emit, format_options, style

__all__ = ["inspect_cmd", "parse_arguments", "ping_cmd", "status_cmd"]

#: Methods that stop, kill or reconfigure Celery workers: sent only with
#: --force (shutdown stops every addressed worker; an election with one or two
#: stock Celery workers can kill them, spec DEFECT-1).
FORCED: dict[str, str] = {
    "shutdown": "stops every addressed node, Celery workers included",
    "election": "can kill stock Celery workers when one or two of them gossip (DEFECT-1)",
    "pool_restart": "restarts the pool of every addressed Celery worker",
    "pool_shrink": "removes pool processes from every addressed Celery worker",
    "cancel_consumer": "makes every addressed Celery worker stop consuming a task queue",
    "disable_events": "stops the task events monitors such as Flower rely on",
}


def _value(text: str) -> Any:
    """A command-line value: a JSON number, boolean, null, list or object
    when it parses as one, else the text itself (``tasks.add``, ``1/s``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_arguments(method: str, args: tuple[str, ...], json_args: str | None) -> dict[str, Any]:
    """The request's ``arguments`` from ``key=value`` words, bare values
    (placed by Celery's signature of ``method``) and ``--args JSON``."""
    arguments: dict[str, Any] = {}
    if json_args is not None:
        try:
            parsed = json.loads(json_args)
        except ValueError as exc:
            raise CliError(f"--args: not JSON: {exc}", ExitCode.USAGE) from None
        if not isinstance(parsed, dict):
            raise CliError("--args: must be a JSON object", ExitCode.USAGE)
        arguments.update(parsed)
    positional, variadic = METHOD_SIGNATURES.get(canonical_method(method), ((), None))
    bare: list[Any] = []
    for word in args:
        key, sep, text = word.partition("=")
        if sep and key.isidentifier():
            arguments[key] = _value(text)
        else:
            bare.append(_value(word))
    for name in positional:
        if bare:
            arguments[name] = bare.pop(0)
    if bare:
        if variadic is None:
            raise CliError(
                f"{method} takes at most {len(positional)} positional argument(s)"
                + (f" ({', '.join(positional)})" if positional else "")
                + "; pass others as key=value",
                ExitCode.USAGE,
            )
        arguments[variadic] = [str(v) if not isinstance(v, str) else v for v in bare]
    return arguments


def _issues(method: str, body: dict[str, Any]) -> list[str]:
    """Why one reply body is not valid for ``method`` ([CONTROL-1]), or []."""
    kind = reply_kind(method)
    return [str(issue) for issue in validate(body, kind or "request")] if kind else []


def _invalid(method: str, result: Collected) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for body in result.raw:
        if isinstance(body, dict):
            for node in body:
                issues = _issues(method, {node: body[node]})
                if issues:
                    found[str(node)] = issues
    return found


def _is_error(value: Any) -> bool:
    """A pidbox reply that only says the method failed there
    (``{"error": "..."}``: an unknown method, an unknown task, ...)."""
    return isinstance(value, dict) and set(value) == {"error"}


def _summary(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"ok"}:
        return style("ok", fg="green") + f"  {value['ok']}".rstrip()
    if _is_error(value):
        return style("error", fg="red") + f"  {value['error']}"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


@click.command("inspect")
@click.argument("method", metavar="METHOD")
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option(
    "--args",
    "json_args",
    metavar="JSON",
    default=None,
    help='Arguments as a JSON object, e.g. \'{"ids": ["t1"]}\'.',
)
@click.option(
    "--force",
    is_flag=True,
    help="Send a method that stops or reconfigures Celery workers (shutdown, election, ...).",
)
@request_options
@format_options
@stats_option
@pass_app
def inspect_cmd(
    app: AppContext,
    method: str,
    args: tuple[str, ...],
    json_args: str | None,
    force: bool,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Send any pidbox METHOD (celery inspect / celery control) and print the replies.

    ARGS are key=value words or bare values in Celery's order
    (`wkctl inspect rate_limit tasks.add 10/s`, `wkctl inspect query_task ID...`).
    Each reply is checked against the method's reply schema; an invalid one
    is flagged (INVALID in text, a warning on stderr) and makes the exit
    status 1, as does a request every node answered with an error
    ({"error": ...}: an unknown method or task, ...).

    \b
    --json: {"<node>": <reply value>, ...}
    """
    if not method or not method.replace("_", "").isalnum():
        raise CliError(f"invalid method name {method!r}", ExitCode.USAGE)
    arguments = parse_arguments(method, args, json_args)
    danger = FORCED.get(canonical_method(method))
    if danger and not force:
        raise CliError(
            f"{method} {danger}; add --force to send it (and -d NODE to address one node)",
            ExitCode.USAGE,
        )
    if canonical_method(method) not in CELERY_METHODS:
        app.log(f"{method} is not a Celery 5.x method: replies are not schema-checked")
    result = ask(
        app,
        lambda client, known: client.call(
            method,
            arguments,
            **window.keywords(app, known),
        ),
    )
    report_collection(app, result, stats=stats, what=method)
    invalid = _invalid(method, result)
    data = dict(sorted(result.replies.items()))
    if not emit(data, app.output_format(json_flag, yaml_flag)) and data:
        rows = [
            (
                style(node, fg="cyan"),
                (style("INVALID", fg="red", bold=True) + "  " if node in invalid else "")
                + _summary(value),
            )
            for node, value in data.items()
        ]
        styled_table(["node", "reply"], rows)
        footer(result)
    for node, issues in sorted(invalid.items()):
        click.echo(
            f"wkctl: warning: the {method} reply of {node} is not valid against "
            f"{reply_kind(method)}: {'; '.join(issues[:3])}",
            err=True,
        )
    check_replies(result, method)
    if invalid:
        raise CliError(f"{len(invalid)} invalid {method} reply(ies)", ExitCode.FAILURE)
    if all(_is_error(value) for value in data.values()):
        unknown = canonical_method(method) not in CELERY_METHODS
        raise CliError(
            f"every node that replied answered {method} with an error"
            + (" (it is not a Celery 5.x method: is the name right?)" if unknown else ""),
            ExitCode.FAILURE,
        )


@click.command("ping")
@request_options
@format_options
@stats_option
@pass_app
def ping_cmd(
    app: AppContext,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
    stats: bool,
) -> None:
    """Ping every node (or -d NODE...) and print who answered.

    --json: {"<node>": {"ok": "pong"}, ...}
    """
    result = ask(
        app,
        lambda client, known: client.ping(**window.keywords(app, known)),
    )
    report_collection(app, result, stats=stats, what="ping")
    data = dict(sorted(result.replies.items()))
    if not emit(data, app.output_format(json_flag, yaml_flag)) and data:
        rows = [(style(node, fg="cyan"), _summary(value)) for node, value in data.items()]
        styled_table(["node", "reply"], rows)
        footer(result)
    check_replies(result, "ping")


@click.command("status")
@request_options
@format_options
@pass_app
def status_cmd(
    app: AppContext,
    window: RequestWindow,
    json_flag: bool,
    yaml_flag: bool,
) -> None:
    """One line per node that answers ping, like `celery status`.

    Returns as soon as the cluster answered: --expect N nodes, every -d NODE,
    else every node known alive (or replies settled; see --settle).
    --json: {"nodes": ["<node>", ...], "count": N}
    """
    result = ask(
        app,
        lambda client, known: client.ping(**window.keywords(app, known)),
    )
    report_collection(app, result, stats=False, what="status")
    nodes = sorted(result.replies)
    if not emit({"nodes": nodes, "count": len(nodes)}, app.output_format(json_flag, yaml_flag)):
        for node in nodes:
            click.echo(f"{node}: {style('OK', fg='green')}")
        if nodes:
            click.echo(f"\n{len(nodes)} node{'s' if len(nodes) != 1 else ''} online.")
    check_replies(result, "ping")
