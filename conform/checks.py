"""The checks, one function per observable requirement, in run order.

Each check says what it sends, what it expects and, on failure, what it
got.  Checks that need a clean effect on the node use fresh task ids and
election ids (``conform-<hex>``), so that runs can repeat against the
same node and against nodes shared with real work.

Celery workers are real peers here and must survive the run: the probe
never sends anything Celery is known to crash on (a malformed heartbeat
kills every worker of a cluster; an election with a lone gossiping worker
kills it), which is why the election check injects a synthetic peer's
``worker-elect`` first and holds the election only once the node has
acknowledged it.
"""

from __future__ import annotations

import pickle
import time
import uuid
from typing import Any

from wkctl.protocol.client import normalize_revoked
from wkctl.protocol.validation import validate

from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []

#: A method no implementation has.
UNKNOWN_METHOD = "wkctl_conform_no_such_method"
#: Election topic no node has a handler for: the winner only logs it.
ELECTION_TOPIC = "wkctl-conform"


def _fresh(tag: str) -> str:
    return f"conform-{tag}-{uuid.uuid4().hex[:12]}"


def _schema(body: Any, kind: str, what: str) -> None:
    issues = validate(body, kind)
    if issues:
        first = issues[0]
        more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        raise Failed(
            f"{what} does not validate against the {kind} schema: {first.path or '/'}: {first.message}{more}",
            expected=f"a body valid against schemas/{kind}.json",
            actual=_short(body),
        )


def _short(value: Any, limit: int = 300) -> Any:
    text = repr(value)
    return value if len(text) <= limit else text[: limit - 3] + "..."


def _is_clock(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _revoked_now(ctx: Context) -> list[str]:
    _, value = ctx.answer("revoked", {})
    if not isinstance(value, list):
        raise Failed(
            "the revoked reply is not a list of task ids",
            expected="a JSON array of task ids",
            actual=_short(value),
        )
    return [v for v in value if isinstance(v, str)]


# -- pidbox ---------------------------------------------------------------------


@check("pidbox.ping", "PIDBOX-4", "pidbox", "answers ping with {ok: pong}")
def ping(ctx: Context) -> str:
    result, value = ctx.answer("ping", {})
    if value != {"ok": "pong"}:
        raise Failed("wrong ping reply", expected={"ok": "pong"}, actual=_short(value))
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "ping-reply", "the ping reply")
    return f"replied in {reply.after * 1000:.1f} ms"


@check("pidbox.broadcast", "PIDBOX-1", "pidbox", "answers a request sent to every node")
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


@check("pidbox.ticket", "PIDBOX-3", "pidbox", "replies carry the request's ticket header")
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


@check("pidbox.reply-clock", "CLOCK-1", "pidbox", "replies carry an integer clock header")
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
            "the reply's clock header is not a non-negative integer",
            expected="a non-negative integer",
            actual=f"{value!r} ({type(value).__name__})",
        )
    return f"clock header {value}"


@check("pidbox.reply-shape", "PIDBOX-3", "pidbox", "one JSON reply per request, keyed by node name")
def reply_shape(ctx: Context) -> str:
    result = ctx.call("ping", {}, fence=True)
    mine = [r for r in result.replies]
    if not mine:
        raise Failed(
            f"no reply within {ctx.probe.timeout:g} s", expected="one reply", actual="nothing"
        )
    first = mine[0]
    if first.refused:
        raise Failed(
            "the reply is not JSON", expected="content type application/json", actual=first.refused
        )
    if not isinstance(first.body, dict) or list(first.body) != [ctx.node]:
        raise Failed(
            "the reply body is not {nodename: value}",
            expected=f"{{{ctx.node!r}: ...}}",
            actual=_short(first.body),
        )
    if len(mine) > 1:
        raise Failed(
            "more than one reply to one request",
            expected="1 reply",
            actual=f"{len(mine)} replies",
        )
    return "one reply, {nodename: value}"


@check("pidbox.destination", "PIDBOX-2", "pidbox", "ignores requests addressed to other nodes")
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


@check("pidbox.unknown-method", "PIDBOX-5", "pidbox", "keeps serving after an unknown method")
def unknown_method(ctx: Context) -> str:
    result = ctx.call(UNKNOWN_METHOD, {"x": 1}, fence=True)
    ctx.facts["unknown_reply"] = result
    if not result.fenced:
        ping = ctx.call("ping", {})
        if ping.reply_from(ctx.node) is None:
            raise Failed(
                f"the node stopped answering after a request for {UNKNOWN_METHOD!r}",
                expected="a reply to the ping that followed",
                actual="nothing",
            )
    return "still answers ping"


