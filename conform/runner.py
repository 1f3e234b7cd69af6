"""Runs the selected checks against one node and collects their results.

The run is bounded whatever the node does: every wait has a deadline
derived from ``timeout``.  A node that does not answer the opening
``ping`` is ONE failure (``node.reachable``), not one per check: if it
sent no event either (it is not there), every selected check is reported
as *not run*; if it does send events (a node without a control channel),
the checks that only watch what it emits (events, heartbeats) still run
and the ones that need a reply are not run.  A node that stops answering
mid-run fails the check that noticed, and the checks after it that need
a reply are not run.  Nothing
a node sends can raise out of :func:`run`: an unexpected exception inside
a check is that check's failure.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wkctl.protocol.broker import BrokerSettings
from wkctl.protocol.vocab import CELERY_SW_IDENT, HARDENED_FIELD, peer_kind

from .facts import Facts
from .probe import CallResult, EventRecorder, Probe, RecordedEvent
from .registry import Check, Failed, NotRun, Skipped, with_needs
from .statements import STATEMENTS

__all__ = ["Context", "NOT_RUN", "Result", "Run", "run"]

PASS, FAIL, SKIP, DEVIATION, NOT_RUN = "pass", "fail", "skip", "deviation", "not-run"

#: The run's own check: does the node answer at all?  Not a registered
#: check (it is not selectable); it cites the statement of ``ping``.
REACHABLE_ID = "node.reachable"
REACHABLE_STATEMENT = "PIDBOX-14"
#: Why a check was not run: the node is not there at all, or it does not
#: answer requests (the one failure of the run says which and why).
NEEDS_NODE = "needs the node, which neither answered ping nor sent an event"
NEEDS_REPLY = "needs a reply from the node, which does not answer requests"
#: How long a node that did not answer ping gets to show it exists by
#: sending an event (Celery's heartbeat interval is 2 s).
EVENT_WAIT = 2.5

#: What the synthetic peers answer a launched node's Mingle ``hello`` with:
#: one usable reply (a clock to adopt, ids in the list form), one in the
#: mapping form with a clock above 2**53-1 (not to be adopted during the
#: initial sync), and an error and a null value (to be skipped).
SYNC_CLOCK = 5_000_000
SYNC_CLOCK_TOO_BIG = 2**53 + 5
#: Defects a hardened Celery worker (``wkctl.celery.install``) still has:
#: its pidbox stays Celery's and kombu's (only ``hello`` is wkctl's).
HARDENED_DEVIATIONS = frozenset({"DEFECT-12", "DEFECT-13", "DEFECT-15"})
#: The clock an ``{"error": ...}`` hello reply carries next to its error: a
#: node that skips error replies ([MINGLE-3]) never adopts it.
SYNC_CLOCK_ERROR = 8_000_000
#: seconds a launched node gets to start answering ping (``--launch-wait``)
LAUNCH_WAIT = 60.0
#: seconds a launched node gets to stop after SIGTERM
STOP_WAIT = 15.0


@dataclass
class Result:
    id: str
    statement: str
    level: str
    section: str
    title: str
    requirement: str
    status: str
    detail: str = ""
    expected: Any = None
    actual: Any = None
    duration: float = 0.0
    #: the defect statement a known deviation is documented by
    deviation: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP, DEVIATION, NOT_RUN)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "statement": self.statement,
            "level": self.level,
            "section": self.section,
            "title": self.title,
            "requirement": self.requirement,
            "result": self.status,
            "detail": self.detail,
            "duration": round(self.duration, 4),
        }
        if self.status in (FAIL, DEVIATION):
            out["expected"] = self.expected
            out["actual"] = self.actual
        if self.deviation:
            out["known_deviation"] = self.deviation
        return out


@dataclass
class Run:
    node: str
    broker: str
    strict: bool
    results: list[Result] = field(default_factory=list)
    duration: float = 0.0
    #: what the node told about itself (sw_ident, sw_ver, freq) if it did
    identity: dict[str, Any] = field(default_factory=dict)
    #: the command line of the node, when the kit launched it
    launched: list[str] | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def passed(self) -> bool:
        """Every MUST check (every check with ``strict``) passed or is a known deviation."""
        for result in self.results:
            if result.status != FAIL:
                continue
            if result.level == "MUST" or self.strict:
                return False
        return True

    def summary(self) -> str:
        line = f"{self.count(PASS)} passed, {self.count(FAIL)} failed, {self.count(SKIP)} skipped"
        if self.count(NOT_RUN):
            line += f", {self.count(NOT_RUN)} not run"
        deviations = self.count(DEVIATION)
        if deviations:
            line += f", {deviations} known deviation{'s' if deviations != 1 else ''}"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "broker": self.broker,
            "strict": self.strict,
            "passed": self.passed,
            "summary": {
                "passed": self.count(PASS),
                "failed": self.count(FAIL),
                "skipped": self.count(SKIP),
                "not_run": self.count(NOT_RUN),
                "known_deviations": self.count(DEVIATION),
            },
            "identity": self.identity,
            "launched": self.launched,
            "duration": round(self.duration, 3),
            "checks": [r.as_dict() for r in self.results],
        }


class Context:
    """What a check works with: the probe, the event record and shared facts."""

    def __init__(
        self,
        probe: Probe,
        recorder: EventRecorder,
        timeout: float,
        outage_probes: bool = False,
    ) -> None:
        self.probe = probe
        #: send probes a known defect turns into an outage (DEFECT-15) when
        #: the node is alone on the broker (never when other nodes would be hit)
        self.outage_probes = outage_probes
        self.recorder = recorder
        self.node = probe.node
        self.timeout = timeout
        #: what the run learned (typed; see :mod:`.facts`)
        self.facts = Facts()
        self.silent: str | None = None
        self.started = time.monotonic()
        #: the node process, when the kit launched it
        self.process: subprocess.Popen[bytes] | None = None
        #: ids and peers the synthetic peers answered the node's hello with
        self.sync: dict[str, Any] = {}

    # -- pidbox helpers ----------------------------------------------------

    def call(
        self, method: str, arguments: dict[str, Any] | None = None, **kwargs: Any
    ) -> CallResult:
        self.require_control()
        return self.probe.call(method, arguments, **kwargs)

    def require_control(self) -> None:
        """Raise :class:`NotRun` when the node does not answer requests: a
        check that needs it then reports *not run*, not a failure of its own."""
        if self.silent:
            raise NotRun(NEEDS_REPLY)

    def cast(self, method: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """A request without reply, to a node that answers requests."""
        self.require_control()
        self.probe.cast(method, arguments, **kwargs)

    def answer(
        self, method: str, arguments: dict[str, Any] | None = None, **kwargs: Any
    ) -> tuple[CallResult, Any]:
        """Call and return the node's reply value; fails when it does not reply."""
        result = self.call(method, arguments, **kwargs)
        reply = result.reply_from(self.node)
        if reply is None:
            self._no_reply(method, result)
        return result, reply.body[self.node]  # type: ignore[union-attr]

    def _no_reply(self, method: str, result: CallResult) -> None:
        if result.replies:
            got = result.replies[0]
            actual = got.body if got.refused is None else f"refused: {got.refused}"
            raise Failed(
                f"the reply to {method} does not name the node",
                expected=f"a JSON object with the key {self.node!r}",
                actual=actual,
            )
        reason = f"no reply to {method} within {self.probe.timeout:g} s"
        # Is the node gone, or just silent on this method?  One ping says.
        ping = self.probe.call("ping", {})
        if ping.reply_from(self.node) is None:
            self.silent = f"the node stopped answering (no reply to {method}, nor to ping, within {self.probe.timeout:g} s)"
            raise Failed(self.silent, expected=f"a reply to {method}", actual="nothing")
        raise Failed(reason, expected=f"a reply to {method}", actual="nothing")

    # -- events ------------------------------------------------------------

    def node_events(
        self, type_: str | None = None, events: Iterable[RecordedEvent] | None = None
    ) -> list[RecordedEvent]:
        source = self.recorder.snapshot() if events is None else events
        return [e for e in source if e.hostname == self.node and (type_ is None or e.type == type_)]

    def wait_events(
        self, predicate: Callable[[list[RecordedEvent]], Any], timeout: float
    ) -> tuple[Any, list[RecordedEvent]]:
        return self.recorder.wait_for(predicate, timeout)

    def _learn_identity(self, events: Iterable[RecordedEvent]) -> str | None:
        for ev in reversed(list(events)):
            if ev.hostname == self.node and isinstance(ev.body, dict):
                ident = ev.body.get("sw_ident")
                if isinstance(ident, str):
                    self.facts.sw_ident = ident
                    self.facts.peer_kind = peer_kind(ev.body)
                    self.facts.sw_ver = ev.body.get("sw_ver", self.facts.sw_ver)
                    self.facts.freq = ev.body.get("freq", self.facts.freq)
                    self.facts.wkctl_ver = ev.body.get(HARDENED_FIELD, self.facts.wkctl_ver)
                    return ident
        return None

    def identity(self, wait: float | None = None) -> str | None:
        """``"celery"`` (stock), ``"hardened"`` (a Celery worker running
        wkctl's steps: ``sw_ident`` py-celery with ``wkctl_ver``) or
        ``"other"`` from the node's heartbeats, waiting a little for the
        first one; ``None`` when it sent none."""
        ident = self.facts.sw_ident
        if ident is None:
            asked = self.facts.heartbeat_asked or self.started
            budget = max(self.timeout, 1.0) if wait is None else wait
            remaining = budget - (time.monotonic() - asked)
            found, events = self.recorder.wait_for(
                lambda evs: self._learn_identity(evs), max(remaining, 0.0)
            )
            ident = found or self._learn_identity(events)
        if ident is None:
            return None
        kind = self.facts.peer_kind
        if kind in ("celery", "hardened"):
            return str(kind)
        return "celery" if ident == CELERY_SW_IDENT else "other"

    @property
    def is_celery(self) -> bool | None:
        kind = self.identity(wait=0.0)
        return None if kind is None else kind == "celery"

    def celery_on_broker(self) -> list[str]:
        """Celery workers heard on the broker during the run (any node)."""
        names = {
            ev.hostname
            for ev in self.recorder.snapshot()
            if isinstance(ev.body, dict)
            and peer_kind(ev.body) == "celery"  # stock: hardened ones survive hostile input
            and isinstance(ev.hostname, str)
        }
        return sorted(names)

    def other_nodes(self) -> list[str]:
        """Nodes heard on the broker during the run, other than the probed
        one and the probe's synthetic peers."""
        names = {
            ev.hostname
            for ev in self.recorder.snapshot()
            if ev.type in ("worker-online", "worker-heartbeat")
            and isinstance(ev.hostname, str)
            and ev.hostname != self.node
            and not ev.hostname.startswith("wkctl-conform-")
        }
        return sorted(names)

    def reply_texts(self) -> list[str]:
        return [repr(reply.body) + repr(reply.headers) for reply in self.probe.log]


