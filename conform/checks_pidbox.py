"""The pidbox request/reply channel ([PIDBOX-n], [MSG-n])."""

from __future__ import annotations

import time
import uuid
from typing import Any

from wkctl.protocol.vocab import REDIS_TRANSPORTS, PeerKind, peer_kind

from .checks_common import (
    UNKNOWN_MATCHER,
    UNKNOWN_METHOD,
    _finite,
    _is_clock,
    _schema,
    _short,
    _still_serving,
)
from .hazards import PeerSoftware, matcher_outage, software_from_report
from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


@check("pidbox.ping", "PIDBOX-14", "answers ping with {ok: pong}", also=("PIDBOX-11",))
def ping(ctx: Context) -> str:
    result, value = ctx.answer("ping", {})
    if value != {"ok": "pong"}:
        raise Failed("wrong ping reply", expected={"ok": "pong"}, actual=_short(value))
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "ping-reply", "the ping reply")
    return f"replied in {reply.after * 1000:.1f} ms"


@check(
    "pidbox.broadcast",
    "PIDBOX-3",
    "runs a request sent to every node",
    also=("TRANSPORT-9",),
)
def broadcast(ctx: Context) -> str:
    result = ctx.call(
        "ping", {}, destination=None, until=lambda r: r.reply_from(ctx.node) is not None
    )
    if result.reply_from(ctx.node) is None:
        others = sorted({k for r in result.replies if isinstance(r.body, dict) for k in r.body})
        raise Failed(
            f"no reply to a broadcast ping (destination null) within {ctx.probe.timeout:g} s",
            expected=f"a reply from {ctx.node}",
            actual=f"replies from {others}" if others else "nothing",
        )
    return "replied to destination=null"


@check("pidbox.destination", "PIDBOX-3", "ignores requests addressed to other nodes")
def destination(ctx: Context) -> str:
    other = f"conform-nobody-{uuid.uuid4().hex[:8]}@nowhere"
    result = ctx.call("ping", {}, destination=[other], fence=True)
    if result.replies:
        raise Failed(
            f"the node answered a request addressed to {other}",
            expected="no reply",
            actual=_short(result.replies[0].body),
        )
    if not result.fenced:
        raise Failed(
            "cannot tell: the node did not answer the ping sent after it",
            expected="a reply to the following ping",
            actual="nothing",
        )
    return f"no reply to destination=[{other!r}]"


@check("pidbox.ticket", "PIDBOX-6", "replies carry the request's ticket header")
def ticket(ctx: Context) -> str:
    result, _ = ctx.answer("ping", {})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    got = reply.headers.get("ticket", "<no ticket header>")
    if got != result.ticket:
        raise Failed(
            "the reply's ticket header is not the request's ticket",
            expected=result.ticket,
            actual=got,
        )
    return "ticket echoed"


@check(
    "pidbox.reply-clock",
    "PIDBOX-6",
    "replies carry a clock header with a clock value",
    also=("CLOCK-1", "MSG-3"),
)
def reply_clock(ctx: Context) -> str:
    result, _ = ctx.answer("ping", {})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    if "clock" not in reply.headers:
        raise Failed(
            "the reply has no clock header", expected="clock: <integer>", actual=reply.headers
        )
    value = reply.headers["clock"]
    if not _is_clock(value):
        raise Failed(
            "the reply's clock header is not a clock value (an integer in 0..2^63-1)",
            expected="an integer",
            actual=f"{value!r} ({type(value).__name__})",
        )
    return f"clock header {value}"


def _one_reply(ctx: Context) -> Any:
    if ctx.facts.one_reply is None:
        ctx.facts.one_reply = ctx.call("ping", {}, fence=True)
    result = ctx.facts.one_reply
    if not result.replies:
        raise Failed(
            f"no reply within {ctx.probe.timeout:g} s", expected="one reply", actual="nothing"
        )
    return result


