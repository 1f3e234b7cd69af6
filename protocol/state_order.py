"""Time order of tasks as Celery's ``tasks_by_time`` defines it.

Each task keeps two keys, ``(clock, timestamp, seq, origin)`` of its
earliest and latest event (``seq`` = arrival number, so ties keep arrival
order).  Celery orders by Lamport clock (then origin) when both events have
one, else by timestamp; :func:`ordered` sorts in C when every key has a
clock and falls back to that mixed comparison otherwise.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from functools import cmp_to_key
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from .state_task import Task

__all__ = ("origin_str", "before", "ordered")

#: Time key of an event: ``(clock, timestamp, seq, origin)``.
TimeKey = tuple[Any, Any, int, Any]


def origin_str(origin: Any) -> str:
    """The sender of an event as Celery compares it: a client name or ``hostname.pid``."""
    if origin is None:
        return ""
    if origin.__class__ is str:
        return origin
    return f"{origin.hostname}.{origin.pid}"


def before(clock: Any, ts: Any, origin: Any, key: tuple[Any, ...]) -> bool:
    """Is an event (clock, ts, origin) strictly before ``key`` in Celery's order?"""
    c0 = key[0]
    if clock and c0:
        if clock != c0:
            return bool(clock < c0)
        return origin_str(origin) < origin_str(key[3])
    return bool((ts or 0.0) < (key[1] or 0.0))


def _row_cmp(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
    """Celery's ``timetuple`` order: clock (then origin) if both have one, else timestamp.

    Ties fall back to arrival (``seq``), as an insort into a sorted list does.
    Row layout: ``(clock, origin, seq, timestamp, task)``.
    """
    ca, cb = a[0], b[0]
    if ca and cb:
        if ca != cb:
            return -1 if ca < cb else 1
        oa, ob = a[1], b[1]
        if oa != ob:
            return -1 if oa < ob else 1
    else:
        ta, tb = a[3] or 0.0, b[3] or 0.0
        if ta != tb:
            return -1 if ta < tb else 1
    return -1 if a[2] < b[2] else (1 if a[2] > b[2] else 0)


def ordered(tasks: Iterable[Task], reverse: bool, limit: int | None = None) -> list[Task]:
    """Tasks sorted by their latest (``reverse``) or earliest event key.

    Rows are ``(clock, origin, seq, timestamp, task)``: when every key has a
    clock (the normal case, the receiver fills it in) plain tuple order is
    Celery's order and the sort runs in C; otherwise Celery's mixed
    clock/timestamp comparison is applied.  ``seq`` is unique, so ``task``
    itself is never compared.  Tasks without events are left out.
    """
    origins: dict[int, str] = {}
    rows: list[tuple[Any, str, int, Any, Task]] = []
    append = rows.append
    all_clocks = True
    for task in tasks:
        key = task._last if reverse else task._first
        if key is None:
            continue
        clock, ts, seq, origin = key
        if origin.__class__ is str:
            o: str = origin
        else:
            found = origins.get(id(origin))
            o = origins[id(origin)] = origin_str(origin) if found is None else found
        if not clock:
            all_clocks = False
        append((clock, o, seq, ts, task))
    if all_clocks:
        try:
            if limit is not None and limit < len(rows):
                pick = heapq.nlargest if reverse else heapq.nsmallest
                rows = pick(limit, rows)
            else:
                rows.sort(reverse=reverse)
            return [r[4] for r in rows]
        except TypeError:  # pragma: no cover - clocks are numbers by construction
            pass
    rows.sort(key=cmp_to_key(_row_cmp), reverse=reverse)
    return [r[4] for r in rows[:limit]]