def _result(check: Check, status: str, **kwargs: Any) -> Result:
    return Result(
        id=check.id,
        statement=check.statement,
        level=check.level,
        section=check.section,
        title=check.title,
        requirement=check.requirement,
        status=status,
        **kwargs,
    )


def run(
    settings: BrokerSettings,
    node: str,
    checks: list[Check],
    *,
    timeout: float = 1.0,
    strict: bool = False,
    on_result: Callable[[Result], None] | None = None,
    launch: Sequence[str] | str | None = None,
    launch_wait: float = LAUNCH_WAIT,
    outage_probes: bool = False,
    on_wait: Callable[[float, float], None] | None = None,
) -> Run:
    """Probe ``node`` with ``checks``; never raises for anything the node does.

    With ``launch`` (a command line), the kit starts the node itself once
    it listens, so that it also sees what a node does at start (Mingle
    ``hello``, ``worker-online``) and at a clean stop (``worker-offline``):
    the node is stopped with SIGTERM after the checks that need it running.
    It waits at most ``launch_wait`` seconds for the node to answer ping,
    calling ``on_wait(waited, launch_wait)`` about every half second.

    Broker problems (unreachable, refused) do raise: they are the user's
    configuration, not the node's conformance.
    """
    started = time.monotonic()
    outcome = Run(node=node, broker=settings.masked_url, strict=strict)
    recorder = EventRecorder(settings)
    recorder.start(timeout)
    probe = Probe(settings, node, timeout=timeout)
    ctx = Context(probe, recorder, timeout, outage_probes=outage_probes)
    try:
        opening = ""
        t_open = time.monotonic()
        if launch:
            argv = shlex.split(launch) if isinstance(launch, str) else list(launch)
            outcome.launched = argv
            opening = _launch(ctx, argv, launch_wait, on_wait)
        if not opening:
            opening = _opening(ctx)
        absent = False
        if opening:
            # One failure says why; is the node there at all (events)?
            absent = not _emits(ctx, EVENT_WAIT)
            if not absent:
                opening += "; it does send events, so the checks that only watch them still run"
            ctx.silent = opening
            reachable = _reachable_failure(opening)
            reachable.duration = time.monotonic() - t_open
            outcome.results.append(reachable)
            if on_result is not None:
                on_result(reachable)
        # A check that builds on another's effect declares it (``needs``):
        # those run too, in run order, so that ``--only X`` gives X the
        # result it has in a full run; they are not reported.
        reported = {c.id for c in checks}
        planned = with_needs(checks)
        running = [c for c in planned if not c.after_stop]
        stopped = [c for c in planned if c.after_stop]
        for phase in (running, stopped):
            if phase is stopped and ctx.process is not None:
                _stop_launched(ctx)
            for chk in phase:
                t0 = time.monotonic()
                if absent:
                    result = _result(chk, NOT_RUN, detail=NEEDS_NODE)
                else:
                    result = _run_one(ctx, chk)
                result.duration = time.monotonic() - t0
                if chk.id not in reported:
                    continue
                outcome.results.append(result)
                if on_result is not None:
                    on_result(result)
        ctx.identity(wait=0.0)
        outcome.identity = ctx.facts.identity()
        _farewell(ctx)
    finally:
        if ctx.process is not None:
            _stop_launched(ctx)
        probe.close()
        recorder.stop()
    outcome.duration = time.monotonic() - started
    return outcome


