"""The checks, one function per observable requirement, in run order.

Each check cites the spec statement it verifies, sends what it needs, and
on failure says what it expected and what it observed.  Checks that change
the node's state use fresh task ids and election ids (``conform-...``), so
runs can repeat against the same node, including one doing real work.

Real Celery workers must survive a run.  The probe never sends a Celery
worker what the spec lists as fatal to it: a malformed heartbeat
(DEFECT-6, fatal to every Celery worker on the broker), an election it
would hold alone (DEFECT-1), clock values it cannot handle (DEFECT-8).
Against a Celery worker those checks report the documented defect as a
known deviation without sending anything; against any other node they
probe for real.  The election check injects a synthetic peer's
``worker-elect`` first, so that a Celery worker never holds one alone.
The limit probes (a body over 8 MiB, one nested 66 levels deep, both
addressed to the node but delivered to every pidbox queue) are sent to
Celery workers too: they decode and answer them and keep serving
(DEFECT-13), which the kit's tests check on both brokers.
"""

from __future__ import annotations

import math
import pickle
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from kombu import Exchange

from wkctl.protocol.broker import event_exchange, pidbox_exchange, reply_exchange
from wkctl.protocol.client import normalize_revoked
from wkctl.protocol.validation import validate
from wkctl.protocol.vocab import REDIS_TRANSPORTS, PeerKind, peer_kind

from .hazards import PeerSoftware, matcher_outage, software_from_report
from .registry import Failed, Skipped, check
from .runner import SYNC_CLOCK, SYNC_CLOCK_ERROR, SYNC_CLOCK_TOO_BIG, Context

__all__: list[str] = []

#: A method no implementation has.
UNKNOWN_METHOD = "wkctl_conform_no_such_method"
#: A matcher no implementation has.
UNKNOWN_MATCHER = "wkctl-conform-no-such-matcher"
#: Election topic no node has a handler for: the winner only logs it.
ELECTION_TOPIC = "wkctl-conform"
#: How far above the node's clock the poisoning probe goes (> max_clock_jump).
POISON_JUMP = 1_000_000_000


def _fresh(tag: str) -> str:
    return f"conform-{tag}-{uuid.uuid4().hex[:12]}"


def _short(value: Any, limit: int = 300) -> Any:
    text = repr(value)
    return value if len(text) <= limit else text[: limit - 3] + "..."


def _schema(body: Any, kind: str, what: str) -> None:
    issues = validate(body, kind)
    if issues:
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise Failed(
            f"{what} does not validate against the {kind} schema: "
            f"{first.path or '/'}: {first.message}{more}",
            expected=f"a body valid against schemas/{kind}.json",
            actual=_short(body),
        )


