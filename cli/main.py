"""The ``wkctl`` command group: global options, command table, error policy.

Commands are imported lazily (only the one being run), which keeps the
start-up of ``wkctl hello`` short: its latency is part of what it measures.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Any

import click

from wkctl import __version__

from .config import parse_transport_options
from .context import AppContext
from .errors import CliError, ExitCode

__all__ = ["cli", "main", "COMMANDS"]

#: name -> "module:attribute" of the click command object
COMMANDS: dict[str, str] = {
    "hello": "wkctl.cli.hello:hello_cmd",
    "clock": "wkctl.cli.inspect:clock_cmd",
    "revoked": "wkctl.cli.inspect:revoked_cmd",
    "revoke": "wkctl.cli.inspect:revoke_cmd",
    "ping": "wkctl.cli.control:ping_cmd",
    "status": "wkctl.cli.control:status_cmd",
    "inspect": "wkctl.cli.control:inspect_cmd",
    "elect": "wkctl.cli.elect:elect_cmd",
    "tail": "wkctl.cli.tail:tail_cmd",
    "dump": "wkctl.cli.dump:dump_cmd",
    "exporter": "wkctl.cli.exporter:exporter_cmd",
    "top": "wkctl.cli.top:top_cmd",
    "demo": "wkctl.cli.demo:demo_cmd",
    "node": "wkctl.cli.node:node_cmd",
    "validate": "wkctl.cli.validate:validate_cmd",
    "schema": "wkctl.cli.schema:schema_group",
    "conform": "wkctl.cli.conform:conform_cmd",
    "broker": "wkctl.cli.embedded:broker_group",
}


class _Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line for it)."""


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._load(name) is not None)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        return self._load(cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """As click's, with a suggestion for a mistyped command name (as
        click already gives for options); never while completing a shell
        command line (``resilient_parsing``), where click stays silent too."""
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in COMMANDS and not ctx.resilient_parsing:
            import difflib  # only on this error path: start-up stays short

            close = difflib.get_close_matches(name, list(COMMANDS), n=3, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {' or '.join(map(repr, close))}?")
        return super().resolve_command(ctx, args)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        module_name, attr = COMMANDS[name].split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # not written yet in this checkout
                return None
            raise
        return getattr(module, attr)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "-b",
    "--broker",
    "broker_url",
    metavar="URL",
    help="Broker URL (wins over every other setting).",
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Config file (default ./wkctl.yaml, else $XDG_CONFIG_HOME/wkctl/config.yaml).",
)
@click.option(
    "-A",
    "--app",
    "app_name",
    metavar="APP",
    help="Celery app to take broker and exchange settings from (module or module:attribute; needs Celery).",
)
@click.option(
    "--broker-transport-option",
    "transport_options",
    metavar="KEY=VALUE",
    multiple=True,
    help="A kombu transport option, over those of the config file or the -A app (repeatable; "
    "VALUE is read as JSON when it parses, else as a string): e.g. master_name=mymaster for "
    "sentinel://, global_keyprefix=team-a: for Redis.",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Say which broker is used and what happens (-vv for debug logs).",
)
@click.option("--debug", is_flag=True, help="Show a traceback for errors.")
@click.version_option(
    __version__, "-V", "--version", prog_name="wkctl", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context,
    broker_url: str | None,
    config_path: str | None,
    app_name: str | None,
    transport_options: tuple[str, ...],
    verbose: int,
    debug: bool,
) -> None:
    """Inspect, drive and verify the worker-to-worker protocol of Celery clusters.

    With no broker configured, wkctl uses an embedded broker in
    $XDG_STATE_HOME/wkctl/broker, so local wkctl processes form a cluster.
    """
    app = ctx.ensure_object(AppContext)
    app.broker_url = broker_url
    app.config_path = config_path
    app.app_name = app_name
    app.transport_options = parse_transport_options(transport_options)
    app.verbose = verbose
    app.debug = debug
    app.setup_logging()


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI with the error policy: one line on stderr, documented exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="wkctl", standalone_mode=False)
    except CliError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"wkctl: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except (_Interrupted, click.exceptions.Abort, KeyboardInterrupt):
        click.echo("wkctl: interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(ExitCode.OK)
    sys.exit(rv if isinstance(rv, int) else ExitCode.OK)


if __name__ == "__main__":  # pragma: no cover
    main()
