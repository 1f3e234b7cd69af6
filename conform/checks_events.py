"""Events and Gossip heartbeats ([GOSSIP-n], [EVENT-n])."""

from __future__ import annotations

import time
from typing import Any

from .checks_common import (
    _celery_defect,
    _celery_nearby,
    _finite,
    _is_clock,
    _schema,
    _short,
    _still_serving,
)
from .checks_launch import _launched
from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


def _freqs(beats: list[Any]) -> list[float]:
    return [
        float(b.body["freq"])
        for b in beats
        if isinstance(b.body, dict)
        and isinstance(b.body.get("freq"), (int, float))
        and not isinstance(b.body.get("freq"), bool)
        and b.body["freq"] > 0
    ]


def _heartbeats(ctx: Context) -> list[Any]:
    """The node's heartbeats over at least one advertised period (cached).

    The ``heartbeat`` command sent at the start of the run brings the first
    one at once; the wait then lasts until the heartbeats cover one period
    (the smallest ``freq`` advertised: Celery's on-demand heartbeat claims
    ``freq`` 5 while its periodic ones say 2), or until the node has been
    silent for longer than 1.5 periods.  Everything is bounded.
    """
    if ctx.facts.heartbeats is not None:
        return list(ctx.facts.heartbeats)
    asked = ctx.facts.heartbeat_asked or ctx.started
    first_wait = max(ctx.timeout, 6.0) - (time.monotonic() - asked)
    found, _ = ctx.wait_events(lambda evs: ctx.node_events("worker-heartbeat", evs), first_wait)
    if not found:
        ctx.facts.heartbeats = []
        return []
    freqs = _freqs(found) or [2.0]
    limit = min(max(freqs) * 2.5 + 1.0, 60.0)

    def covered(events: list[Any]) -> Any:
        beats = ctx.node_events("worker-heartbeat", events)
        period = min(_freqs(beats) or [2.0])
        if beats[-1].at - beats[0].at >= period * 0.75:
            return beats
        if time.monotonic() - beats[-1].at > period * 1.5 + 0.5:
            return beats  # stalled: the caller reports it
        return None

    beats, events = ctx.wait_events(covered, limit)
    beats = beats or ctx.node_events("worker-heartbeat", events)
    ctx.facts.heartbeats = beats
    ctx.facts.heartbeats_until = time.monotonic()
    return list(beats)


@check(
    "events.heartbeat",
    "GOSSIP-2",
    "sends worker-heartbeat with the required fields",
    also=("GOSSIP-1",),
)
def heartbeat(ctx: Context) -> str:
    beats = _heartbeats(ctx)
    if not beats:
        raise Failed(
            "no worker-heartbeat from the node (asked for one with the heartbeat command)",
            expected="worker-heartbeat events",
            actual="none",
        )
    for beat in beats:
        if beat.refused:
            raise Failed(
                "a heartbeat is not JSON", expected="application/json", actual=beat.refused
            )
        _schema(beat.body, "heartbeat", "a worker-heartbeat")
    body = beats[-1].body
    return f"{len(beats)} heartbeats, freq {body.get('freq')}, sw {body.get('sw_ident')} {body.get('sw_ver')}"


@check("events.heartbeat-now", "GOSSIP-6", "sends a heartbeat at once on the heartbeat command")
def heartbeat_now(ctx: Context) -> str:
    beats = _heartbeats(ctx)
    asked = ctx.facts.heartbeat_asked
    if asked is None:
        raise Skipped("no heartbeat command was sent")
    first = next((b for b in beats if b.at >= asked), None)
    if first is None:
        raise Failed(
            "no worker-heartbeat after the heartbeat command",
            expected="one at once",
            actual="none",
        )
    delay = first.at - asked
    if delay > max(ctx.timeout, 0.5):
        raise Failed(
            f"the first heartbeat came {delay:.2f} s after the heartbeat command",
            expected=f"within {max(ctx.timeout, 0.5):g} s",
            actual=f"{delay:.2f} s",
        )
    return f"after {delay * 1000:.0f} ms"