def _sync_replies(ctx: Context) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    tag = uuid.uuid4().hex[:8]
    peers = [f"wkctl-conform-{tag}-{i}@probe" for i in range(4)]
    listed, mapped = f"conform-sync-list-{tag}", f"conform-sync-map-{tag}"
    errored = f"conform-sync-error-{tag}"
    ctx.sync = {"list_id": listed, "map_id": mapped, "error_id": errored, "peers": peers}

    def replies(request: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {peers[0]: {"clock": SYNC_CLOCK, "revoked": [listed]}},
            {peers[1]: {"clock": SYNC_CLOCK_TOO_BIG, "revoked": {mapped: [12.5, mapped]}}},
            # An error reply that also holds state: a node that skips error
            # replies ([MINGLE-3]) takes neither the clock nor the id.
            {
                peers[2]: {
                    "error": "wkctl conform: a peer that failed",
                    "clock": SYNC_CLOCK_ERROR,
                    "revoked": [errored],
                }
            },
            {peers[3]: None},
        ]

    return replies


def _reachable_failure(reason: str) -> Result:
    spec = STATEMENTS[REACHABLE_STATEMENT]
    return Result(
        id=REACHABLE_ID,
        statement=REACHABLE_STATEMENT,
        level="MUST",
        section=spec.section,
        title="the node answers ping (the checks that need a reply depend on it)",
        requirement=spec.text,
        status=FAIL,
        detail=reason,
        expected="a reply to ping",
        actual="no reply",
    )