@check("pidbox.one-reply", "PIDBOX-5", "exactly one reply per request", also=("MSG-1",))
def one_reply(ctx: Context) -> str:
    result = _one_reply(ctx)
    if len(result.replies) > 1:
        raise Failed(
            "more than one reply to one request",
            expected="1 reply",
            actual=f"{len(result.replies)} replies",
        )
    first = result.replies[0]
    if first.refused:
        raise Failed(
            "the reply is not JSON", expected="content type application/json", actual=first.refused
        )
    _finite(first.body, "the reply")
    return "one JSON reply"


@check("pidbox.reply-member", "PIDBOX-17", "a reply body has one member: the node's name")
def reply_member(ctx: Context) -> str:
    first = _one_reply(ctx).replies[0]
    if not isinstance(first.body, dict) or list(first.body) != [ctx.node]:
        raise Failed(
            "the reply body is not {nodename: value}",
            expected=f"{{{ctx.node!r}: ...}}",
            actual=_short(first.body),
        )
    return "{nodename: value}"


@check("pidbox.commands", "PIDBOX-11", "answers hello, clock, revoked and ping")
def commands(ctx: Context) -> str:
    answered = []
    for method, arguments in (
        ("hello", {"from_node": ctx.probe.peer, "revoked": []}),
        ("clock", {}),
        ("revoked", {}),
        ("ping", {}),
    ):
        _, value = ctx.answer(method, arguments)
        if isinstance(value, dict) and "error" in value:
            raise Failed(
                f"{method} answered with an error", expected=f"the {method} value", actual=value
            )
        answered.append(method)
    return "answered " + ", ".join(answered) + " (revoke, election, heartbeat: checked below)"


@check("pidbox.revoked", "PIDBOX-13", "answers revoked with a list of ids")
def revoked_reply(ctx: Context) -> str:
    result, value = ctx.answer("revoked", {})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "revoked-reply", "the revoked reply")
    if not isinstance(value, list):
        raise Failed("the revoked reply is not a list", expected="[ids]", actual=_short(value))
    return f"{len(value)} ids"


@check(
    "pidbox.unknown-method",
    "PIDBOX-9",
    "answers an unknown method with {error: ...} and keeps serving",
    also=("SEC-3",),
)
def unknown_method(ctx: Context) -> str:
    result = ctx.call(UNKNOWN_METHOD, {"x": 1}, fence=True)
    if not result.fenced:
        _still_serving(ctx, f"a request for the unknown method {UNKNOWN_METHOD!r}")
    value = result.value_from(ctx.node)
    if result.reply_from(ctx.node) is None:
        raise Failed(
            f"no reply to a request for {UNKNOWN_METHOD!r}",
            expected='{"error": "<reason>"}',
            actual="nothing",
        )
    if not (isinstance(value, dict) and isinstance(value.get("error"), str)):
        raise Failed(
            "the reply to an unknown method is not an error",
            expected='{"error": "<reason>"}',
            actual=_short(value),
        )
    return f"error: {value['error'][:80]}; still serving"


@check("pidbox.unknown-members", "MSG-2", "ignores object members it does not know")
def unknown_members(ctx: Context) -> str:
    result = ctx.call("ping", {"wkctl_conform_extra": 1}, extra={"wkctl_conform_extra": True})
    value = result.value_from(ctx.node)
    if result.reply_from(ctx.node) is None:
        raise Failed(
            "no reply to a ping carrying an unknown body member and an unknown argument",
            expected={"ok": "pong"},
            actual="nothing",
        )
    if value != {"ok": "pong"}:
        raise Failed("unknown members changed the answer", expected={"ok": "pong"}, actual=value)
    return "unknown members ignored"


