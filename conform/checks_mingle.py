"""Mingle ([MINGLE-n]): the node's answers to ``hello``."""

from __future__ import annotations

import time
import uuid
from typing import Any

from wkctl.protocol.replies import normalize_revoked

from .checks_common import (
    _clock_value,
    _fresh,
    _is_clock,
    _revoked_now,
    _schema,
    _short,
    _still_serving,
)
from .registry import Failed, Skipped, check
from .runner import Context

__all__: list[str] = []


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