def _finite(body: Any, what: str) -> None:
    """[MSG-4]: NaN and Infinity are not JSON (Python's json reads them)."""
    stack = [body]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise Failed(
                f"{what} contains {item!r}, which is not JSON",
                expected="finite numbers",
                actual=item,
            )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _is_clock(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _revoked_now(ctx: Context) -> list[str]:
    _, value = ctx.answer("revoked", {})
    if not isinstance(value, list):
        raise Failed(
            "the revoked reply is not a list of task ids",
            expected="a JSON array of task ids",
            actual=_short(value),
        )
    return [v for v in value if isinstance(v, str)]


def _clock_value(ctx: Context, **kwargs: Any) -> int:
    _, value = ctx.answer("clock", {}, **kwargs)
    if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
        raise Failed(
            "the clock reply holds no clock value",
            expected={"clock": "<integer>"},
            actual=_short(value),
        )
    ctx.probe.see_clock(value["clock"])
    return int(value["clock"])


def _still_serving(ctx: Context, after: str) -> None:
    """[SEC-3]: after something hostile, the node must still answer ping."""
    result = ctx.call("ping", {})
    if result.reply_from(ctx.node) is None:
        ctx.silent = f"the node stopped answering after {after}"
        raise Failed(ctx.silent, expected="a reply to ping", actual="nothing")


def _celery_nearby(ctx: Context, defect: str, what: str) -> None:
    """Skip a probe other Celery workers on the broker would receive too."""
    others = [name for name in ctx.celery_on_broker() if name != ctx.node]
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise Skipped(f"not sent: Celery workers on this broker ({shown}) {what} ({defect})")


def _celery_defect(ctx: Context, defect: str, what: str) -> None:
    """Against a Celery worker, report ``defect`` instead of triggering it."""
    if ctx.identity() == "celery":
        raise Failed(
            f"not sent: {what}",
            expected="a node that survives it",
            actual="a Celery worker",
        )


# -- transport ------------------------------------------------------------------


@check(
    "transport.exchanges",
    "TRANSPORT-2",
    "the exchanges exist with Celery's attributes",
    also=("TRANSPORT-1", "TRANSPORT-3"),
)
def exchanges(ctx: Context) -> str:
    settings = ctx.probe.settings
    wanted: list[Exchange] = [
        pidbox_exchange(settings.names),
        reply_exchange(settings.names),
        event_exchange(settings.names, settings.transport),
    ]
    conn = ctx.probe.conn
    for exchange in wanted:
        channel = conn.channel()
        try:
            exchange(channel).declare()
        except Exception as exc:
            raise Failed(
                f"exchange {exchange.name} exists with other attributes: {exc}",
                expected=f"{exchange.type}, durable={exchange.durable}",
                actual=str(exc),
            ) from None
        finally:
            try:
                channel.close()
            except Exception:
                pass
    return ", ".join(f"{e.name} ({e.type})" for e in wanted)


@check("transport.pidbox-queue", "TRANSPORT-4", "its pidbox queue has the standard name")
def pidbox_queue(ctx: Context) -> str:
    settings = ctx.probe.settings
    if settings.transport not in ("amqp", "amqps", "pyamqp"):
        raise Skipped(f"queue names are not observable on {settings.transport} (fanout is Pub/Sub)")
    name = settings.names.node_queue(ctx.node)
    channel = ctx.probe.conn.channel()
    try:
        channel.queue_declare(queue=name, passive=True)
    except Exception as exc:
        text = str(exc)
        if "RESOURCE_LOCKED" in text or "405" in text:
            return f"{name} exists (exclusive to the node)"
        raise Failed(
            f"no queue {name}", expected=f"the queue {name}", actual=text or type(exc).__name__
        ) from None
    finally:
        try:
            channel.close()
        except Exception:
            pass
    return f"{name} exists"


# -- pidbox ---------------------------------------------------------------------


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
    if "one_reply" not in ctx.facts:
        ctx.facts["one_reply"] = ctx.call("ping", {}, fence=True)
    result = ctx.facts["one_reply"]
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
    known = ctx.facts.get("peer_software")
    if known is not None:
        return known  # type: ignore[no-any-return]
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
    ctx.facts["peer_software"] = peers
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


# -- security -------------------------------------------------------------------


@check("sec.json-only", "SEC-1", "never deserializes a non-JSON request", also=("SEC-3",))
def json_only(ctx: Context) -> str:
    ctx.require_control()
    # A ping pickled: a plain dict, harmless to any process that loads it,
    # and a reply proves that the node deserialized pickle off the wire.
    result = ctx.probe.call(
        "ping",
        {},
        fence=True,
        content_type="application/x-python-serialize",
        raw=lambda request: pickle.dumps(request, protocol=2),
    )
    if result.replies:
        raise Failed(
            "the node answered a request sent as application/x-python-serialize (pickle)",
            expected="the message dropped unread",
            actual=_short(result.replies[0].body),
        )
    if not result.fenced:
        _still_serving(ctx, "a pickle request")
    return "pickle request dropped, node still answers"


@check(
    "sec.schema-invalid",
    "MSG-5",
    "does not act on a request that fails its schema",
    deviation="DEFECT-13",
)
def schema_invalid(ctx: Context) -> str:
    # A hello whose from_node is a number: harmless to act on (it only adds
    # a fresh id), and invalid against schemas/hello.json.
    marker = _fresh("invalid")
    result = ctx.call("hello", {"from_node": 12345, "revoked": [marker]}, fence=True)
    if result.reply_from(ctx.node) is not None:
        raise Failed(
            "the node answered a hello whose from_node is a number, not a node name",
            expected="the request dropped as invalid against the hello schema",
            actual=_short(result.value_from(ctx.node)),
        )
    if not result.fenced:
        _still_serving(ctx, "a schema-invalid hello")
    if marker in set(_revoked_now(ctx)):
        raise Failed(
            "the node merged the revoked ids of a schema-invalid hello without answering it",
            expected=f"{marker!r} not merged",
            actual="merged",
        )
    return "schema-invalid hello dropped, nothing merged"


#: Nesting of the too-deep probe: well past the default bound of 32 levels,
#: far below what any JSON parser (or a Celery worker) chokes on.
DEEP_LEVELS = 64
#: Body size of the too-large probe: just past the default 8 MiB bound.
LARGE_BODY = 8 * 1024 * 1024 + 64 * 1024


@check(
    "sec.too-deep",
    "LIMIT-2",
    "refuses a body nested deeper than 32 levels",
    also=("SEC-2", "SEC-3"),
    deviation="DEFECT-13",
)
def too_deep(ctx: Context) -> str:
    nested: Any = []
    for _ in range(DEEP_LEVELS):
        nested = [nested]
    # ping ignores arguments it does not know ([MSG-2]): only the depth is wrong.
    result = ctx.call("ping", {"wkctl_conform_deep": nested}, fence=True)
    if result.reply_from(ctx.node) is not None:
        raise Failed(
            f"the node answered a ping nested {DEEP_LEVELS + 2} levels deep",
            expected="the body refused (more than 32 levels)",
            actual=_short(result.value_from(ctx.node)),
        )
    if not result.fenced:
        _still_serving(ctx, f"a body nested {DEEP_LEVELS + 2} levels deep")
    return f"a body {DEEP_LEVELS + 2} levels deep refused; still serving"


@check(
    "sec.too-large",
    "LIMIT-1",
    "refuses a body larger than 8 MiB",
    also=("SEC-2", "SEC-3"),
    deviation="DEFECT-13",
)
def too_large(ctx: Context) -> str:
    # A ping padded past the bound with an argument ping ignores ([MSG-2]).
    pad = "x" * LARGE_BODY
    result = ctx.call(
        "ping",
        {"wkctl_conform_pad": pad},
        fence=True,
        timeout=max(ctx.probe.timeout, 5.0),
    )
    if result.reply_from(ctx.node) is not None:
        raise Failed(
            f"the node answered a ping of more than {LARGE_BODY:,} bytes",
            expected="the body refused (more than 8 MiB)",
            actual=_short(result.value_from(ctx.node)),
        )
    if not result.fenced:
        _still_serving(ctx, f"a body of {LARGE_BODY:,} bytes")
    return f"a {LARGE_BODY:,}-byte body refused; still serving"


# -- clock ------------------------------------------------------------------------


@check("clock.reply", "PIDBOX-12", "answers clock with {clock: N}")
def clock_reply(ctx: Context) -> str:
    result, value = ctx.answer("clock", {})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "clock-reply", "the clock reply")
    if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
        raise Failed(
            "no clock value in the reply", expected={"clock": "<integer>"}, actual=_short(value)
        )
    ctx.probe.see_clock(value["clock"])
    return f"clock {value['clock']}"


