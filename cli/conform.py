"""``wkctl conform``: probe a live node and report, statement by statement.

What h2spec is for HTTP/2: a Celery-compatible worker written in any
language runs its node against a broker, and this command says which of
the spec's statements it honours.  Exit 0 iff every MUST check passed
(every selected check with ``--strict``); known deviations of real Celery
workers, documented in the spec as Celery defects, do not fail the run but
are reported as such.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .context import AppContext, broker_error, pass_app
from .errors import CliError, ExitCode
from .render import emit_json

if TYPE_CHECKING:
    from wkctl.conform.registry import Check
    from wkctl.conform.runner import Run

__all__ = ["LaunchProgress", "conform_cmd"]


class LaunchProgress:
    """How long the kit has waited for a launched node, on stderr: a line
    rewritten in place on a terminal, else one line every few seconds."""

    EVERY = 5.0

    def __init__(self, node: str) -> None:
        self.node = node
        self.tty = sys.stderr.isatty()
        self.last: float | None = None

    def __call__(self, waited: float, limit: float) -> None:
        text = f"wkctl: waiting for {self.node} to answer ping: {waited:4.1f} s of {limit:g} s"
        if self.tty:
            click.echo("\r" + text + "\x1b[K", nl=False, err=True)
            self.last = waited
        elif self.last is None or waited - self.last >= self.EVERY:
            click.echo(text, err=True)
            self.last = waited

    def clear(self) -> None:
        """Take the in-place line away once the wait is over."""
        if self.tty and self.last is not None:
            click.echo("\r\x1b[K", nl=False, err=True)


@click.command("conform")
@click.option("--node", "node", metavar="NAME", help="Name of the node to probe (e.g. w1@host).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="How long to wait for each reply or event (default: the config file's timeout, 1.0 s).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="ID",
    help="Run only these checks: a check id, a statement id (PIDBOX-3) or a section (clock). Repeatable.",
)
@click.option("--strict", is_flag=True, help="Also run the SHOULD-level checks, and fail on them.")
@click.option("--json", "json_flag", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--junit",
    "junit_path",
    metavar="PATH",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the report as JUnit XML (one suite per section, one case per check).",
)
@click.option(
    "--launch",
    "launch",
    metavar="CMD",
    help="Start the node with this command line once the kit listens (and stop it with "
    "SIGTERM at the end), to also check what it does at start and stop.",
)
@click.option(
    "--outage-probes",
    is_flag=True,
    help="Also send the probes a known defect turns into an outage of the control channel "
    "(DEFECT-15: Celery 5.2-5.6 with kombu 5.2-5.6 on Redis stop answering every control "
    "command, Mingle included, until restarted), and only when the node is alone on the broker.",
)
@click.option(
    "--launch-wait",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="With --launch: the longest wait for the launched node to answer ping, with "
    "progress on stderr (default: 60 s).",
)
@click.option("--list", "list_flag", is_flag=True, help="List the checks and exit; probe nothing.")
@pass_app
@click.pass_context
def conform_cmd(
    ctx: click.Context,
    app: AppContext,
    node: str | None,
    timeout: float | None,
    only: tuple[str, ...],
    strict: bool,
    json_flag: bool,
    junit_path: str | None,
    launch: str | None,
    outage_probes: bool,
    launch_wait: float | None,
    list_flag: bool,
) -> None:
    """Check a live node against the spec's numbered statements.

    Sends real requests and events on the broker in use and reports each
    check with its statement id: pass, fail (expected vs actual), skip, or
    known deviation (a Celery defect documented in the spec). Exit 0 iff
    every MUST check passed (every check with --strict).

    With --launch CMD the kit starts the node itself, answers its Mingle
    hello as synthetic peers and stops it at the end, which adds the checks
    of what a node does at start (hello, worker-online) and stop
    (worker-offline). It waits at most --launch-wait seconds for the node
    to answer ping, saying so on stderr.

    A node that does not answer ping is one failure (node.reachable); the
    checks that need its replies are reported as not run, and the ones
    that only watch its events run on what it sends.
    """
    from wkctl.conform import CHECKS, select
    from wkctl.conform.report import result_lines
    from wkctl.conform.runner import LAUNCH_WAIT, run

    try:
        chosen = select(only, strict=strict or list_flag and not only)
    except KeyError as exc:
        raise CliError(
            f"--only {exc.args[0]}: no check, statement or section of that name "
            "(see wkctl conform --list)",
            ExitCode.USAGE,
        ) from None
    if list_flag:
        _print_list(chosen if only else list(CHECKS.values()), full=not only, json_flag=json_flag)
        return
    if not node:
        raise CliError("--node NAME is required (the node to probe)", ExitCode.USAGE)
    settings = app.settings
    wait = app.default_timeout(timeout)

    def progress(result: object) -> None:
        if not json_flag:
            for line in result_lines(result):  # type: ignore[arg-type]
                app.log(line.strip(), level=2)

    waiting = LaunchProgress(node) if launch else None
    try:
        outcome = run(
            settings,
            node,
            chosen,
            timeout=wait,
            strict=strict,
            on_result=progress,
            launch=launch,
            outage_probes=outage_probes,
            launch_wait=LAUNCH_WAIT if launch_wait is None else launch_wait,
            on_wait=waiting,
        )
    except (ConnectionError, OSError) as exc:
        raise broker_error(settings, exc) from None
    except Exception as exc:
        # kombu's connection errors have many types; they all mean "broker".
        if type(exc).__module__.split(".")[0] in ("kombu", "amqp", "redis"):
            raise broker_error(settings, exc) from None
        raise
    finally:
        if waiting is not None:
            waiting.clear()
    _report(outcome, json_flag=json_flag, junit_path=junit_path)
    ctx.exit(ExitCode.OK if outcome.passed else ExitCode.FAILURE)


def _print_list(checks: list[Check], *, full: bool, json_flag: bool) -> None:
    """``--list``: the checks (and, for the full list, what is not probed)."""
    from wkctl.conform.coverage import NOT_PROBED
    from wkctl.conform.report import list_lines

    if json_flag:
        emit_json({"checks": [c.describe() for c in checks], "not_probed": NOT_PROBED})
        return
    for line in list_lines(checks):
        click.echo(line)
    if full:
        click.echo("")
        click.echo("MUST statements not probed (and why):")
        for sid, reason in NOT_PROBED.items():
            click.echo(f"  [{sid}] {reason}")


def _report(outcome: Run, *, json_flag: bool, junit_path: str | None) -> None:
    """The run's report: JSON or human lines on stdout, JUnit XML on request."""
    from wkctl.conform.report import human_lines, json_report, junit_xml

    if junit_path:
        try:
            Path(junit_path).write_text(junit_xml(outcome), encoding="utf-8")
        except OSError as exc:
            raise CliError(f"--junit {junit_path}: {exc.strerror or exc}", ExitCode.USAGE) from None
    if json_flag:
        click.echo(json.dumps(json_report(outcome), indent=2, ensure_ascii=False, default=str))
    else:
        for line in human_lines(outcome):
            click.echo(line)
