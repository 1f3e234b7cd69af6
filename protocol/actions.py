"""What a node's every call returns: the actions the host performs.

:class:`Publish` (a message to send), :class:`Log` (a log record) and the
notifications :class:`Synced`, :class:`Elected`, :class:`MemberChanged` and
:class:`ShutdownRequested`.  The core never calls into user code: a host
that wants callbacks (Celery's ``gossip.on.node_join``, election topic
handlers) runs them when it performs these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .election import Decision
from .gossip import Change
from .mingle import SyncResult

__all__ = [
    "Action",
    "Elected",
    "Log",
    "MemberChanged",
    "PublishTarget",
    "Publish",
    "ShutdownRequested",
    "Synced",
]

#: Which declared exchange a :class:`Publish` goes to.
PublishTarget = Literal["event", "pidbox", "reply", "task"]


@dataclass(frozen=True)
class Publish:
    """A message to publish.

    ``target`` tells the binding which declared exchange to use: ``event``
    (the event exchange), ``pidbox`` (the broadcast exchange), ``reply``
    (the reply exchange) or ``task`` (a Celery task message: ``exchange``
    ``""`` routes straight to ``declare_queue``).
    """

    target: PublishTarget
    exchange: str
    routing_key: str
    body: Any
    headers: dict[str, Any]
    properties: dict[str, Any] = field(default_factory=dict)
    declare_queue: str | None = None


@dataclass(frozen=True)
class Log:
    """A log record (``level`` is a :mod:`logging` level number)."""

    level: int
    message: str


@dataclass(frozen=True)
class Synced:
    """The Mingle round finished (the node is synced; heartbeats start)."""

    result: SyncResult


@dataclass(frozen=True)
class Elected:
    """This node decided an election.  When it won and the topic is one of
    :attr:`Node.host_topics`, the host runs the topic's action."""

    decision: Decision


@dataclass(frozen=True)
class MemberChanged:
    """A peer joined, left or was lost."""

    change: Change


@dataclass(frozen=True)
class ShutdownRequested:
    """The ``shutdown`` command addressed this node: the host stops it
    cleanly (``worker-offline``) and, for a node run alone, exits 0."""

    reason: str


Action = Publish | Log | Synced | Elected | MemberChanged | ShutdownRequested
