"""A launched node's start (``--launch``): its own Mingle round ([MINGLE-n])."""

from __future__ import annotations

from typing import Any

from wkctl.protocol.replies import normalize_revoked

from .checks_common import _clock_value, _is_clock, _revoked_now, _schema, _short
from .registry import Failed, Skipped, check
from .runner import SYNC_CLOCK, SYNC_CLOCK_ERROR, SYNC_CLOCK_TOO_BIG, Context

__all__: list[str] = []


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