@check("clock.forward", "CLOCK-3", "forwards its clock for every reply it sends")
def clock_forward(ctx: Context) -> str:
    first, _ = ctx.answer("ping", {})
    second, _ = ctx.answer("ping", {})
    a = first.reply_from(ctx.node).headers.get("clock")  # type: ignore[union-attr]
    b = second.reply_from(ctx.node).headers.get("clock")  # type: ignore[union-attr]
    if not (_is_clock(a) and _is_clock(b)):
        raise Failed("reply clock headers are not clock values", expected="integers", actual=(a, b))
    if b <= a:
        raise Failed(
            "the clock headers of two consecutive replies did not increase",
            expected=f"> {a}",
            actual=b,
        )
    c1 = _clock_value(ctx)
    c2 = _clock_value(ctx)
    if c2 <= c1:
        raise Failed(
            "two consecutive clock replies did not increase", expected=f"> {c1}", actual=c2
        )
    return f"headers {a} -> {b}, clock {c1} -> {c2}"


@check(
    "clock.adjust-event",
    "CLOCK-4",
    "adjusts past the clock of a peer's event",
    also=("CLOCK-2",),
)
def clock_adjust_event(ctx: Context) -> str:
    high = max(ctx.probe.clock, _clock_value(ctx)) + 2000
    ctx.probe.peer_heartbeat(clock=high)
    ctx.facts["peer_announced"] = True
    deadline = time.monotonic() + ctx.timeout
    while True:
        value = _clock_value(ctx)
        if value > high:
            return f"peer heartbeat clock {high}, node clock now {value}"
        if time.monotonic() >= deadline:
            raise Failed(
                f"a peer's worker-heartbeat carried clock {high}; the node's clock stayed below it",
                expected=f"> {high}",
                actual=value,
            )
        time.sleep(0.05)


@check("clock.adjust-header", "CLOCK-5", "adjusts past the clock header of a request")
def clock_adjust_header(ctx: Context) -> str:
    high = ctx.probe.clock + 1000
    result, _ = ctx.answer("ping", {}, clock=high)
    reply = result.reply_from(ctx.node)
    assert reply is not None
    got = reply.headers.get("clock")
    if not _is_clock(got) or got <= high:
        raise Failed(
            f"sent clock header {high}; the reply's clock header is not above it",
            expected=f"> {high}",
            actual=got,
        )
    return f"sent {high}, reply clock {got}"


@check(
    "clock.single",
    "CLOCK-5",
    "its clock reply reflects a request's clock header",
    deviation="DEFECT-11",
)
def clock_single(ctx: Context) -> str:
    high = ctx.probe.clock + 1000
    value = _clock_value(ctx, clock=high)
    if value <= high:
        raise Failed(
            f"sent a clock request with clock header {high}; the clock it reports is not above it",
            expected=f"> {high}",
            actual=value,
        )
    return f"sent {high}, clock {value}"


@check(
    "clock.not-a-clock",
    "CLOCK-1",
    "neither adopts nor fails on values that are not clocks",
    also=("SEC-3",),
    deviation="DEFECT-8",
)
def not_a_clock(ctx: Context) -> str:
    _celery_defect(ctx, "DEFECT-8", "a non-integer clock raises in a Celery worker")
    # kombu adjusts the mailbox clock of every worker from every request's
    # header, before looking at its destination.
    _celery_nearby(ctx, "DEFECT-8", "would take these values into their pidbox clocks")
    before = _clock_value(ctx)
    bogus = [str(before + 5000), before + 5000.5, True]
    for value in bogus:
        result = ctx.call("ping", {}, clock=value)
        if result.reply_from(ctx.node) is None:
            _still_serving(ctx, f"a request with clock header {value!r}")
            raise Failed(
                f"no reply to a request with clock header {value!r}",
                expected="a reply, the value ignored",
                actual="nothing",
            )
    after = _clock_value(ctx)
    if after >= before + 5000:
        raise Failed(
            "a clock header that is not a clock value was adopted",
            expected=f"< {before + 5000}",
            actual=after,
        )
    return f"ignored {bogus!r}"


@check(
    "clock.poison",
    "CLOCK-6",
    "ignores a clock jumping more than max_clock_jump",
    also=("SEC-5",),
    deviation="DEFECT-8",
)
def clock_poison(ctx: Context) -> str:
    _celery_defect(ctx, "DEFECT-8", "a Celery worker adopts any clock and drags its peers along")
    _celery_nearby(ctx, "DEFECT-8", "would adopt the poisoned clock")
    before = _clock_value(ctx)
    huge = before + POISON_JUMP
    ctx.probe.peer_heartbeat(clock=huge)
    ctx.facts["peer_announced"] = True
    # The node handles the event asynchronously: give it the time a clock
    # reply takes, a few times over.
    deadline = time.monotonic() + min(ctx.timeout, 0.5)
    value = before
    while time.monotonic() < deadline:
        value = _clock_value(ctx)
        if value >= huge:
            break
        time.sleep(0.05)
    if value >= huge:
        raise Failed(
            f"a peer's heartbeat with clock {huge} ({POISON_JUMP} ahead) was adopted",
            expected=f"< {huge}",
            actual=value,
        )
    return f"clock stayed at {value} after a heartbeat with clock {huge}"


