"""The message kinds that have a schema, and how to tell a body's kind.

One home for the names ``wkctl validate``, ``wkctl tail --validate`` and
the node use for the spec's schemas (``hello``, ``heartbeat``,
``hello-reply``...), and for guessing a decoded body's kind
(:func:`detect_kind`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .vocab import HEARTBEAT_TYPES, request_kind

__all__ = [
    "COMMON",
    "KINDS",
    "SCHEMA_BASE",
    "UnknownKind",
    "check_kind",
    "detect_kind",
    "iter_kinds",
    "undetected_reason",
]

#: The base of every schema ``$id``; ``<base><kind>.json`` names one schema.
SCHEMA_BASE = "https://wkctl.dev/schemas/"

#: Every message kind with a schema, and a one-line description of it.
KINDS: dict[str, str] = {
    "hello": "pidbox request: Mingle hello (clock + revoked ids sync at node start)",
    "clock": "pidbox request: ask a node for its Lamport clock",
    "revoked": "pidbox request: ask a node for its revoked task ids",
    "ping": "pidbox request: liveness ping",
    "revoke": "pidbox request: revoke task id(s) on every addressed node",
    "election": "pidbox request: start an election (nodes answer with worker-elect)",
    "request": "any pidbox request: common fields + the specific schema when the method has one",
    "hello-reply": "pidbox reply to hello: {node: {clock, revoked}} (revoked list or mapping form)",
    "clock-reply": "pidbox reply to clock: {node: {clock}}",
    "revoked-reply": "pidbox reply to revoked: {node: [task_id, ...]}",
    "ping-reply": "pidbox reply to ping: {node: {ok: 'pong'}}",
    "revoke-reply": "pidbox reply to revoke (when asked for): {node: {ok: message}}",
    "stats": "pidbox request: worker statistics (Flower, the Prometheus exporters)",
    "conf": "pidbox request: the worker's configuration",
    "report": "pidbox request: installation report for bug reports",
    "active": "pidbox request: tasks being executed",
    "reserved": "pidbox request: tasks received and waiting to run",
    "scheduled": "pidbox request: eTA/countdown tasks waiting for their time",
    "registered": "pidbox request: names of the tasks the worker knows",
    "active_queues": "pidbox request: task queues the worker consumes",
    "query_task": "pidbox request: state of tasks by id",
    "memsample": "pidbox request: sample of the resident set size",
    "memdump": "pidbox request: memory samples taken so far",
    "objgraph": "pidbox request: graph of uncollected objects (debugging)",
    "enable_events": "pidbox request: start sending task events",
    "disable_events": "pidbox request: stop sending task events",
    "heartbeat-request": "pidbox request: send one worker-heartbeat now (monitors' refresh)",
    "shutdown": "pidbox request: stop the worker (a clean stop: worker-offline)",
    "terminate": "pidbox request: revoke and terminate task ids",
    "revoke_by_stamped_headers": "pidbox request: revoke tasks by stamped header values",
    "rate_limit": "pidbox request: change the rate limit of a task type",
    "time_limit": "pidbox request: change the time limits of a task type",
    "pool_grow": "pidbox request: add pool processes",
    "pool_shrink": "pidbox request: remove pool processes",
    "pool_restart": "pidbox request: restart the pool (reloading modules)",
    "autoscale": "pidbox request: change the autoscaler's bounds",
    "add_consumer": "pidbox request: start consuming a task queue",
    "cancel_consumer": "pidbox request: stop consuming a task queue",
    "stats-reply": "pidbox reply to stats: Worker statistics",
    "conf-reply": "pidbox reply to conf: The configuration: setting name -> value (JSON-safe; no secret, [CONTROL-4])",
    "report-reply": "pidbox reply to report: {ok: report text}",
    "active-reply": "pidbox reply to active: Tasks being executed: request info objects (Flower reads id, args, kwargs, worker_pid)",
    "reserved-reply": "pidbox reply to reserved: Tasks reserved: request info objects",
    "scheduled-reply": "pidbox reply to scheduled: Scheduled tasks: {eta, priority, request}",
    "registered-reply": "pidbox reply to registered: Task names, each optionally followed by ' [attr=value ...]' (celery-prometheus-exporter chains the lists)",
    "active_queues-reply": "pidbox reply to active_queues: Queues consumed: kombu Queue.as_dict(recurse=True) (Flower and the exporter read name and the flags)",
    "query_task-reply": "pidbox reply to query_task: {task_id: [state, request info]}, state one of active, reserved, scheduled, ready",
    "memsample-reply": "pidbox reply to memsample: Resident set size as text ('42.50MB'), null without psutil",
    "memdump-reply": "pidbox reply to memdump: Memory samples as text",
    "objgraph-reply": "pidbox reply to objgraph: {filename} of the graph written",
    "enable_events-reply": "pidbox reply to enable_events: {ok: message}",
    "disable_events-reply": "pidbox reply to disable_events: {ok: message}",
    "heartbeat-reply": "pidbox reply to heartbeat: null: the command sends a worker-heartbeat event instead",
    "shutdown-reply": "pidbox reply to shutdown: {ok: message} (a Celery worker stops without replying)",
    "terminate-reply": "pidbox reply to terminate: {ok: message}, as revoke",
    "revoke_by_stamped_headers-reply": "pidbox reply to revoke_by_stamped_headers: {ok: message}",
    "rate_limit-reply": "pidbox reply to rate_limit: {ok: message}",
    "time_limit-reply": "pidbox reply to time_limit: {ok: message}",
    "pool_grow-reply": "pidbox reply to pool_grow: {ok: message}",
    "pool_shrink-reply": "pidbox reply to pool_shrink: {ok: message}",
    "pool_restart-reply": "pidbox reply to pool_restart: {ok: message}",
    "autoscale-reply": "pidbox reply to autoscale: {ok: message}",
    "add_consumer-reply": "pidbox reply to add_consumer: {ok: message}",
    "cancel_consumer-reply": "pidbox reply to cancel_consumer: {ok: message}",
    "election-reply": "pidbox reply to election: null",
    "elect": "event worker-elect: one node's election request",
    "elect-ack": "event worker-elect-ack: acknowledgement of one worker-elect",
    "heartbeat": "events worker-online / worker-heartbeat / worker-offline",
    "task-event": "event task-* (standard and custom task events)",
    "event-batch": "JSON array of task events published with routing key task.multi",
    "event": "any event: common fields + the specific schema when the type is known",
    "envelope": "transport headers/properties: pidbox clock/expires/ticket, event hostname, content type",
}

#: Shared definitions, referenced by the kinds; loadable but not a message kind.
COMMON = "common"


class UnknownKind(ValueError):
    """Raised for a kind name that has no schema; the message lists valid kinds."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown message kind {kind!r}; valid kinds: {', '.join(KINDS)}")


