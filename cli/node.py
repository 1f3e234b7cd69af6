"""``wkctl node``: run one reference node in the foreground.

The node joins the cluster the way a Celery worker does (Mingle ``hello``,
then ``worker-online`` and heartbeats), answers the control commands of
the spec, takes part in elections, and logs to stderr who joins, leaves or
is lost, what it synced and who won each election.  It answers Celery's
whole control vocabulary the way monitors expect (Flower, the Prometheus
exporters, ``celery inspect``; spec section 16).  SIGINT, SIGTERM or the
``shutdown`` control command (Flower's button, ``celery control shutdown``)
stop it cleanly: it publishes ``worker-offline`` and exits 0.
"""

from __future__ import annotations

import logging
import sys

import click

from wkctl.protocol.binding import BrokerUnavailable, NodeNameInUse, run_node
from wkctl.protocol.node import default_nodename

from .context import AppContext, broker_error, pass_app
from .errors import CliError, ExitCode

__all__ = ["node_cmd"]

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _setup_logging(level: str) -> None:
    # The node's own logger, at the chosen level whatever -v says: its log
    # lines are this command's output.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s: %(levelname)s] %(message)s"))
    for name in ("wkctl.node",):
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(level)
        log.propagate = False


@click.command("node")
@click.option(
    "-n",
    "--name",
    default=None,
    metavar="NAME",
    help="Node name (default wkctl@<hostname>, as Celery's celery@<hostname>).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0.1, max=3600),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Interval between worker-heartbeat events (Celery's freq).",
)
@click.option("--without-mingle", is_flag=True, help="Do not sync clock and revoked ids at start.")
@click.option(
    "--without-gossip",
    is_flag=True,
    help="Send no heartbeats, watch no events, take no part in elections.",
)
@click.option(
    "--election-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Decide an election among the requests received after this long.",
)
@click.option(
    "--mingle-timeout",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait for hello replies (stops earlier once replies settle).",
)
@click.option(
    "--revoked",
    "revoked",
    multiple=True,
    metavar="TASK_ID",
    help="Start with this task id flagged as revoked (repeatable).",
)
@click.option(
    "--log-level",
    type=click.Choice(_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
    help="Level of the node's log on stderr.",
)
@pass_app
def node_cmd(
    app: AppContext,
    name: str | None,
    heartbeat: float,
    without_mingle: bool,
    without_gossip: bool,
    election_timeout: float,
    mingle_timeout: float,
    revoked: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a reference node until SIGINT/SIGTERM or a shutdown command (then
    worker-offline, exit 0)."""
    settings = app.settings
    _setup_logging(log_level.upper())
    logging.getLogger("wkctl.node").info(
        "connecting to %s as %s", settings.masked_url, name or default_nodename()
    )
    try:
        code = run_node(
            settings,
            name,
            heartbeat=heartbeat,
            mingle=not without_mingle,
            gossip=not without_gossip,
            election_timeout=election_timeout,
            mingle_timeout=mingle_timeout,
            revoked=revoked,
            limits=app.config.limits,
        )
    except NodeNameInUse as exc:
        raise CliError(str(exc), ExitCode.FAILURE) from None
    except BrokerUnavailable as exc:  # one line, masked URL
        raise broker_error(settings, exc) from None
    sys.exit(code)