# -- revoke ---------------------------------------------------------------------


@check("revoke.adds", "PIDBOX-15", "a revoke adds the ids to its revoked set", also=("REVOKED-2",))
def revoke_adds(ctx: Context) -> str:
    single = _fresh("revoke")
    several = [_fresh("revoke"), str(uuid.uuid4())]
    ctx.require_control()
    ctx.cast("revoke", {"task_id": single, "terminate": False, "signal": "SIGTERM"})
    ctx.cast("revoke", {"task_id": several, "terminate": False, "signal": "SIGTERM"})
    # The node handles its pidbox queue in order: the revokes come first.
    held = set(_revoked_now(ctx))
    missing = [i for i in [single, *several] if i not in held]
    if missing:
        raise Failed(
            "revoked ids are not in its revoked reply",
            expected=[single, *several],
            actual=f"missing {missing}",
        )
    return "one id and a list of ids revoked"


# -- mingle ---------------------------------------------------------------------


@check(
    "mingle.hello",
    "MINGLE-4",
    "answers hello with its clock and revoked ids",
    also=("REVOKED-6",),
)
def hello(ctx: Context) -> str:
    result, value = ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": []})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "hello-reply", "the hello reply")
    if not isinstance(value, dict) or not _is_clock(value.get("clock")):
        raise Failed(
            "the hello reply holds no clock value",
            expected={"clock": "<integer>", "revoked": "[ids]"},
            actual=_short(value),
        )
    ctx.probe.see_clock(value["clock"])
    revoked = value.get("revoked")
    if isinstance(revoked, dict):
        for key, entry in revoked.items():
            stamp = entry[0] if isinstance(entry, list) and entry else entry
            if not isinstance(stamp, float):
                raise Failed(
                    f"mapping-form stamp of {key!r} is not a number with a fraction part",
                    expected="a float stamp",
                    actual=_short(entry),
                )
    form = "mapping" if isinstance(revoked, dict) else "list"
    return f"clock {value['clock']}, {len(normalize_revoked(revoked))} revoked ids ({form} form)"


@check("mingle.reply-clock", "MINGLE-6", "its hello reply clock is forwarded past its clock")
def hello_clock(ctx: Context) -> str:
    before = _clock_value(ctx)
    _, value = ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": []})
    got = value.get("clock") if isinstance(value, dict) else None
    if not _is_clock(got) or got <= before:
        raise Failed(
            f"clock was {before} just before; the hello reply's clock is not above it",
            expected=f"> {before}",
            actual=got,
        )
    return f"clock {before}, hello reply clock {got}"


def _merge(ctx: Context, revoked: Any, ids: list[str], form: str) -> str:
    ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": revoked})
    held = set(_revoked_now(ctx))
    missing = [i for i in ids if i not in held]
    if missing:
        raise Failed(
            f"ids sent in a hello ({form} form) are not in its revoked reply",
            expected=ids,
            actual=f"missing {missing}",
        )
    return f"{len(ids)} ids merged ({form} form)"


@check(
    "mingle.merge-list",
    "REVOKED-4",
    "merges the revoked ids of a hello (list form)",
    also=("MINGLE-4",),
)
def merge_list(ctx: Context) -> str:
    # Task ids are arbitrary strings, not always UUIDs.
    ids = [str(uuid.uuid4()), _fresh("list")]
    return _merge(ctx, ids, ids, "list")


@check(
    "mingle.merge-mapping",
    "REVOKED-4",
    "merges the revoked ids of a hello (mapping form id -> [stamp, id])",
    also=("MINGLE-7",),
)
def merge_mapping(ctx: Context) -> str:
    ids = [str(uuid.uuid4()), _fresh("map")]
    stamp = time.monotonic() + 0.5  # a fraction part: Celery 5.4 demands a float
    return _merge(ctx, {i: [stamp, i] for i in ids}, ids, "mapping")


@check(
    "mingle.empty-forms",
    "MINGLE-7",
    "accepts hello with revoked {}, [], null or absent, without pattern/matcher",
)
def empty_forms(ctx: Context) -> str:
    forms: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("revoked {}", {"from_node": ctx.probe.peer, "revoked": {}}, {}),
        ("revoked []", {"from_node": ctx.probe.peer, "revoked": []}, {}),
        ("revoked null", {"from_node": ctx.probe.peer, "revoked": None}, {}),
        ("no revoked", {"from_node": ctx.probe.peer}, {}),
        ("no pattern/matcher", {"from_node": ctx.probe.peer, "revoked": []}, {"legacy": True}),
    ]
    for label, arguments, options in forms:
        result = ctx.call("hello", arguments, **options)
        value = result.value_from(ctx.node)
        if result.reply_from(ctx.node) is None:
            raise Failed(
                f"no reply to a hello with {label}", expected="a hello reply", actual="nothing"
            )
        if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
            raise Failed(
                f"unusable reply to a hello with {label}",
                expected={"clock": "<integer>", "revoked": "[ids]"},
                actual=_short(value),
            )
    return f"{len(forms)} forms answered"


