"""A node's lifecycle: the states, the legal transitions, the error.

::

    NEW --start--> MINGLING --round over--> ONLINE --stop--> STOPPED
    NEW --start (no Mingle)---------------> ONLINE
    ONLINE --reconnected (Mingle)--> MINGLING          (and MINGLING --stop--> STOPPED)

A call that does not fit the state (``start()`` twice, input before
``start()``, input after ``stop()``) is the host's bug, not a peer's: it
raises :class:`LifecycleError` instead of being ignored.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "RUNNING",
    "TRANSITIONS",
    "LifecycleError",
    "NodeState",
    "check_running",
    "check_transition",
]


class NodeState(Enum):
    NEW = "new"
    MINGLING = "mingling"  # the initial (or a post-reconnect) Mingle round
    ONLINE = "online"
    STOPPED = "stopped"


class LifecycleError(RuntimeError):
    """A node was called in a state where the call makes no sense."""


#: (state, call) -> the states that call may move the node to; a pair not
#: listed is illegal
TRANSITIONS: dict[tuple[NodeState, str], frozenset[NodeState]] = {
    (NodeState.NEW, "start"): frozenset({NodeState.MINGLING, NodeState.ONLINE}),
    (NodeState.MINGLING, "round over"): frozenset({NodeState.ONLINE}),
    (NodeState.MINGLING, "reconnected"): frozenset({NodeState.MINGLING, NodeState.ONLINE}),
    (NodeState.ONLINE, "reconnected"): frozenset({NodeState.MINGLING, NodeState.ONLINE}),
    (NodeState.MINGLING, "stop"): frozenset({NodeState.STOPPED}),
    (NodeState.ONLINE, "stop"): frozenset({NodeState.STOPPED}),
}

#: the states in which a node takes input (messages, timers)
RUNNING = frozenset({NodeState.MINGLING, NodeState.ONLINE})


def check_transition(name: str, current: NodeState, target: NodeState, call: str) -> None:
    """Raise :class:`LifecycleError` unless ``call`` may move the node
    from ``current`` to ``target``."""
    if target not in TRANSITIONS.get((current, call), frozenset()):
        raise LifecycleError(
            f"node {name}: {call}() is not allowed in state {current.name}"
            f" (it would move to {target.name})"
        )


def check_running(name: str, current: NodeState, call: str) -> None:
    """Raise :class:`LifecycleError` unless the node takes input now."""
    if current not in RUNNING:
        hint = "call start() first" if current is NodeState.NEW else "the node was stopped"
        raise LifecycleError(f"node {name}: {call}() in state {current.name} ({hint})")