def check_kind(kind: str) -> None:
    """Raise :class:`UnknownKind` unless ``kind`` has a schema (or is ``common``)."""
    if kind not in KINDS and kind != COMMON:
        raise UnknownKind(kind)


def iter_kinds() -> Iterator[tuple[str, str]]:
    """(kind, description) pairs in a stable order, for listings."""
    return iter(KINDS.items())


def detect_kind(body: object) -> str | None:
    """Guess the kind of a decoded body, or None where the shape is ambiguous.

    Requests are recognized by ``method`` (``request`` for methods without
    a schema of their own), events by ``type`` (``event`` for types without
    a schema of their own) and
    ``event-batch`` by being a list. A reply (``{node: value}``) is only
    classified when its values say which command it answers: a list is a
    ``revoked`` reply, ``{clock, revoked}`` a ``hello`` reply, ``{clock}`` a
    ``clock`` reply, ``{ok: "pong"}`` a ``ping`` reply; ``null`` and
    ``{error}`` values fit every reply kind, so they stay undetected.
    """
    if isinstance(body, list):
        return "event-batch"
    if not isinstance(body, dict):
        return None
    method = body.get("method")
    if isinstance(method, str) and "arguments" in body:
        return request_kind(method)
    event_type = body.get("type")
    if isinstance(event_type, str) and "hostname" in body:
        if event_type in HEARTBEAT_TYPES:
            return "heartbeat"
        if event_type == "worker-elect":
            return "elect"
        if event_type == "worker-elect-ack":
            return "elect-ack"
        if event_type.startswith("task-"):
            return "task-event"
        return "event"
    if "content_type" in body and "headers" in body and "body" not in body:
        return "envelope"
    return _detect_reply(body)


def undetected_reason(body: object) -> str:
    """Why :func:`detect_kind` found no kind: the field that is missing or
    the shape that is ambiguous, named so the user can fix the message."""
    if not isinstance(body, dict):
        return f"the body is {type(body).__name__}, not an object or a list"
    if not body:
        return "the body is an empty object"
    if "method" in body and "arguments" not in body:
        return "it has 'method' but no 'arguments' (a request needs both)"
    if "arguments" in body and not isinstance(body.get("method"), str):
        return "it has 'arguments' but no 'method' string (a request needs both)"
    if "type" in body and "hostname" not in body:
        return "it has 'type' but no 'hostname' (an event needs both)"
    if "hostname" in body and not isinstance(body.get("type"), str):
        return "it has 'hostname' but no 'type' string (an event needs both)"
    if all(v is None or (isinstance(v, dict) and "error" in v) for v in body.values()):
        return "a reply whose values are all null or {error} fits every reply kind"
    return (
        "no 'method' (request), no 'type' and 'hostname' (event), and the values do not "
        "say which command they answer (reply)"
    )


def _detect_reply(body: dict[Any, Any]) -> str | None:
    found: set[str] = set()
    for value in body.values():
        if value is None or (isinstance(value, dict) and "error" in value):
            continue
        if isinstance(value, list):
            found.add("revoked-reply")
        elif isinstance(value, dict):
            if "revoked" in value:
                found.add("hello-reply")
            elif "clock" in value:
                found.add("clock-reply")
            elif "ok" in value and value.get("ok") == "pong":
                found.add("ping-reply")
            else:
                return None
        else:
            return None
    if len(found) == 1:
        return found.pop()
    return None