@check(
    "mingle.bad-entry",
    "REVOKED-4",
    "a malformed mapping entry is not fatal (the hello is dropped whole)",
    deviation="DEFECT-10",
)
def bad_entry(ctx: Context) -> str:
    good, bad = _fresh("good"), _fresh("bad")
    revoked = {good: [time.monotonic() + 0.5, good], bad: "not-a-stamp"}
    result = ctx.call("hello", {"from_node": ctx.probe.peer, "revoked": revoked}, fence=True)
    if result.reply_from(ctx.node) is None:
        if not result.fenced:
            _still_serving(ctx, "a hello with a malformed revoked entry")
        # What the spec asks: the hello fails its schema and is dropped
        # whole ([MSG-5]); the node keeps serving.
        return "the hello was dropped as schema-invalid ([MSG-5]); still serving"
    # A node that answers does not validate ([MSG-5], checked by
    # sec.schema-invalid); what REVOKED-4 asks of it is that the entry is
    # not fatal: no error reply, and the well-formed entry still merged.
    value = result.value_from(ctx.node)
    if value is None and not {good, bad} & set(_revoked_now(ctx)):
        # A host whose pidbox replies to every request (a Celery worker
        # running wkctl's steps) can only drop it as a null reply.
        return "the hello was dropped as schema-invalid (a null reply); nothing merged"
    if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
        raise Failed(
            "a hello whose revoked mapping has one malformed entry failed",
            expected="the message dropped (or the entry skipped), not an error",
            actual=_short(value),
        )
    if good not in set(_revoked_now(ctx)):
        raise Failed(
            "the well-formed entry next to a malformed one was not merged",
            expected=f"{good!r} in its revoked ids",
            actual="missing",
        )
    return "answered without validating ([MSG-5]): malformed entry skipped, the other merged"


@check(
    "mingle.list-form",
    "REVOKED-5",
    "sends its revoked ids in the list form",
    deviation="DEFECT-14",
)
def list_form(ctx: Context) -> str:
    marker = _fresh("form")
    _, value = ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": [marker]})
    revoked = value.get("revoked") if isinstance(value, dict) else None
    if not isinstance(revoked, list):
        raise Failed(
            "the hello reply's revoked ids are not a JSON array",
            expected="a list of ids, oldest first",
            actual=_short(revoked),
        )
    if revoked and revoked[-1] != marker:
        # The id just merged is the newest: oldest first puts it last,
        # unless other ids were revoked at the very same time.
        return f"list form, {len(revoked)} ids (the id just merged is not last)"
    return f"list form, {len(revoked)} ids, the id just merged last"


@check("mingle.own-revoked", "MINGLE-4", "returns its own revoked ids in hello")
def own_revoked(ctx: Context) -> str:
    own = set(_revoked_now(ctx))
    if not own:
        seed = _fresh("seed")
        ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": [seed]})
        own = set(_revoked_now(ctx))
        if not own:
            raise Skipped("the node holds no revoked ids to return (revoke and merge both failed)")
    _, value = ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": []})
    returned = set(normalize_revoked(value.get("revoked") if isinstance(value, dict) else None))
    missing = sorted(own - returned)
    if missing:
        raise Failed(
            "ids in its revoked reply are missing from its hello reply",
            expected=f"{len(own)} ids incl. {sorted(own)[:3]}",
            actual=f"{len(returned)} ids, missing {missing[:5]}",
        )
    return f"hello returned all {len(own)} revoked ids"


@check("mingle.own-hello", "MINGLE-5", "answers its own hello with null and changes nothing")
def own_hello(ctx: Context) -> str:
    marker = _fresh("own")
    result = ctx.call("hello", {"from_node": ctx.node, "revoked": [marker]})
    if result.reply_from(ctx.node) is None:
        raise Failed("no reply to a hello from its own name", expected="null", actual="nothing")
    value = result.value_from(ctx.node)
    if value is not None:
        raise Failed("a hello from its own name was answered", expected=None, actual=_short(value))
    if marker in set(_revoked_now(ctx)):
        raise Failed(
            "a hello from its own name changed its revoked set",
            expected=f"{marker!r} not merged",
            actual="merged",
        )
    return "null, nothing merged"


# -- a launched node's start ------------------------------------------------------


def _launched(ctx: Context) -> None:
    if ctx.process is None:
        raise Skipped(
            "the node was already running when the run began: "
            "use --launch CMD to probe what it does at start and stop"
        )


def _hello_seen(ctx: Context) -> dict[str, Any]:
    _launched(ctx)
    if not ctx.probe.hellos:
        raise Skipped("the node sent no hello at start (see launch.hello)")
    return ctx.probe.hellos[0]


@check(
    "launch.hello",
    "MINGLE-1",
    "broadcasts hello with its name and revoked ids at start",
    also=("PIDBOX-1", "PIDBOX-2", "TRANSPORT-5"),
)
def launch_hello(ctx: Context) -> str:
    _launched(ctx)
    if not ctx.probe.hellos:
        raise Failed(
            "no hello from the node after it started",
            expected=f"a hello broadcast with from_node {ctx.node!r}",
            actual="none",
        )
    seen = ctx.probe.hellos[0]
    body, headers = seen["body"], seen["headers"]
    _schema(body, "hello", "its hello")
    arguments = body.get("arguments") or {}
    problems = []
    if "revoked" not in arguments:
        problems.append("no revoked argument")
    reply_to = body.get("reply_to")
    if not isinstance(body.get("ticket"), str) or not isinstance(reply_to, dict):
        problems.append("no ticket/reply_to")
    else:
        if reply_to.get("exchange") != ctx.probe.settings.names.reply_exchange:
            problems.append(f"reply_to.exchange {reply_to.get('exchange')!r}")
        if not isinstance(reply_to.get("routing_key"), str) or not reply_to.get("routing_key"):
            problems.append("reply_to.routing_key is not a non-empty string")
    if body.get("destination"):
        problems.append(f"destination {body.get('destination')!r} (a broadcast has none)")
    if not _is_clock(headers.get("clock")):
        problems.append(f"clock header {headers.get('clock')!r}")
    expires = headers.get("expires")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        problems.append(f"expires header {expires!r}")
    if seen["routing_key"] not in ("", None):
        problems.append(f"routing key {seen['routing_key']!r} (must be empty)")
    if problems:
        raise Failed(
            "its hello at start is not a well-formed broadcast: " + "; ".join(problems),
            expected="hello {from_node, revoked}, ticket, reply_to, headers clock and expires",
            actual=_short(body),
        )
    return (
        f"hello with {len(normalize_revoked(arguments.get('revoked')))} revoked ids, "
        f"clock header {headers.get('clock')}"
    )