def _emits(ctx: Context, wait: float) -> bool:
    """Whether the node sends any event within ``wait`` seconds (or did)."""
    found, _ = ctx.recorder.wait_for(lambda evs: ctx.node_events(events=evs), wait)
    return bool(found)


def _launch(
    ctx: Context,
    argv: list[str],
    wait: float,
    on_wait: Callable[[float, float], None] | None = None,
) -> str:
    """Start the node, answer its hello, wait until it answers ping; '' or why not."""
    ctx.probe.answer_hellos(_sync_replies(ctx))
    ctx.facts.launched_at = time.monotonic()
    try:
        ctx.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
            stderr=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        return f"cannot launch {shlex.join(argv)}: {exc.strerror or exc}"
    started = time.monotonic()
    deadline = started + wait
    while time.monotonic() < deadline:
        if on_wait is not None:
            on_wait(time.monotonic() - started, wait)
        code = ctx.process.poll()
        if code is not None:
            return f"the launched node exited with code {code} before answering ping"
        result = ctx.probe.call("ping", {}, timeout=min(ctx.timeout, 0.5))
        if result.reply_from(ctx.node) is not None:
            # Let its Mingle round end (Celery waits 1 s for replies).
            ctx.probe.pump(1.2)
            return ""
    return f"the launched node did not answer ping within {wait:g} s"


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _stop_launched(ctx: Context) -> None:
    """SIGTERM, then wait for the process and for its worker-offline."""
    process = ctx.process
    if process is None or ctx.facts.stopped_at is not None:
        return
    ctx.facts.stopped_at = time.monotonic()
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            process.terminate()
        try:
            process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait(5)
            ctx.facts.killed = True
    ctx.facts.exit_code = process.returncode
    ctx.recorder.wait_for(
        lambda evs: [e for e in evs if e.hostname == ctx.node and e.type == "worker-offline"],
        max(ctx.timeout, 1.0),
    )


