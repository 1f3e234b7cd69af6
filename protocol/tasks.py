"""Celery task messages: what the winner of a ``task`` election publishes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .actions import Publish

__all__ = ["celery_task_message"]


def celery_task_message(signature: Any, origin: str, *, new_id: Callable[[], str]) -> Publish:
    """A Celery task message (protocol 2) applying ``signature``, as
    ``app.signature(task).apply_async()`` publishes it with default routing.

    ``signature`` is the dict form of a Celery signature (``task``, ``args``,
    ``kwargs``, ``options``).  Routing follows ``send_task_message``: the
    ``queue`` option (default ``celery``) through the default exchange
    ``""`` with the queue name as routing key, or an explicit ``exchange``
    and ``routing_key``.  ``new_id`` makes the task id when the options name
    none.  Raises ``ValueError`` for an unusable signature.
    """
    if isinstance(signature, str):
        signature = {"task": signature}
    if not isinstance(signature, Mapping) or not isinstance(signature.get("task"), str):
        raise ValueError("the action is not a task signature (an object with a 'task' name)")
    name: str = signature["task"]
    args = signature.get("args") or []
    kwargs = signature.get("kwargs") or {}
    options = signature.get("options") or {}
    if (
        not isinstance(args, list)
        or not isinstance(kwargs, Mapping)
        or not isinstance(options, Mapping)
    ):
        raise ValueError("task signature args/kwargs/options have the wrong types")
    task_id = _option(options, "task_id", None)
    if task_id is None:
        task_id = new_id()
    queue = _option(options, "queue", "celery")
    exchange = _option(options, "exchange", "")
    routing_key = _option(options, "routing_key", "")
    if not exchange or not routing_key:
        exchange, routing_key = "", queue
    headers: dict[str, Any] = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": repr(dict(kwargs)),
        "origin": origin,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    body = [
        list(args),
        dict(kwargs),
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    properties: dict[str, Any] = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2}
    priority = options.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        properties["priority"] = priority
    return Publish(
        "task",
        exchange,
        routing_key,
        body,
        headers,
        properties,
        declare_queue=queue if not exchange else None,
    )


_D = TypeVar("_D", str, None)


def _option(options: Mapping[str, Any], name: str, default: _D) -> str | _D:
    """A string option of the signature, or ``default``."""
    value = options.get(name)
    return value if isinstance(value, str) else default