@check(
    "pidbox.unknown-method-error",
    "PIDBOX-6",
    "pidbox",
    "answers an unknown method with {error: ...}",
)
def unknown_method_error(ctx: Context) -> str:
    result = ctx.facts.get("unknown_reply") or ctx.call(UNKNOWN_METHOD, {"x": 1}, fence=True)
    value = result.value_from(ctx.node, default=None)
    if result.reply_from(ctx.node) is None:
        raise Failed(
            f"no reply to {UNKNOWN_METHOD!r}",
            expected='{"error": "<message>"}',
            actual="nothing",
        )
    if not (isinstance(value, dict) and isinstance(value.get("error"), str)):
        raise Failed(
            "the reply to an unknown method is not an error",
            expected='{"error": "<message>"}',
            actual=_short(value),
        )
    return f"error: {value['error'][:80]}"


@check(
    "pidbox.expired",
    "PIDBOX-7",
    "pidbox",
    "drops requests whose expires header has passed",
    deviation="DEFECT-2",
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
        raise Failed(
            "cannot tell: no reply to the ping sent after it", expected="a reply", actual="nothing"
        )
    return "expired request dropped"


@check("sec.json-only", "SEC-1", "security", "never deserializes a non-JSON request")
def json_only(ctx: Context) -> str:
    if ctx.silent:
        raise Failed(ctx.silent)
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
        raise Failed(
            "the node stopped answering after a pickle request",
            expected="a reply to the ping that followed",
            actual="nothing",
        )
    return "pickle request dropped, node still answers"


# -- clock ------------------------------------------------------------------------


@check("clock.reply", "MINGLE-3", "clock", "answers clock with {clock: N}")
def clock_reply(ctx: Context) -> str:
    result, value = ctx.answer("clock", {})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "clock-reply", "the clock reply")
    if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
        raise Failed(
            "no integer clock in the reply", expected={"clock": "<integer>"}, actual=_short(value)
        )
    ctx.probe.see_clock(value["clock"])
    return f"clock {value['clock']}"


def _clock_value(ctx: Context, **kwargs: Any) -> int:
    _, value = ctx.answer("clock", {}, **kwargs)
    if not (isinstance(value, dict) and _is_clock(value.get("clock"))):
        raise Failed(
            "the clock reply holds no integer clock",
            expected={"clock": "<integer>"},
            actual=_short(value),
        )
    ctx.probe.see_clock(value["clock"])
    return int(value["clock"])


@check("clock.forward", "CLOCK-2", "clock", "its clock moves forward")
def clock_forward(ctx: Context) -> str:
    first = _clock_value(ctx)
    second = _clock_value(ctx)
    if second <= first:
        raise Failed(
            "two consecutive clock replies did not increase",
            expected=f"a value above {first}",
            actual=second,
        )
    return f"{first} -> {second}"


@check(
    "clock.adjust-header",
    "CLOCK-3",
    "clock",
    "adjusts past the clock header of a request",
)
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
    "clock.adjust-event",
    "CLOCK-3",
    "clock",
    "adjusts past the clock of an event it receives",
)
def clock_adjust_event(ctx: Context) -> str:
    high = ctx.probe.clock + 2000
    ctx.probe.peer_heartbeat(clock=high)
    ctx.facts["peer_announced"] = True
    deadline = time.monotonic() + ctx.timeout
    value = -1
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


