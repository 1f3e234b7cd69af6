"""Hostile input on the control channel: JSON only, schemas, bounds ([SEC-n])."""

from __future__ import annotations

import pickle
from typing import Any

from .checks_common import _fresh, _revoked_now, _short, _still_serving
from .registry import Failed, check
from .runner import Context

__all__: list[str] = []


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