@check("events.freq", "GOSSIP-1", "heartbeats keep coming at the advertised freq")
def heartbeat_freq(ctx: Context) -> str:
    beats = _heartbeats(ctx)
    if not beats:
        raise Failed("no worker-heartbeat from the node", expected="heartbeats", actual="none")
    for beat in beats:
        freq = beat.body.get("freq") if isinstance(beat.body, dict) else None
        if not isinstance(freq, (int, float)) or isinstance(freq, bool) or freq <= 0:
            raise Failed("freq is not a positive number", expected="freq > 0", actual=freq)
    period = min(_freqs(beats))
    for prev, nxt in zip(beats, beats[1:], strict=False):
        freq = prev.body["freq"]
        gap = nxt.at - prev.at
        if gap > freq * 1.5 + 0.5:
            raise Failed(
                f"{gap:.2f} s between two heartbeats, advertised freq {freq}",
                expected=f"<= {freq} s (+50% slack)",
                actual=f"{gap:.2f} s",
            )
    until = ctx.facts.heartbeats_until or time.monotonic()
    silent = until - beats[-1].at
    if beats[-1].at - beats[0].at < period * 0.75:
        raise Failed(
            f"heartbeats stopped: none for {silent:.2f} s after the last one, "
            f"advertised freq {beats[-1].body['freq']}",
            expected=f"a worker-heartbeat every {period:g} s",
            actual=f"{len(beats)} heartbeat(s), then silence",
        )
    gaps = ", ".join(f"{b.at - a.at:.2f}" for a, b in zip(beats, beats[1:], strict=False))
    return f"{len(beats)} heartbeats over {beats[-1].at - beats[0].at:.2f} s, gaps {gaps} s"


@check(
    "events.heartbeat-extras",
    "GOSSIP-9",
    "periodic heartbeats carry active, processed and loadavg",
)
def heartbeat_extras(ctx: Context) -> str:
    """The one heartbeat answering the run's ``heartbeat`` command is exempt
    ([GOSSIP-9]): Celery's lacks the extras.  It is not always the first one
    received (a periodic heartbeat may cross the command), so the exempt one
    is the first heartbeat without the extras received after the command."""
    beats = _heartbeats(ctx)
    if not beats:
        raise Skipped("no heartbeat to look at")
    asked = ctx.facts.heartbeat_asked
    exempt = None
    for beat in beats:
        missing = [k for k in ("active", "processed", "loadavg") if k not in beat.body]
        if not missing:
            continue
        if exempt is None and asked is not None and beat.at >= asked and len(beats) > 1:
            exempt = beat  # the answer to the heartbeat command
            continue
        raise Failed(
            f"a worker-heartbeat lacks {', '.join(missing)}",
            expected="active, processed, loadavg",
            actual=sorted(beat.body),
        )
    return "present"


@check(
    "events.envelope",
    "EVENT-1",
    "events carry the common fields, the hostname header and their routing key",
    also=("TRANSPORT-6", "MSG-1", "MSG-4"),
)
def envelope(ctx: Context) -> str:
    events = ctx.node_events()
    if not events:
        _heartbeats(ctx)
        events = ctx.node_events()
    if not events:
        raise Skipped("the node sent no event to look at")
    for ev in events:
        if ev.refused:
            raise Failed(
                f"an event is not JSON: {ev.refused}",
                expected="application/json",
                actual=ev.content_type,
            )
        _finite(ev.body, f"its {ev.type} event")
        _schema(ev.body, "event", f"its {ev.type} event")
        header = ev.headers.get("hostname")
        if header != ev.hostname:
            raise Failed(
                f"the hostname header of its {ev.type} event differs from the body's",
                expected=ev.hostname,
                actual=header if "hostname" in ev.headers else "<no hostname header>",
            )
        want = str(ev.type).replace("-", ".")
        batch = str(ev.type).split("-", 1)[0] + ".multi"  # buffered events ([EVENT-6])
        if ev.routing_key and ev.routing_key not in (want, batch):
            raise Failed(
                f"wrong routing key for {ev.type}",
                expected=want,
                actual=f"{ev.routing_key} ({_short(ev.body, 200)})",
            )
    return f"{len(events)} events checked"