@check(
    "launch.sync",
    "MINGLE-3",
    "adopts the clock and revoked ids of the hello replies at start",
    also=("REVOKED-4",),
)
def launch_sync(ctx: Context) -> str:
    _hello_seen(ctx)
    clock = _clock_value(ctx)
    if clock <= SYNC_CLOCK:
        raise Failed(
            f"a peer answered its hello with clock {SYNC_CLOCK}; its clock is not above it",
            expected=f"> {SYNC_CLOCK}",
            actual=clock,
        )
    held = set(_revoked_now(ctx))
    wanted = [ctx.sync["list_id"], ctx.sync["map_id"]]
    missing = [i for i in wanted if i not in held]
    if missing:
        raise Failed(
            "ids in the hello replies (list form, mapping form; next to an error and a null "
            "reply) are not in its revoked set",
            expected=wanted,
            actual=f"missing {missing}",
        )
    return f"clock {clock}, both ids merged"


@check(
    "launch.error-reply",
    "MINGLE-3",
    'skips an {"error": ...} hello reply at start, whatever else it holds',
    deviation="DEFECT-25",
)
def launch_error_reply(ctx: Context) -> str:
    _hello_seen(ctx)
    clock = _clock_value(ctx)
    took_id = ctx.sync["error_id"] in set(_revoked_now(ctx))
    # Our clock calls forward it a little; adopting the error's clock would
    # put it at SYNC_CLOCK_ERROR + 1 or more.
    took_clock = clock > SYNC_CLOCK_ERROR
    if took_id or took_clock:
        took = [w for w, yes in (("its revoked id", took_id), ("its clock", took_clock)) if yes]
        raise Failed(
            'it synced with a peer whose hello reply was {"error": ...}: took '
            + " and ".join(took),
            expected=f"the error reply skipped: clock <= {SYNC_CLOCK_ERROR}, id not revoked",
            actual=f"clock {clock}, id {'revoked' if took_id else 'not revoked'}",
        )
    return f"error reply skipped (clock {clock}, its id not revoked)"


@check(
    "launch.initial-bound",
    "CLOCK-7",
    "ignores a clock above 2^53-1 during the initial sync",
    deviation="DEFECT-8",
)
def launch_initial_bound(ctx: Context) -> str:
    _hello_seen(ctx)
    clock = _clock_value(ctx)
    if clock >= SYNC_CLOCK_TOO_BIG:
        raise Failed(
            f"a peer answered its hello with clock {SYNC_CLOCK_TOO_BIG} (above 2^53-1) "
            "and it adopted it",
            expected=f"< {2**53}",
            actual=clock,
        )
    return f"clock {clock}"


# -- events ---------------------------------------------------------------------


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
    if "heartbeats" in ctx.facts:
        return list(ctx.facts["heartbeats"])
    asked = ctx.facts.get("heartbeat_asked", ctx.started)
    first_wait = max(ctx.timeout, 6.0) - (time.monotonic() - asked)
    found, _ = ctx.wait_events(lambda evs: ctx.node_events("worker-heartbeat", evs), first_wait)
    if not found:
        ctx.facts["heartbeats"] = []
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
    ctx.facts["heartbeats"] = beats
    ctx.facts["heartbeats_until"] = time.monotonic()
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
    asked = ctx.facts.get("heartbeat_asked")
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
    until = ctx.facts.get("heartbeats_until", time.monotonic())
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
    beats = _heartbeats(ctx)
    periodic = beats[1:] if len(beats) > 1 else beats
    if not periodic:
        raise Skipped("no heartbeat to look at")
    for beat in periodic:
        missing = [k for k in ("active", "processed", "loadavg") if k not in beat.body]
        if missing:
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
            actual=f"none (exit code {ctx.facts.get('exit_code')})",
        )
    _schema(seen[0].body, "heartbeat", "its worker-offline")
    return f"worker-offline seen, exit code {ctx.facts.get('exit_code')}"


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
    ctx.facts["peer_announced"] = True
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


# -- election ---------------------------------------------------------------------


def _acks(ctx: Context, election: str, events: list[Any]) -> list[Any]:
    return [
        e
        for e in ctx.node_events("worker-elect-ack", events)
        if isinstance(e.body, dict) and e.body.get("id") == election
    ]


@check("election.ack-peer", "ELECT-2", "acks a worker-elect from another node")
def ack_peer(ctx: Context) -> str:
    election = _fresh("election")
    ctx.facts["election"] = election
    ctx.probe.peer_event("worker-elect", id=election, topic=ELECTION_TOPIC, action=None, cver=1)
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect-ack for a synthetic peer's worker-elect",
            expected=f"worker-elect-ack with id {election!r} from {ctx.node}",
            actual="none",
        )
    ctx.facts["peer_acked"] = True
    _schema(found[0].body, "elect-ack", "its worker-elect-ack")
    return "acked"