@check(
    "clock.single",
    "CLOCK-4",
    "clock",
    "the clock reply reflects a request's clock header",
    deviation="DEFECT-1",
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


# -- mingle ---------------------------------------------------------------------


@check("mingle.hello", "MINGLE-1", "mingle", "answers hello with its clock and revoked ids")
def hello(ctx: Context) -> str:
    result, value = ctx.answer("hello", {"from_node": ctx.probe.peer, "revoked": []})
    reply = result.reply_from(ctx.node)
    assert reply is not None
    _schema(reply.body, "hello-reply", "the hello reply")
    if not isinstance(value, dict) or not _is_clock(value.get("clock")):
        raise Failed(
            "the hello reply holds no integer clock",
            expected={"clock": "<integer>", "revoked": "[ids]"},
            actual=_short(value),
        )
    ctx.probe.see_clock(value["clock"])
    form = "mapping" if isinstance(value.get("revoked"), dict) else "list"
    return f"clock {value['clock']}, {len(normalize_revoked(value.get('revoked')))} revoked ids ({form} form)"


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


@check("mingle.merge-list", "MINGLE-2", "mingle", "merges revoked ids of a hello (list form)")
def merge_list(ctx: Context) -> str:
    # Task ids are arbitrary strings, not always UUIDs.
    ids = [str(uuid.uuid4()), _fresh("list")]
    return _merge(ctx, ids, ids, "list")


@check(
    "mingle.merge-mapping",
    "MINGLE-2",
    "mingle",
    "merges revoked ids of a hello (mapping form id -> [timestamp, id])",
)
def merge_mapping(ctx: Context) -> str:
    ids = [str(uuid.uuid4()), _fresh("map")]
    stamp = time.monotonic()
    return _merge(ctx, {i: [stamp, i] for i in ids}, ids, "mapping")


@check("mingle.own-revoked", "MINGLE-1", "mingle", "returns its own revoked ids in hello")
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


# -- revoke ---------------------------------------------------------------------


@check("revoke.adds", "REVOKE-1", "revoke", "a revoke adds the ids to its revoked set")
def revoke_adds(ctx: Context) -> str:
    single = _fresh("revoke")
    several = [_fresh("revoke"), str(uuid.uuid4())]
    if ctx.silent:
        raise Failed(ctx.silent)
    ctx.probe.cast("revoke", {"task_id": single, "terminate": False, "signal": "SIGTERM"})
    ctx.probe.cast("revoke", {"task_id": several, "terminate": False, "signal": "SIGTERM"})
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
    one at once; the wait then lasts until the heartbeats cover one full
    period (the smallest ``freq`` advertised: Celery's on-demand heartbeat
    claims ``freq`` 5 while its periodic ones say 2), or until the node has
    been silent for longer than 1.5 periods.  Everything is bounded.
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


@check("events.heartbeat", "GOSSIP-2", "events", "sends worker-heartbeat with the required fields")
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
    for key in ("sw_ident", "sw_ver"):
        if isinstance(body.get(key), str):
            ctx.facts[key] = body[key]
    return f"{len(beats)} heartbeats, freq {body.get('freq')}, sw {body.get('sw_ident')} {body.get('sw_ver')}"


@check("events.freq", "GOSSIP-2", "events", "heartbeats keep coming at the advertised freq")
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
            f"heartbeats stopped: none for {silent:.2f} s after the last one, advertised freq {beats[-1].body['freq']}",
            expected=f"a worker-heartbeat every {period:g} s",
            actual=f"{len(beats)} heartbeat(s), then silence",
        )
    gaps = ", ".join(f"{b.at - a.at:.2f}" for a, b in zip(beats, beats[1:], strict=False))
    return f"{len(beats)} heartbeats over {beats[-1].at - beats[0].at:.2f} s, gaps {gaps} s"


@check("events.envelope", "EVENT-1", "events", "events carry the hostname header and routing key")
def envelope(ctx: Context) -> str:
    events = ctx.node_events()
    if not events:
        _heartbeats(ctx)
        events = ctx.node_events()
    if not events:
        raise Skipped("the node sent no event to look at")
    for ev in events:
        _schema(ev.body, "event", f"its {ev.type} event")
        header = ev.headers.get("hostname")
        if header != ev.hostname:
            raise Failed(
                f"the hostname header of its {ev.type} event differs from the body's",
                expected=ev.hostname,
                actual=header if "hostname" in ev.headers else "<no hostname header>",
            )
        want = str(ev.type).replace("-", ".")
        if ev.routing_key and ev.routing_key != want:
            raise Failed(f"wrong routing key for {ev.type}", expected=want, actual=ev.routing_key)
    return f"{len(events)} events checked"


@check("events.clock", "CLOCK-2", "events", "the clocks of its events increase")
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
                f"an event clock is not an integer ({prev.type} -> {nxt.type})",
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


@check("events.online", "GOSSIP-1", "events", "announces itself with worker-online")
def online(ctx: Context) -> str:
    seen = ctx.node_events("worker-online")
    if not seen:
        raise Skipped(
            "the node was already running when the run began (worker-online is sent at start)"
        )
    _schema(seen[0].body, "heartbeat", "its worker-online")
    return "worker-online seen"


# -- election ---------------------------------------------------------------------


def _acks(ctx: Context, election: str, events: list[Any]) -> list[Any]:
    return [
        e
        for e in ctx.node_events("worker-elect-ack", events)
        if isinstance(e.body, dict) and e.body.get("id") == election
    ]


@check("election.ack-peer", "ELECT-2", "election", "acks a worker-elect from another node")
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
    return f"acked in {(found[0].at - ctx.started):.2f} s into the run"


@check("election.elect", "ELECT-1", "election", "stands in an election with worker-elect")
def elect(ctx: Context) -> str:
    election = ctx.facts.get("election")
    if election is None or (not ctx.facts.get("peer_acked") and ctx.is_celery is not False):
        raise Skipped(
            "no election held: the node did not acknowledge the synthetic peer's worker-elect, "
            "and an election with a lone gossiping Celery worker kills it"
        )
    ctx.probe.cast("election", {"id": election, "topic": ELECTION_TOPIC, "action": None})

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
    if body.get("topic") != ELECTION_TOPIC:
        raise Failed(
            "wrong topic in its worker-elect", expected=ELECTION_TOPIC, actual=body.get("topic")
        )
    # Behave as a peer: acknowledge its request, so that it can decide.
    ctx.probe.peer_event("worker-elect-ack", id=election)
    ctx.facts["stood"] = True
    return f"worker-elect clock {body.get('clock')}"


@check("election.ack-own", "ELECT-2", "election", "acks its own worker-elect too")
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
