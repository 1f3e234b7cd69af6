"""The protocol's vocabulary, in one place: message kinds, event types,
transports, software identities and how a peer is classified.

Every other module imports these names from here instead of spelling the
strings again, so that a word of the protocol has one definition and one
type (``Literal`` for the closed sets).  Nothing here does I/O or keeps
state: it is data and a few pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

__all__ = [
    "CELERY_GOSSIP_DRIVERS",
    "CELERY_METHODS",
    "CONTROL_METHODS",
    "ControlMethod",
    "HEARTBEAT_REQUEST_KIND",
    "INSPECT_METHODS",
    "InspectMethod",
    "METHOD_ALIASES",
    "METHOD_SIGNATURES",
    "canonical_method",
    "reply_kind",
    "request_kind",
    "CELERY_MINGLE_DRIVERS",
    "CELERY_SW_IDENT",
    "ELECT_ACK_EVENT",
    "ELECT_EVENT",
    "EVENT_TYPES",
    "FANOUT_EVENT_TRANSPORTS",
    "GOSSIP_TRANSPORTS",
    "HARDENED_FIELD",
    "HEARTBEAT_TYPES",
    "PER_NODE_PIDBOX_TRANSPORTS",
    "PeerKind",
    "REDIS_TRANSPORTS",
    "REQUEST_METHODS",
    "RequestMethod",
    "TASK_EVENT_TYPES",
    "TaskEventType",
    "WKCTL_EXTENSION_DRIVERS",
    "WKCTL_SW_IDENT",
    "WorkerEventType",
    "peer_kind",
]

# -- pidbox requests -------------------------------------------------------

#: Inspect methods Celery 5.x workers answer (``celery/worker/control.py``
#: of 5.4 and 5.7 register the same set; spec [CONTROL-1]).
InspectMethod = Literal[
    "active",
    "active_queues",
    "clock",
    "conf",
    "hello",
    "memdump",
    "memsample",
    "objgraph",
    "ping",
    "query_task",
    "registered",
    "report",
    "reserved",
    "revoked",
    "scheduled",
    "stats",
]
#: Control methods Celery 5.x workers answer.
ControlMethod = Literal[
    "add_consumer",
    "autoscale",
    "cancel_consumer",
    "disable_events",
    "election",
    "enable_events",
    "heartbeat",
    "pool_grow",
    "pool_restart",
    "pool_shrink",
    "rate_limit",
    "revoke",
    "revoke_by_stamped_headers",
    "shutdown",
    "terminate",
    "time_limit",
]
INSPECT_METHODS: Final[frozenset[str]] = frozenset(get_args(InspectMethod))
CONTROL_METHODS: Final[frozenset[str]] = frozenset(get_args(ControlMethod))
#: Every pidbox method of Celery 5.x.
CELERY_METHODS: Final[frozenset[str]] = INSPECT_METHODS | CONTROL_METHODS
#: Celery's alias names (``Panel.register(alias=...)``) -> their method.
METHOD_ALIASES: Final[Mapping[str, str]] = {
    "dump_active": "active",
    "dump_conf": "conf",
    "dump_reserved": "reserved",
    "dump_revoked": "revoked",
    "dump_schedule": "scheduled",
    "dump_tasks": "registered",
}
#: Celery's command-line signatures (``Panel.meta``: ``args`` and
#: ``variadic``): the argument names positional values fill, in order, and
#: the name that collects the rest (``celery inspect query_task ID...``).
METHOD_SIGNATURES: Final[Mapping[str, tuple[tuple[str, ...], str | None]]] = {
    "add_consumer": (("queue", "exchange", "exchange_type", "routing_key"), None),
    "autoscale": (("max", "min"), None),
    "cancel_consumer": (("queue",), None),
    "conf": (("with_defaults",), None),
    "memdump": (("samples",), None),
    "objgraph": (("type", "num", "max_depth"), None),
    "pool_grow": (("n",), None),
    "pool_shrink": (("n",), None),
    "query_task": ((), "ids"),
    "rate_limit": (("task_name", "rate_limit"), None),
    "registered": ((), "taskinfoitems"),
    "revoke": ((), "task_id"),
    "revoke_by_stamped_headers": ((), "headers"),
    "terminate": (("signal",), "task_id"),
    "time_limit": (("task_name", "soft", "hard"), None),
}
#: The schema kind of the ``heartbeat`` command (``heartbeat`` names the
#: worker events' schema).
HEARTBEAT_REQUEST_KIND: Final = "heartbeat-request"

#: The pidbox methods that have a schema of their own named after them
#: (``schemas/<method>.json``); ``heartbeat``'s is ``heartbeat-request``,
#: aliases use their method's, any other method the generic ``request``.
RequestMethod = Literal[InspectMethod, ControlMethod]
REQUEST_METHODS: Final[frozenset[str]] = CELERY_METHODS - {"heartbeat"}


def canonical_method(method: str) -> str:
    """The method an alias names (``dump_conf`` -> ``conf``); others unchanged."""
    return METHOD_ALIASES.get(method, method)


def request_kind(method: str) -> str:
    """The schema kind of a request for ``method`` (``request`` when unknown)."""
    name = canonical_method(method)
    if name == "heartbeat":
        return HEARTBEAT_REQUEST_KIND
    return name if name in REQUEST_METHODS else "request"


def reply_kind(method: str) -> str | None:
    """The schema kind of a reply to ``method`` (``<method>-reply``), None
    for a method Celery does not have."""
    name = canonical_method(method)
    return f"{name}-reply" if name in CELERY_METHODS else None


# -- events ------------------------------------------------------------------

#: The worker events Gossip and Celery's ``Heart`` send (the ``heartbeat``
#: schema covers all three).
WorkerEventType = Literal["worker-online", "worker-heartbeat", "worker-offline"]
HEARTBEAT_TYPES: Final[frozenset[str]] = frozenset(get_args(WorkerEventType))

#: One node's election request, and the acknowledgement of one request.
ELECT_EVENT: Final = "worker-elect"
ELECT_ACK_EVENT: Final = "worker-elect-ack"

#: The task events Celery sends (``Task.send_event`` may add custom
#: ``task-<name>`` ones).
TaskEventType = Literal[
    "task-sent",
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
    "task-rejected",
]
TASK_EVENT_TYPES: Final[frozenset[str]] = frozenset(get_args(TaskEventType))
#: Every event type a Celery cluster sends on its own.
EVENT_TYPES: Final[frozenset[str]] = (
    HEARTBEAT_TYPES | TASK_EVENT_TYPES | frozenset({ELECT_EVENT, ELECT_ACK_EVENT})
)

# -- software identities -----------------------------------------------------

#: ``sw_ident`` of Celery workers (``celery.worker.state.SOFTWARE_INFO``).
CELERY_SW_IDENT: Final = "py-celery"
#: ``sw_ident`` of wkctl's reference nodes.
WKCTL_SW_IDENT: Final = "wkctl"
#: The field a Celery worker hardened with ``wkctl.celery.install(app)``
#: adds to its worker events (its value: the wkctl version); such a worker
#: keeps Celery's ``sw_ident``.
HARDENED_FIELD: Final = "wkctl_ver"

#: What a peer is, as far as the protocol's rules and Celery's defects go:
#: a stock Celery worker, a Celery worker running wkctl's steps, a wkctl
#: reference node, or anything else (another implementation).
PeerKind = Literal["celery", "hardened", "wkctl", "other"]


def peer_kind(fields: Mapping[str, Any]) -> PeerKind:
    """Classify a peer from the fields of one of its worker events."""
    ident = fields.get("sw_ident")
    if ident == CELERY_SW_IDENT:
        return "hardened" if isinstance(fields.get(HARDENED_FIELD), str) else "celery"
    if ident == WKCTL_SW_IDENT:
        return "wkctl"
    return "other"


# -- transports --------------------------------------------------------------
# Two kinds of names: URL schemes (``amqps``, ``rediss``, ``sentinel``, as
# in a broker URL and in BrokerSettings.transport) and kombu driver types
# (``amqp``, ``redis``: what Celery's bootsteps compare with).

#: URL schemes on which Celery runs Gossip (its ``compatible_transports``
#: are the driver types ``amqp`` and ``redis``).
GOSSIP_TRANSPORTS: Final[frozenset[str]] = frozenset(
    {"amqp", "amqps", "pyamqp", "redis", "rediss", "sentinel"}
)
#: URL schemes whose exchanges route across processes only by fanout:
#: Celery turns its topic event exchange into a fanout one on them (and
#: wkctl does the same on its embedded filesystem broker).
FANOUT_EVENT_TRANSPORTS: Final[frozenset[str]] = frozenset(
    {"redis", "rediss", "gcpubsub", "filesystem", "sentinel"}
)
#: URL schemes served by kombu's Redis transport.
REDIS_TRANSPORTS: Final[frozenset[str]] = frozenset({"redis", "rediss", "sentinel"})
#: URL schemes with real exchanges, where each node has its own pidbox queue.
PER_NODE_PIDBOX_TRANSPORTS: Final[frozenset[str]] = frozenset(
    {"amqp", "amqps", "pyamqp", "librabbitmq"}
)

#: Driver types Celery's ``Mingle`` step runs on.
CELERY_MINGLE_DRIVERS: Final[frozenset[str]] = frozenset({"amqp", "redis", "gcpubsub"})
#: Driver types Celery's ``Gossip`` step runs on.
CELERY_GOSSIP_DRIVERS: Final[frozenset[str]] = frozenset({"amqp", "redis"})
#: Driver types wkctl runs Mingle and Gossip on beyond Celery's: the
#: embedded ``filesystem`` broker routes fanout exchanges across local
#: processes (an extension; see [TRANSPORT-10]).
WKCTL_EXTENSION_DRIVERS: Final[frozenset[str]] = frozenset({"filesystem"})
