"""Task states and their precedence, as ``celery.states`` defines them.

Reproduced (not imported) so that Celery stays an optional extra of wkctl.
The set of states Celery knows is closed (:data:`KnownTaskState`); a task
can still be in a custom state: a custom ``task-foo`` event puts it in
``"FOO"``, which ranks where ``None`` does in :data:`PRECEDENCE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

__all__ = (
    "KnownTaskState",
    "TaskEventSubject",
    "PENDING",
    "RECEIVED",
    "STARTED",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
    "REJECTED",
    "RETRY",
    "IGNORED",
    "READY_STATES",
    "UNREADY_STATES",
    "EXCEPTION_STATES",
    "PROPAGATE_STATES",
    "ALL_STATES",
    "PRECEDENCE",
    "PRECEDENCE_LOOKUP",
    "NONE_PRECEDENCE",
    "precedence",
    "TASK_EVENT_TO_STATE",
)

#: The states ``celery.states`` names.
KnownTaskState = Literal[
    "PENDING",
    "RECEIVED",
    "STARTED",
    "SUCCESS",
    "FAILURE",
    "REVOKED",
    "REJECTED",
    "RETRY",
    "IGNORED",
]
#: The subjects of the task events Celery sends (``task-<subject>``).
TaskEventSubject = Literal[
    "sent", "received", "started", "failed", "retried", "succeeded", "revoked", "rejected"
]

PENDING: Final = "PENDING"
RECEIVED: Final = "RECEIVED"
STARTED: Final = "STARTED"
SUCCESS: Final = "SUCCESS"
FAILURE: Final = "FAILURE"
REVOKED: Final = "REVOKED"
REJECTED: Final = "REJECTED"
RETRY: Final = "RETRY"
IGNORED: Final = "IGNORED"

READY_STATES: Final[frozenset[str]] = frozenset({SUCCESS, FAILURE, REVOKED})
UNREADY_STATES: Final[frozenset[str]] = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES: Final[frozenset[str]] = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES: Final[frozenset[str]] = frozenset({FAILURE, REVOKED})
ALL_STATES: Final[frozenset[str]] = frozenset(
    {PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, RETRY, REVOKED}
)

#: Lower index means higher precedence; ``None`` stands for any custom state.
PRECEDENCE: Final[tuple[KnownTaskState | None, ...]] = (
    SUCCESS,
    FAILURE,
    None,
    REVOKED,
    STARTED,
    RECEIVED,
    REJECTED,
    RETRY,
    PENDING,
)
PRECEDENCE_LOOKUP: Final[Mapping[str | None, int]] = {s: i for i, s in enumerate(PRECEDENCE)}
NONE_PRECEDENCE: Final[int] = PRECEDENCE_LOOKUP[None]


def precedence(state: str | None) -> int:
    """Precedence index of ``state`` (lower is stronger), as ``celery.states``."""
    return PRECEDENCE_LOOKUP.get(state, NONE_PRECEDENCE)


#: Task event subject -> the state it puts the task in.
TASK_EVENT_TO_STATE: Final[Mapping[str, KnownTaskState]] = {
    "sent": PENDING,
    "received": RECEIVED,
    "started": STARTED,
    "failed": FAILURE,
    "retried": RETRY,
    "succeeded": SUCCESS,
    "revoked": REVOKED,
    "rejected": REJECTED,
}