@check("election.elect", "ELECT-1", "stands in an election with one worker-elect")
def elect(ctx: Context) -> str:
    election = ctx.facts.get("election")
    if election is None or (not ctx.facts.get("peer_acked") and ctx.identity() != "other"):
        raise Skipped(
            "no election held: the node did not acknowledge the synthetic peer's worker-elect, "
            "and an election with a lone gossiping Celery worker kills it (DEFECT-1)"
        )
    ctx.cast("election", {"id": election, "topic": ELECTION_TOPIC, "action": None})

    def stood(events: list[Any]) -> Any:
        return [
            e
            for e in ctx.node_events("worker-elect", events)
            if isinstance(e.body, dict) and e.body.get("id") == election
        ]

    found, _ = ctx.wait_events(stood, ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect after the election command",
            expected=f"worker-elect with id {election!r}",
            actual="none",
        )
    body = found[0].body
    _schema(body, "elect", "its worker-elect")
    if body.get("topic") != ELECTION_TOPIC or body.get("cver") != 1:
        raise Failed(
            "wrong topic or cver in its worker-elect",
            expected={"topic": ELECTION_TOPIC, "cver": 1},
            actual={"topic": body.get("topic"), "cver": body.get("cver")},
        )
    # Behave as a peer: acknowledge its request, so that it can decide.
    ctx.probe.peer_event("worker-elect-ack", id=election)
    ctx.facts["stood"] = True
    time.sleep(0.1)
    count = len(stood(ctx.recorder.snapshot()))
    if count != 1:
        raise Failed(
            "more than one worker-elect for one election command",
            expected=1,
            actual=count,
        )
    return f"worker-elect clock {body.get('clock')}"


@check("election.ack-own", "ELECT-2", "acks its own worker-elect too")
def ack_own(ctx: Context) -> str:
    election = ctx.facts.get("election")
    if not ctx.facts.get("stood") or election is None:
        raise Skipped("the node did not stand in the election (see election.elect)")

    def both(events: list[Any]) -> Any:
        acks = _acks(ctx, election, events)
        return acks if len(acks) >= 2 else None

    found, events = ctx.wait_events(both, ctx.timeout)
    if not found:
        acks = _acks(ctx, election, events)
        raise Failed(
            "fewer acks than worker-elect requests it saw (the peer's and its own)",
            expected=f"2 worker-elect-ack with id {election!r}",
            actual=f"{len(acks)}",
        )
    for ack in found:
        _schema(ack.body, "elect-ack", "its worker-elect-ack")
    return f"{len(found)} acks"


@check(
    "election.ack-once",
    "ELECT-2",
    "acks a repeated worker-elect only once",
    deviation="DEFECT-2",
)
def ack_once(ctx: Context) -> str:
    election = _fresh("dup")
    for _ in range(2):
        ctx.probe.peer_event(
            "worker-elect", id=election, topic=ELECTION_TOPIC, action=None, cver=1, clock=7
        )
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    if not found:
        raise Failed(
            "no worker-elect-ack for a peer's worker-elect",
            expected="one worker-elect-ack",
            actual="none",
        )
    time.sleep(min(ctx.timeout, 0.3))
    acks = _acks(ctx, election, ctx.recorder.snapshot())
    if len(acks) != 1:
        raise Failed(
            "the same worker-elect (same sender, same election) sent twice was acked "
            f"{len(acks)} times",
            expected=1,
            actual=len(acks),
        )
    return "one ack for a duplicated request"


@check(
    "election.malformed",
    "ELECT-10",
    "drops (does not ack) a worker-elect lacking a field",
)
def elect_malformed(ctx: Context) -> str:
    election = _fresh("bad")
    ctx.probe.peer_event("worker-elect", id=election, action=None, cver=1)  # no topic
    fence = _fresh("fence")
    ctx.probe.peer_event("worker-elect", id=fence, topic=ELECTION_TOPIC, action=None, cver=1)
    found, events = ctx.wait_events(lambda evs: _acks(ctx, fence, evs), ctx.timeout)
    bad = _acks(ctx, election, events)
    if bad:
        raise Failed(
            "a worker-elect without topic was acknowledged",
            expected="no worker-elect-ack",
            actual=f"{len(bad)} ack(s)",
        )
    if not found:
        raise Skipped(
            "cannot tell: the well-formed worker-elect sent after it was not acked either"
        )
    return "not acked"


def _task_action(queue: str, election: str) -> dict[str, Any]:
    """A task signature the winner of a ``task`` election applies: routed to
    a queue only the probe consumes, so nothing ever runs it."""
    return {
        "task": "wkctl.conform.elected",
        "args": [election],
        "kwargs": {},
        "options": {"queue": queue},
        "subtask_type": None,
        "immediate": False,
    }


