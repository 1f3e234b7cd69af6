"""Which event fields a ``Worker`` / ``Task`` may take, and in what type.

Celery copies every field of an event onto its objects, so a field named
like a method or property (``id`` from ``worker-elect``, ``children``,
``worker``) replaces or collides with it, and a mistyped ``timestamp``
raises later.  These rules drop such fields instead; the ``*_ok`` checks
are the fast path for the common, well-formed event.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

__all__ = (
    "number",
    "WORKER_RESERVED",
    "WORKER_NUMERIC",
    "clean_worker_fields",
    "worker_fields_ok",
    "TASK_RESERVED",
    "TASK_STR",
    "TASK_NUMERIC",
    "clean_task_fields",
    "task_fields_ok",
    "task_values_ok",
)


def number(v: Any) -> float | int | None:
    """``v`` as a finite real number, or ``None`` when it is not one.

    JSON decoders may hand out ``Decimal``; booleans, strings, NaN and
    infinities are not timestamps, clocks or frequencies.
    """
    t = v.__class__
    if t is float:
        return v if v - v == 0.0 else None
    if t is int:
        return v  # type: ignore[no-any-return]
    if t is Decimal:
        try:
            f = float(v)
        except (ValueError, OverflowError):  # pragma: no cover - float() of Decimal
            return None
        return f if f - f == 0.0 else None
    if t is bool or v is None:
        return None
    if isinstance(v, (int, float)):  # subclasses of int/float other than bool
        return number(float(v))
    return None


def _as_dict(fields: Any) -> dict[Any, Any] | None:
    if isinstance(fields, dict):
        return fields
    try:
        return dict(fields)
    except (TypeError, ValueError):
        return None


# -- worker events ----------------------------------------------------------
#: Event fields never copied onto a Worker: they would replace its methods,
#: its heartbeat list or its class settings, or collide with read-only
#: properties (Celery raises AttributeError on ``id`` from worker-elect).
WORKER_RESERVED: Final[frozenset[str]] = frozenset(
    {
        "id",
        "alive",
        "status_string",
        "heartbeat_expires",
        "heartbeats",
        "event",
        "update",
        "is_alive",
        "expire_window",
        "heartbeat_max",
        "_fields",
    }
)
#: Worker fields that must be numbers (or absent / ``None``) to be kept.
WORKER_NUMERIC: Final[tuple[str, ...]] = (
    "clock",
    "pid",
    "active",
    "processed",
    "timestamp",
    "local_received",
    "utcoffset",
)


def clean_worker_fields(fields: Any) -> dict[str, Any]:
    """Copy of a worker event without reserved names and mistyped values."""
    out: dict[str, Any] = {}
    source = _as_dict(fields)
    if source is None:
        return out
    for k, v in source.items():
        if k.__class__ is not str or k in WORKER_RESERVED:
            continue
        if k == "freq":
            v = number(v)
            if v is None or v <= 0:
                continue
        elif k in WORKER_NUMERIC:
            if v is not None:
                v = number(v)
                if v is None:
                    continue
        elif k == "hostname" and v is not None and v.__class__ is not str:
            continue
        out[k] = v
    return out


def worker_fields_ok(fields: Mapping[str, Any]) -> bool:
    """Fast check that a worker event can be copied as is (the common case)."""
    if not WORKER_RESERVED.isdisjoint(fields):
        return False
    get = fields.get
    v = get("freq", 1.0)
    t = v.__class__
    if t is float:
        if v - v or v <= 0:
            return False
    elif t is not int or v <= 0:
        return False
    for k in WORKER_NUMERIC:
        v = get(k)
        t = v.__class__
        if t is int or v is None:
            continue
        if t is not float or v - v:
            return False
    return True


# -- task events ------------------------------------------------------------
#: Event fields never merged into a Task: they would shadow its methods or
#: collide with its properties / internal links (Celery lets ``children`` or
#: ``worker`` replace the real objects and then crashes on them).
TASK_RESERVED: Final[frozenset[str]] = frozenset(
    {
        "id",
        "origin",
        "ready",
        "parent",
        "root",
        "children",
        "worker",
        "cluster_state",
        "event",
        "info",
        "as_dict",
        "merge_rules",
        "_fields",
        "_info_fields",
    }
)
#: Task fields that must be strings (or ``None``) to be kept.
TASK_STR: Final[tuple[str, ...]] = ("hostname", "name", "parent_id", "root_id", "state")
#: Task fields that must be numbers (or ``None``) to be kept.
TASK_NUMERIC: Final[tuple[str, ...]] = ("timestamp", "local_received", "clock")


def clean_task_fields(fields: Any) -> dict[str, Any]:
    """Copy of a task event without reserved names and mistyped values."""
    out: dict[str, Any] = {}
    source = _as_dict(fields)
    if source is None:
        return out
    for k, v in source.items():
        if k.__class__ is not str or k in TASK_RESERVED:
            continue
        if k in TASK_NUMERIC:
            if v is not None:
                v = number(v)
                if v is None:
                    continue
        elif k in TASK_STR:
            if v is not None and not isinstance(v, str):
                continue
        elif k == "uuid" and v.__class__ is not str:
            continue
        out[k] = v
    return out


def task_fields_ok(fields: Mapping[str, Any]) -> bool:
    """Fast check that a task event can be merged as is (the common case)."""
    get = fields.get
    return task_values_ok(
        get("hostname"), get("timestamp"), get("local_received"), get("clock"), fields
    )


def task_values_ok(
    hostname: Any, timestamp: Any, local_received: Any, clock: Any, fields: Mapping[str, Any]
) -> bool:
    """:func:`task_fields_ok` given the values a caller has read from ``fields`` anyway.

    Numbers must be finite (``int``, ``float`` or ``None``), the names strings
    or ``None``, and no field may be reserved.
    """
    get = fields.get
    return (
        (hostname.__class__ is str or hostname is None)
        and (
            (timestamp.__class__ is float and not timestamp - timestamp)
            or timestamp.__class__ is int
            or timestamp is None
        )
        and (
            (local_received.__class__ is float and not local_received - local_received)
            or local_received.__class__ is int
            or local_received is None
        )
        and (
            clock.__class__ is int
            or clock is None
            or (clock.__class__ is float and not clock - clock)
        )
        and TASK_RESERVED.isdisjoint(fields)
        and ((v := get("name")) is None or v.__class__ is str)
        and ((v := get("parent_id")) is None or v.__class__ is str)
        and ((v := get("root_id")) is None or v.__class__ is str)
        and ((v := get("state")) is None or v.__class__ is str)
    )
