"""``wkctl demo``: a tour of the protocol on a throw-away local cluster.

Starts three reference nodes (``wkctl node``) in the background on the
resolved broker (the embedded one unless configured otherwise), then runs
``hello``, an election, a few seconds of ``tail`` and ``dump``, each under a
heading, and stops the nodes.  The nodes run in their own process groups
and die with the demo (``PR_SET_PDEATHSIG`` on Linux); Ctrl-C or SIGTERM
still stops them cleanly through ``finally``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .context import AppContext, pass_app
from .errors import CliError, ExitCode
from .render import style

__all__ = ["demo_cmd", "DemoNodes"]

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the finally block still stops them
        pass


def global_args(app: AppContext) -> list[str]:
    """The group options that make a child ``wkctl`` resolve the same broker."""
    args: list[str] = []
    if app.broker_url:
        args += ["--broker", app.broker_url]
    if app.config_path:
        args += ["--config", app.config_path]
    if app.app_name:
        args += ["--app", app.app_name]
    return args


class DemoNodes:
    """Three (or ``n``) ``wkctl node`` subprocesses, each in its own session."""

    def __init__(self, app: AppContext, n: int = 3, logdir: Path | None = None) -> None:
        tag = uuid.uuid4().hex[:4]
        host = socket.gethostname()
        self.names = [f"demo{i + 1}-{tag}@{host}" for i in range(n)]
        self.app = app
        self.logdir = logdir or Path(tempfile.mkdtemp(prefix="wkctl-demo-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self._reported: set[str] = set()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in self.names:
            log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - owned by the child
            try:
                cmd = [
                    sys.executable,
                    "-m",
                    "wkctl",
                    *global_args(self.app),
                    "node",
                    "--name",
                    name,
                ]
                self.processes.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        preexec_fn=_child_setup,
                    )
                )
            finally:
                log.close()

    def log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def check_running(self) -> None:
        for name, proc in zip(self.names, self.processes, strict=False):
            if proc.poll() is not None:
                raise CliError(
                    f"demo node {name} exited with status {proc.returncode}: "
                    + (self.log_tail(name, 1) or "no output"),
                    ExitCode.FAILURE,
                )

    def warn_dead(self) -> None:
        """Say on stderr which demo nodes exited meanwhile (and their last line)."""
        for name, proc in zip(self.names, self.processes, strict=False):
            if proc.poll() is not None and name not in self._reported:
                self._reported.add(name)
                click.echo(
                    f"wkctl: warning: demo node {name} exited with status {proc.returncode}: "
                    + (self.log_tail(name, 1) or "no output")
                    + f" (log: {self.logdir / (name + '.log')})",
                    err=True,
                )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every process group, then SIGKILL what is left."""
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.processes:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait(5)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM runs the same clean-up as Ctrl-C."""

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread (e.g. under a test runner thread)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def heading(number: int, title: str, command: str) -> None:
    click.echo("")
    click.echo(style(f"== {number}. {title}", bold=True, fg="yellow"))
    click.echo(style(f"   $ {command}", dim=True))


def wait_online(app: AppContext, nodes: DemoNodes, stream: Any, timeout: float) -> float:
    """Until every demo node announced itself (``worker-online`` or a heartbeat,
    sent once its Mingle round is over); returns the seconds it took."""
    start = time.monotonic()
    waiting = set(nodes.names)
    while waiting:
        nodes.check_running()
        if time.monotonic() - start > timeout:
            raise CliError(
                f"demo nodes not online after {timeout:g} s: {', '.join(sorted(waiting))} "
                f"(logs in {nodes.logdir})",
                ExitCode.FAILURE,
            )
        for event in stream.poll(0.2, start + timeout):
            if isinstance(event, dict) and event.get("type") in (
                "worker-online",
                "worker-heartbeat",
            ):
                waiting.discard(event.get("hostname"))
    return time.monotonic() - start


def tail_for(app: AppContext, seconds: float) -> int:
    """A few seconds of ``tail`` (after asking for heartbeats, so lines show at once)."""
    from wkctl.protocol.client import Client

    from .tail import format_event, open_stream

    stream = open_stream(app)
    shown = 0
    try:
        assert stream.connection is not None
        with Client(stream.connection, app.settings.names) as client:
            client.heartbeat()
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            for event in stream.poll(min(remaining, 0.25), deadline):
                click.echo(format_event(event))
                shown += 1
    finally:
        stream.close()
    return shown


@click.command("demo")
@click.option(
    "--tail-seconds",
    type=click.FloatRange(min=0.0),
    default=3.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the tail step listens.",
)
@click.option(
    "--dump-seconds",
    type=click.FloatRange(min=0.0, min_open=True),
    default=3.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the dump step listens.",
)
@click.pass_context
@pass_app
def demo_cmd(app: AppContext, ctx: click.Context, tail_seconds: float, dump_seconds: float) -> None:
    """Start three local nodes and show hello, an election, tail and dump.

    Runs on the embedded broker unless another is configured; stops the
    nodes afterwards (also on Ctrl-C).
    """
    if importlib.util.find_spec("wkctl.cli.node") is None:
        raise CliError("the demo needs `wkctl node`, which this installation lacks")
    from .dump import dump_cmd
    from .elect import elect_cmd
    from .hello import hello_cmd
    from .tail import open_stream

    settings = app.settings
    app.connect(settings).release()  # fail fast, with the one-line broker message
    click.echo(
        style("wkctl demo", bold=True)
        + f": three reference nodes on {settings.masked_url} ({settings.source})"
    )
    nodes = DemoNodes(app)
    failed: list[str] = []

    def step(number: int, title: str, command: str, run: Any) -> None:
        heading(number, title, command)
        try:
            run()
        except CliError as exc:
            click.echo(f"wkctl: error: {exc.message}", err=True)
            failed.append(command)
        nodes.warn_dead()

    with _sigterm_as_interrupt():
        try:
            stream = open_stream(app, routing_key="worker.#")
            try:
                nodes.start()
                took = wait_online(app, nodes, stream, timeout=30.0)
            finally:
                stream.close()
            click.echo(f"started {', '.join(nodes.names)} (online after {took:.1f} s)")
            step(
                1,
                "hello: every node's clock and revoked ids",
                "wkctl hello --expect 3 --revoked demo-revoked-id",
                lambda: ctx.invoke(hello_cmd, expect=3, timeout=2.0, revoked=("demo-revoked-id",)),
            )
            step(
                2,
                "an election: the lowest (clock, hostname.pid) wins",
                "wkctl elect --topic task",
                lambda: ctx.invoke(elect_cmd, topic="task", timeout=5.0),
            )
            step(
                3,
                f"{tail_seconds:g} s of events",
                f"wkctl tail --duration {tail_seconds:g}",
                lambda: tail_for(app, tail_seconds),
            )
            step(
                4,
                "the cluster state",
                f"wkctl dump --duration {dump_seconds:g}",
                lambda: ctx.invoke(dump_cmd, duration=dump_seconds),
            )
        finally:
            nodes.stop()
    click.echo("")
    click.echo(style("demo nodes stopped.", dim=True))
    if failed:
        raise CliError(f"demo step(s) failed: {'; '.join(failed)}", ExitCode.FAILURE)
