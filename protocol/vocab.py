"""The protocol's vocabulary, in one place: message kinds, event types,
transports, software identities and how a peer is classified.

Every other module imports these names from here instead of spelling the
strings again, so that a word of the protocol has one definition and one
type (``Literal`` for the closed sets).  Nothing here does I/O or keeps
state: it is data and two pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

__all__ = [
    "CELERY_GOSSIP_DRIVERS",
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

#: The pidbox methods of the worker-to-worker protocol that have a schema
#: of their own (``schemas/<method>.json``); any other method is checked
#: against the generic ``request`` schema.
RequestMethod = Literal["hello", "clock", "revoked", "ping", "revoke", "election"]
REQUEST_METHODS: Final[frozenset[str]] = frozenset(get_args(RequestMethod))

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
