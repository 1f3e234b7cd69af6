"""Helpers and constants shared by the conformance checks (``checks_*`` modules)."""

from __future__ import annotations

import math
import uuid
from typing import Any, TypeGuard

from wkctl.protocol.validation import validate

from .registry import Failed, Skipped
from .runner import Context

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


def _is_clock(value: Any) -> TypeGuard[int]:
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
