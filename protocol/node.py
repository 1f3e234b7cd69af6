"""The reference node's public import path (``wkctl.protocol.node``).

The node is split by concept; this module re-exports the names it always
had, so ``from wkctl.protocol.node import Node, NodeConfig, Publish`` keeps
working:

* :mod:`wkctl.protocol.core`: :class:`Node`, the sans-IO state machine
  (Mingle, Gossip, elections);
* :mod:`wkctl.protocol.commands`: the pidbox control commands it answers;
* :mod:`wkctl.protocol.worker_events`: the worker events it takes in
  (membership, elections);
* :mod:`wkctl.protocol.lifecycle`: its states and legal transitions;
* :mod:`wkctl.protocol.actions`: what its calls return;
* :mod:`wkctl.protocol.inbound`: inbound messages and their checks;
* :mod:`wkctl.protocol.config`: :class:`NodeConfig` and :class:`Environment`;
* :mod:`wkctl.protocol.tasks`: Celery task messages (the ``task`` topic);
* :mod:`wkctl.protocol.host`: what a real process supplies (not core).
"""

from __future__ import annotations

from .actions import Action, Elected, Log, MemberChanged, Publish, ShutdownRequested, Synced
from .commands import MAX_LOGGED_METHODS
from .config import DEFAULT_REJECT_LOG_INTERVAL, Environment, NodeConfig
from .core import Node
from .host import default_nodename
from .inbound import (
    DETAIL_LIMIT,
    MAX_REJECT_SENDERS,
    Decoded,
    Inbound,
    RejectLimiter,
    schema_problem,
)
from .lifecycle import LifecycleError, NodeState
from .tasks import celery_task_message

__all__ = [
    "DEFAULT_REJECT_LOG_INTERVAL",
    "DETAIL_LIMIT",
    "MAX_LOGGED_METHODS",
    "MAX_REJECT_SENDERS",
    "Action",
    "Decoded",
    "Elected",
    "Environment",
    "Inbound",
    "LifecycleError",
    "Log",
    "MemberChanged",
    "Node",
    "NodeConfig",
    "NodeState",
    "Publish",
    "RejectLimiter",
    "ShutdownRequested",
    "Synced",
    "celery_task_message",
    "default_nodename",
    "schema_problem",
]