def _run_one(ctx: Context, chk: Check) -> Result:
    try:
        detail = chk.func(ctx) or ""
    except Failed as exc:
        if chk.deviation and (
            ctx.is_celery
            or (chk.deviation in HARDENED_DEVIATIONS and ctx.identity(wait=0.0) == "hardened")
        ):
            return _result(
                chk,
                DEVIATION,
                detail=f"{exc.reason} (known Celery defect {chk.deviation})",
                expected=exc.expected,
                actual=exc.actual,
                deviation=chk.deviation,
            )
        return _result(chk, FAIL, detail=exc.reason, expected=exc.expected, actual=exc.actual)
    except Skipped as exc:
        return _result(chk, SKIP, detail=str(exc))
    except NotRun as exc:
        return _result(chk, NOT_RUN, detail=str(exc))
    except Exception as exc:  # a bug or a broker failure: this check's failure, not a crash
        return _result(chk, FAIL, detail=f"probe error: {type(exc).__name__}: {exc}")
    return _result(chk, PASS, detail=detail)


def _opening(ctx: Context) -> str:
    """Ping the node, ask it for a heartbeat; the reason to fail everything, or ''."""
    probe = ctx.probe
    try:
        result = probe.call("ping", {})
    except Exception as exc:
        return f"cannot send requests: {type(exc).__name__}: {exc}"
    ctx.facts.opening_ping = result
    if result.reply_from(ctx.node) is None:
        if result.replies:
            return (
                f"the node's reply to ping is unusable ({_describe(result.replies[0])}); "
                "every check needs a node that answers"
            )
        return (
            f"node {ctx.node!r} did not answer ping within {probe.timeout:g} s "
            "(is it running, on this broker, with exactly this name?)"
        )
    # Heartbeats start arriving while the pidbox checks run.  Every node is
    # asked (as monitors do), so that Celery workers sharing the broker are
    # known before a probe they would also receive is sent.
    ctx.facts.heartbeat_asked = time.monotonic()
    probe.cast("heartbeat", {}, destination=None)
    return ""


def _farewell(ctx: Context) -> None:
    """Take the synthetic peer out of the node's view of the cluster."""
    if ctx.facts.peer_announced:
        try:
            ctx.probe.peer_event(
                "worker-offline",
                freq=2.0,
                sw_ident="wkctl-conform",
                sw_ver="1",
                sw_sys="Linux",
                active=0,
                processed=0,
                loadavg=[0.0, 0.0, 0.0],
            )
        except Exception:
            pass


def _describe(reply: Any) -> str:
    if reply.refused:
        return f"refused: {reply.refused}"
    text = repr(reply.body)
    return text if len(text) <= 200 else text[:197] + "..."
