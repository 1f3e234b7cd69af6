"""The Lamport clock ([CLOCK-n]) as seen in replies and events."""

from __future__ import annotations

import time

from .checks_common import (
    POISON_JUMP,
    _celery_defect,
    _celery_nearby,
    _clock_value,
    _is_clock,
    _schema,
    _short,
    _still_serving,
)
from .registry import Failed, check
from .runner import Context

__all__: list[str] = []


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
    ctx.facts.peer_announced = True
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
    ctx.facts.peer_announced = True
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
