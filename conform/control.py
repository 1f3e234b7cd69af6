"""Checks of the control vocabulary (spec section 16, ``[CONTROL-n]``).

What Flower, the Prometheus exporters and ``celery inspect`` ask every
node.  Only harmless requests are sent: reads, ``heartbeat``,
``enable_events`` (what Flower sends every few seconds) and the limits of a
task name no node has.  Methods that would change a Celery worker (pool
sizes, consumers, ``disable_events``, ``shutdown``) are not sent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from wkctl.protocol.vocab import METHOD_ALIASES, reply_kind

from .checks_common import _fresh, _schema, _short, _still_serving
from .registry import Failed, check

if TYPE_CHECKING:
    from .runner import Context

__all__: list[str] = []

#: The methods the vocabulary check sends, with their arguments (harmless).
READS: dict[str, dict[str, Any]] = {
    "stats": {},
    "conf": {},
    "report": {},
    "active": {"safe": True},
    "reserved": {},
    "scheduled": {},
    "registered": {},
    "active_queues": {},
    "revoked": {},
    "memsample": {},
    "heartbeat": {},
}
#: What a list-valued method must answer ([CONTROL-5]).
LISTS = ("active", "reserved", "scheduled", "registered", "active_queues")

#: Celery's hidden-settings pattern ([CONTROL-4]).
_SECRET_KEY = re.compile(r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|DATABASE", re.I)
_URL_PASSWORD = re.compile(r"://[^:/@\s]*:([^@\s]+)@")
_MASKS = ("*", "")


def _value(ctx: Context, method: str, arguments: dict[str, Any]) -> Any:
    result, value = ctx.answer(method, arguments)
    reply = result.reply_from(ctx.node)
    assert reply is not None
    kind = reply_kind(method)
    if kind is not None:
        _schema(reply.body, kind, f"the {method} reply")
    return value


def _ok(value: Any, method: str) -> None:
    if isinstance(value, dict) and "error" in value:
        raise Failed(f"{method} is answered with an error", expected="its value", actual=value)


@check(
    "control.vocabulary",
    "CONTROL-1",
    "answers the inspect methods monitors poll, replies valid",
    also=("CONTROL-10",),
)
def vocabulary(ctx: Context) -> str:
    for method, arguments in READS.items():
        _ok(_value(ctx, method, arguments), method)
    _, value = ctx.answer("report", {})
    if not (isinstance(value, dict) and isinstance(value.get("ok"), str)):
        raise Failed("report is not {ok: text}", expected={"ok": "<text>"}, actual=_short(value))
    return f"{len(READS)} methods answered, every reply valid"


@check("control.aliases", "CONTROL-2", "answers dump_* aliases as their method")
def aliases(ctx: Context) -> str:
    for alias, method in sorted(METHOD_ALIASES.items()):
        if method == "conf":  # a value, compared below
            continue
        alias_value = _value(ctx, alias, {})
        method_value = _value(ctx, method, {})
        if type(alias_value) is not type(method_value):
            raise Failed(
                f"{alias} is not answered as {method}",
                expected=_short(method_value),
                actual=_short(alias_value),
            )
    conf, dump = _value(ctx, "conf", {}), _value(ctx, "dump_conf", {})
    if conf != dump:
        raise Failed("dump_conf differs from conf", expected=_short(conf), actual=_short(dump))
    return f"{len(METHOD_ALIASES)} aliases answered as their methods"


@check("control.stats", "CONTROL-3", "stats carries what Flower and the exporters index")
def stats(ctx: Context) -> str:
    value = _value(ctx, "stats", {})
    _ok(value, "stats")
    processes = value["pool"].get("processes", [])
    return f"pool with {len(processes)} process(es), clock {value['clock']}"


def _secrets(value: Any, path: str = "") -> list[str]:
    """Where ``value`` carries a secret in clear: an unmasked URL password
    or an unmasked value under a secret-looking key."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}/{key}"
            if (
                _SECRET_KEY.search(str(key))
                and isinstance(item, str)
                and item.strip("*") not in _MASKS
            ):
                found.append(where)
            else:
                found.extend(_secrets(item, where))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(_secrets(item, f"{path}/{i}"))
    elif isinstance(value, str):
        for match in _URL_PASSWORD.finditer(value):
            if match.group(1).strip("*"):
                found.append(path or "/")
    return found


@check(
    "control.no-secret",
    "CONTROL-4",
    "conf, report and stats carry no secret",
    deviation="DEFECT-18",
)
def no_secret(ctx: Context) -> str:
    found = []
    values = {method: ctx.answer(method, {})[1] for method in ("conf", "report", "stats")}
    for method, value in values.items():
        found += [f"{method}{p}" for p in _secrets(value)]
    if found:
        raise Failed(
            "a reply carries a secret in clear",
            expected="passwords and secret settings masked",
            actual=", ".join(found[:5]),
        )
    return "no password or secret setting in clear"


@check(
    "control.task-lists",
    "CONTROL-5",
    "task lists and query_task answer lists and an object, never an error",
)
def task_lists(ctx: Context) -> str:
    sizes = []
    for method in LISTS:
        value = _value(ctx, method, {})
        if not isinstance(value, list):
            raise Failed(f"{method} is not a list", expected="a JSON array", actual=_short(value))
        sizes.append(f"{method} {len(value)}")
    unknown = _fresh("task")
    value = _value(ctx, "query_task", {"ids": [unknown]})
    if not isinstance(value, dict) or unknown in value:
        raise Failed(
            "query_task of an unknown id is not an empty object",
            expected={},
            actual=_short(value),
        )
    return ", ".join(sizes)


@check("control.events", "CONTROL-6", "acknowledges enable_events with {ok: text}")
def events(ctx: Context) -> str:
    value = _value(ctx, "enable_events", {})
    if not (isinstance(value, dict) and isinstance(value.get("ok"), str)):
        raise Failed("enable_events is not acknowledged", expected={"ok": "<text>"}, actual=value)
    return f"ok: {_short(value['ok'], 80)}"


@check(
    "control.no-meaning",
    "CONTROL-7",
    "a limit of an unknown task is answered with an error, and the node keeps serving",
)
def no_meaning(ctx: Context) -> str:
    task = _fresh("task")
    for method, arguments in (
        ("rate_limit", {"task_name": task, "rate_limit": "1/s"}),
        ("time_limit", {"task_name": task, "soft": 10.0, "hard": 20.0}),
    ):
        value = _value(ctx, method, arguments)
        if not (isinstance(value, dict) and isinstance(value.get("error"), str)):
            raise Failed(
                f"{method} of an unknown task is not answered with an error",
                expected={"error": "<reason>"},
                actual=_short(value),
            )
    _still_serving(ctx, "rate_limit/time_limit of an unknown task")
    return "both answered {error: ...}; still answering ping"