@check("events.clock", "EVENT-2", "the clocks of its events strictly increase", also=("CLOCK-3",))
def event_clock(ctx: Context) -> str:
    events = ctx.node_events()
    if len(events) < 2:
        _heartbeats(ctx)
        events = ctx.node_events()
    clocked = [e for e in events if isinstance(e.body, dict)]
    if len(clocked) < 2:
        raise Skipped("fewer than two events from the node to compare")
    for prev, nxt in zip(clocked, clocked[1:], strict=False):
        a, b = prev.body.get("clock"), nxt.body.get("clock")
        if not (_is_clock(a) and _is_clock(b)):
            raise Failed(
                f"an event clock is not a clock value ({prev.type} -> {nxt.type})",
                expected="integers",
                actual=f"{a!r}, {b!r}",
            )
        if b <= a:
            raise Failed(
                f"clock did not increase from its {prev.type} to its {nxt.type}",
                expected=f"> {a}",
                actual=b,
            )
    return (
        f"{len(clocked)} events, clocks {clocked[0].body['clock']} .. {clocked[-1].body['clock']}"
    )


@check("events.online", "GOSSIP-1", "announces itself with worker-online")
def online(ctx: Context) -> str:
    seen = ctx.node_events("worker-online")
    if not seen:
        _launched(ctx)
        raise Failed(
            "no worker-online from the node after it started",
            expected="worker-online",
            actual="none",
        )
    _schema(seen[0].body, "heartbeat", "its worker-online")
    return "worker-online seen"


@check("events.offline", "GOSSIP-1", "says goodbye with worker-offline", after_stop=True)
def offline(ctx: Context) -> str:
    _launched(ctx)
    seen = ctx.node_events("worker-offline")
    if not seen:
        raise Failed(
            "no worker-offline from the node after SIGTERM",
            expected="worker-offline at a clean stop",
            actual=f"none (exit code {ctx.facts.exit_code})",
        )
    _schema(seen[0].body, "heartbeat", "its worker-offline")
    return f"worker-offline seen, exit code {ctx.facts.exit_code}"


@check(
    "events.tolerant",
    "EVENT-5",
    "accepts events of unknown types, blind clocks and integer utcoffsets",
    also=("EVENT-3", "SEC-3"),
)
def tolerant(ctx: Context) -> str:
    ctx.probe.peer_event("wkctlconform-probe", note="a custom event of an unknown group")
    ctx.probe.peer_event("worker-wkctl-conform", note="a custom worker event")
    body = ctx.probe.peer_heartbeat(clock=None, utcoffset=0)
    ctx.facts.peer_announced = True
    _still_serving(ctx, "custom events and a blind heartbeat")
    return f"still serving after custom events and a heartbeat with clock {body['clock']!r}"


@check(
    "events.malformed-heartbeat",
    "GOSSIP-5",
    "survives a malformed worker-heartbeat",
    also=("SEC-3",),
    deviation="DEFECT-6",
)
def malformed_heartbeat(ctx: Context) -> str:
    _celery_defect(ctx, "DEFECT-6", "one malformed worker-heartbeat kills every Celery worker")
    _celery_nearby(ctx, "DEFECT-6", "would all die")
    ctx.probe.peer_heartbeat(timestamp="now")
    _still_serving(ctx, 'a worker-heartbeat with "timestamp": "now"')
    beats_before = len(ctx.node_events("worker-heartbeat"))
    ctx.cast("heartbeat", {})
    found, _ = ctx.wait_events(
        lambda evs: len(ctx.node_events("worker-heartbeat", evs)) > beats_before,
        max(ctx.timeout, 1.0),
    )
    if not found:
        raise Failed(
            "no heartbeat after a malformed heartbeat from a peer",
            expected="its heartbeats continue",
            actual="none",
        )
    return "still serving and sending heartbeats"