def _pump_until(ctx: Context, predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        ctx.probe.pump(0.05)
    return bool(predicate())


@check(
    "election.loser-waits",
    "ELECT-8",
    "does not run the action of an election a peer wins",
    also=("ELECT-3",),
)
def loser_waits(ctx: Context) -> str:
    election = _fresh("lose")
    queue = _fresh("q")
    landed = ctx.probe.watch_task_queue(queue)
    try:
        ctx.probe.peer_heartbeat()
        ctx.facts["peer_announced"] = True
        # The synthetic peer stands first, with clock 1: the lowest request
        # of the election, whatever the node's clock, so the peer wins.
        ctx.probe.peer_event(
            "worker-elect",
            id=election,
            topic="task",
            action=_task_action(queue, election),
            cver=1,
            clock=1,
        )
        found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
        if not found:
            raise Skipped(
                "the node did not acknowledge the peer's worker-elect (see election.ack-peer)"
            )
        ctx.cast(
            "election", {"id": election, "topic": "task", "action": _task_action(queue, election)}
        )

        def stood(events: list[Any]) -> Any:
            return [
                e
                for e in ctx.node_events("worker-elect", events)
                if isinstance(e.body, dict) and e.body.get("id") == election
            ]

        mine, _ = ctx.wait_events(stood, ctx.timeout)
        if not mine:
            raise Skipped("the node did not stand (see election.elect)")
        ctx.probe.peer_event("worker-elect-ack", id=election)
        ctx.wait_events(lambda evs: len(_acks(ctx, election, evs)) >= 2, min(ctx.timeout, 1.0))
        if _pump_until(ctx, lambda: bool(landed), min(ctx.timeout, 0.5) + 0.3):
            raise Failed(
                "the node ran the action of an election won by a peer "
                f"(the peer's request had clock 1, the node's {mine[0].body.get('clock')})",
                expected="no task published by the node",
                actual=f"{len(landed)} task message(s) in {queue}",
            )
    finally:
        ctx.probe.drop_task_queue(queue)
    return f"peer (clock 1) won over the node (clock {mine[0].body.get('clock')}); no action run"


@check(
    "election.winner-runs",
    "ELECT-3",
    "runs the action, once, when its request is the lowest",
    also=("ELECT-8", "ELECT-5"),
    deviation="DEFECT-1",
)
def winner_runs(ctx: Context) -> str:
    _celery_defect(
        ctx,
        "DEFECT-1",
        "a Celery worker standing before the peer decides on its own ack alone and crashes",
    )
    others = ctx.other_nodes()
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise Skipped(
            f"other nodes on this broker ({shown}) count as participants of the node's "
            "election ([ELECT-4]) but are not asked to stand: run against a node alone "
            "on its broker (namespace) to check who wins"
        )
    election = _fresh("win")
    queue = _fresh("q")
    landed = ctx.probe.watch_task_queue(queue)
    action = _task_action(queue, election)
    try:
        ctx.probe.peer_heartbeat()
        ctx.facts["peer_announced"] = True
        ctx.cast("election", {"id": election, "topic": "task", "action": action})

        def stood(events: list[Any]) -> Any:
            return [
                e
                for e in ctx.node_events("worker-elect", events)
                if isinstance(e.body, dict) and e.body.get("id") == election
            ]

        mine, _ = ctx.wait_events(stood, ctx.timeout)
        if not mine:
            raise Skipped("the node did not stand (see election.elect)")
        own_clock = mine[0].body.get("clock")
        higher = (own_clock if _is_clock(own_clock) else ctx.probe.clock) + 1000
        ctx.probe.peer_event(
            "worker-elect", id=election, topic="task", action=action, cver=1, clock=higher
        )
        # Every expected request is in: the winner is fixed, acks or not ([ELECT-5]).
        ctx.wait_events(lambda evs: len(_acks(ctx, election, evs)) >= 2, ctx.timeout)
        ctx.probe.peer_event("worker-elect-ack", id=election)
        if not _pump_until(ctx, lambda: bool(landed), ctx.timeout):
            raise Failed(
                f"the node's request (clock {own_clock}) was the lowest, yet it ran no action",
                expected=f"one task message in {queue}",
                actual="none",
            )
        ctx.probe.pump(0.3)
        if len(landed) != 1:
            raise Failed(
                "the winner ran the action more than once",
                expected=1,
                actual=len(landed),
            )
    finally:
        ctx.probe.drop_task_queue(queue)
    return f"won with clock {own_clock} against {higher}; ran the action once"


@check(
    "election.alone",
    "ELECT-6",
    "survives an election it holds without peers",
    also=("SEC-3",),
    deviation="DEFECT-1",
)
def alone(ctx: Context) -> str:
    _celery_defect(ctx, "DEFECT-1", "an election with exactly one gossiping Celery worker kills it")
    election = _fresh("alone")
    if ctx.facts.get("peer_announced"):
        ctx.probe.peer_heartbeat("worker-offline")
        ctx.facts["peer_announced"] = False
        time.sleep(0.05)
    ctx.cast("election", {"id": election, "topic": ELECTION_TOPIC, "action": None})
    found, _ = ctx.wait_events(lambda evs: _acks(ctx, election, evs), ctx.timeout)
    _still_serving(ctx, "an election it held alone")
    if not found:
        raise Failed(
            "no worker-elect-ack for its own worker-elect in an election without peers",
            expected="its worker-elect and worker-elect-ack",
            actual="none",
        )
    return "stood, acked, still serving"


# -- security (the run as a whole) ------------------------------------------------


@check("sec.no-credentials", "SEC-6", "nothing it sent contains the broker password")
def no_credentials(ctx: Context) -> str:
    parts = urlsplit(ctx.probe.settings.url)
    password = parts.password
    if not password or len(password) < 3:
        raise Skipped("the broker URL has no password to look for")

    def leaks(text: str) -> bool:
        # A user name is no secret: guest:guest must not flag the masked
        # URL amqp://guest:**@host that Celery's report reply carries.
        if parts.username:
            text = text.replace(f"//{parts.username}:", "//:")
        return password in text

    for ev in ctx.recorder.snapshot():
        if ev.hostname == ctx.node and leaks(repr(ev.body)):
            raise Failed(
                f"its {ev.type} event contains the broker password",
                expected="no credentials",
                actual="password found",
            )
    for text in ctx.reply_texts():
        if leaks(text):
            raise Failed(
                "a reply contains the broker password", expected="no credentials", actual="found"
            )
    return "no password in its replies and events"
