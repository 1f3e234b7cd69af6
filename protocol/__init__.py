"""wkctl's reference library of the Celery worker-to-worker protocol.

The protocol rules live in small sans-IO modules (no broker, thread or socket
inside, time passed in explicitly): :mod:`.clock`, :mod:`.revoked`,
:mod:`.election`, :mod:`.mingle`, :mod:`.gossip`, :mod:`.state` and
:mod:`.node`, which combines them.  :mod:`.binding` drives nodes over a real
kombu connection, :mod:`.client` is the asking side (``hello``, event
streams) over the sans-IO observers :mod:`.replies` (reply collection) and
:mod:`.observers` (event decoding, elections seen from outside), :mod:`.validation` checks bodies against
the JSON Schemas, and :mod:`.bootsteps` offers Celery's ``Mingle`` and
``Gossip`` classes over the same core.

Names are imported on first use, so that ``import wkctl.protocol`` (and the
start-up of every ``wkctl`` command) stays cheap.
"""

# ruff: noqa: F401  (the TYPE_CHECKING imports below exist for type checkers only)
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> submodule that defines it ("module:attribute" when the name differs)
_EXPORTS: dict[str, str] = {
    # broker and wire
    "BrokerSettings": "broker",
    "embedded_settings": "broker",
    "mask_url": "broker",
    "Limits": "wire",
    "Names": "wire",
    "Rejected": "wire",
    "decode_body": "wire",
    # validation
    "KINDS": "validation",
    "Issue": "validation",
    "UnknownKind": "validation",
    "detect_kind": "validation",
    "is_valid": "validation",
    "validate": "validation",
    "load_schema": "validation",
    "export_schemas": "validation",
    "schema_files": "validation",
    # sans-IO core
    "LamportClock": "clock",
    "ClockVerdict": "clock",
    "RevokedSet": "revoked",
    "MergeResult": "revoked",
    "Decision": "election",
    "ElectRequest": "election",
    "Elections": "election",
    "pick_winner": "election",
    "Replayed": "election",
    "Membership": "gossip",
    "WorkerInfo": "gossip",
    "Change": "gossip",
    "MingleSession": "mingle",
    "SyncResult": "mingle",
    "Node": "node",
    "NodeConfig": "node",
    "Inbound": "node",
    "Publish": "node",
    "Log": "node",
    "Synced": "node",
    "Elected": "node",
    "MemberChanged": "node",
    "Decoded": "node",
    "ShutdownRequested": "node",
    "NodeFacts": "control",
    "ProcessInfo": "control",
    "Action": "actions",
    "Environment": "config",
    "Callbacks": "gossip",
    "LifecycleError": "lifecycle",
    "NodeState": "lifecycle",
    "SharedClock": "host",
    "local_environment": "host",
    "State": "state",
    "ClusterState": "state_core",
    "CoreWorker": "state_worker:Worker",  # the core's worker record (State's Worker wraps it)
    "LRUCache": "state_lru",
    "Worker": "state",
    "Task": "state",
    # kombu binding, client side, Celery-facing steps
    "Binding": "binding",
    "NodeHandle": "binding",
    "run_node": "binding",
    "BrokerUnavailable": "binding",
    "NodeNameInUse": "binding",
    "Client": "client",
    "EventStream": "client",
    "StreamNotice": "client",
    # sans-IO observers of the asking side (no kombu needed)
    "Collected": "replies",
    "ReplyCollector": "replies",
    "hello_table": "replies",
    "ElectionWatch": "observers",
    "ElectionOutcome": "observers",
    "election_participants": "observers",
    "decode_events": "observers",
    "prepare_event": "observers",
    "Backoff": "reconnect",
    "Mingle": "bootsteps",
    "Gossip": "bootsteps",
    # vocabulary
    "PeerKind": "vocab",
    "peer_kind": "vocab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = module.partition(":")  # "module:name" exports under another name
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .actions import Action
    from .binding import Binding, BrokerUnavailable, NodeHandle, NodeNameInUse, run_node
    from .bootsteps import Gossip, Mingle
    from .broker import BrokerSettings, embedded_settings, mask_url
    from .client import Client, EventStream, StreamNotice
    from .clock import ClockVerdict, LamportClock
    from .config import Environment
    from .control import NodeFacts, ProcessInfo
    from .election import Decision, Elections, ElectRequest, Replayed, pick_winner
    from .gossip import Callbacks, Change, Membership, WorkerInfo
    from .host import SharedClock, local_environment
    from .lifecycle import LifecycleError, NodeState
    from .mingle import MingleSession, SyncResult
    from .node import (
        Decoded,
        Elected,
        Inbound,
        Log,
        MemberChanged,
        Node,
        NodeConfig,
        Publish,
        ShutdownRequested,
        Synced,
    )
    from .observers import (
        ElectionOutcome,
        ElectionWatch,
        decode_events,
        election_participants,
        prepare_event,
    )
    from .reconnect import Backoff
    from .replies import Collected, ReplyCollector, hello_table
    from .revoked import MergeResult, RevokedSet
    from .state import State, Task, Worker
    from .state_core import ClusterState
    from .state_lru import LRUCache
    from .state_worker import Worker as CoreWorker
    from .validation import (
        KINDS,
        Issue,
        UnknownKind,
        detect_kind,
        export_schemas,
        is_valid,
        load_schema,
        schema_files,
        validate,
    )
    from .vocab import PeerKind, peer_kind
    from .wire import Limits, Names, Rejected, decode_body