@check("pidbox.pattern", "PIDBOX-4", "honours pattern with the glob matcher")
def pattern(ctx: Context) -> str:
    glob = ctx.node[:-1] + "*" if len(ctx.node) > 1 else "*"
    result = ctx.call(
        "ping",
        {},
        destination=None,
        pattern=glob,
        matcher="glob",
        until=lambda r: r.reply_from(ctx.node) is not None,
    )
    if result.reply_from(ctx.node) is None:
        raise Failed(
            f"no reply to a ping addressed by pattern {glob!r} (glob)",
            expected="a reply",
            actual="nothing",
        )
    return f"answered pattern {glob!r}"


def _peer_software(ctx: Context) -> dict[str, PeerSoftware]:
    """Every node on the broker with what it announced: its peer kind (from
    its worker events) and its Celery and kombu releases (from a ``report``
    broadcast, which every Celery worker answers, events enabled or not)."""
    known = ctx.facts.peer_software
    if known is not None:
        return known
    ctx.identity()  # the node's own heartbeat, asked for at the opening
    result = ctx.call("report", {}, destination=None, until=lambda r: False)
    releases: dict[str, tuple[str | None, str | None]] = {}
    for reply in result.replies:
        if not isinstance(reply.body, dict):
            continue
        for name, value in reply.body.items():
            text = value.get("ok") if isinstance(value, dict) else None
            releases[str(name)] = software_from_report(text)
    kinds: dict[str, PeerKind] = {}
    for ev in ctx.recorder.snapshot():
        if isinstance(ev.hostname, str) and isinstance(ev.body, dict) and "sw_ident" in ev.body:
            kinds[ev.hostname] = peer_kind(ev.body)
    names = (set(releases) | set(ctx.other_nodes()) | {ctx.node}) - {ctx.probe.peer}
    peers = {
        name: PeerSoftware(name, kinds.get(name), *releases.get(name, (None, None)))
        for name in sorted(n for n in names if not n.startswith("wkctl-conform-"))
    }
    ctx.facts.peer_software = peers
    return peers


@check(
    "pidbox.unknown-matcher",
    "PIDBOX-18",
    "does not run a request with an unknown matcher",
    deviation="DEFECT-15",
)
def unknown_matcher(ctx: Context) -> str:
    transport = ctx.probe.settings.transport
    # only kombu's Redis transport has the defect: ask nodes elsewhere nothing
    peers = _peer_software(ctx) if transport in REDIS_TRANSPORTS else {}
    risky = matcher_outage(transport, peers)
    if risky:
        shown = "; ".join(f"{name}: {why}" for name, why in list(risky.items())[:3])
        shown += ", ..." if len(risky) > 3 else ""
        others = sorted(set(peers) - {ctx.node})
        if not ctx.outage_probes:
            raise Skipped(
                f"not sent: a request with an unknown matcher silences the control channel "
                f"of these nodes until they restart ({shown}) (DEFECT-15); "
                "--outage-probes sends it when the node is alone on the broker"
            )
        if others:
            raise Skipped(
                f"not sent: --outage-probes, but other nodes share the broker "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and the "
                f"broadcast would reach them ({shown}) (DEFECT-15)"
            )
    result = ctx.call(
        "ping", {}, destination=None, pattern=ctx.node, matcher=UNKNOWN_MATCHER, fence=True
    )
    if result.reply_from(ctx.node) is not None:
        raise Failed(
            f"the node ran a request addressed with the unknown matcher {UNKNOWN_MATCHER!r}",
            expected="no reply",
            actual=_short(result.value_from(ctx.node)),
        )
    if not result.fenced:
        _still_serving(ctx, "a request with an unknown matcher")
    return "not run"


@check(
    "pidbox.expired",
    "PIDBOX-8",
    "drops requests whose expires header has passed",
    deviation="DEFECT-12",
)
def expired(ctx: Context) -> str:
    result = ctx.call("ping", {}, expires=time.time() - 60.0, fence=True)
    if result.replies:
        raise Failed(
            "the node answered a request that expired 60 s ago",
            expected="no reply",
            actual=_short(result.replies[0].body),
        )
    if not result.fenced:
        _still_serving(ctx, "an expired request")
    return "expired request dropped"
