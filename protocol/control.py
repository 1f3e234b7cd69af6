"""Replies of the reference node to Celery's whole pidbox vocabulary (sans-IO).

Celery workers answer some thirty remote-control methods
(``celery/worker/control.py``); monitors index their replies without
checking them (Flower's worker page reads ``stats["broker"]``, the
Prometheus exporter ``stats["pool"]["processes"]`` on every scrape), so a
node that answers ``{"error": ...}`` where a value is expected breaks the
monitoring of its whole cluster (spec section ``[CONTROL-n]``).

Every function here builds one reply value in Celery's shape from plain
inputs (the node's pid, clock, start time, process figures and settings),
truthfully for a node that runs no tasks: no pool processes, empty task
lists, no registered tasks.  Methods that cannot mean anything for such a
node have a reason in :data:`UNSUPPORTED`, answered as ``{"error": reason}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "NO_TASK_METHODS",
    "UNSUPPORTED",
    "NodeFacts",
    "ProcessInfo",
    "conf",
    "events_toggle",
    "memsample",
    "redact",
    "report",
    "stats",
]

#: Task lists: always empty on a node that runs no tasks ([CONTROL-5]).
NO_TASK_METHODS: dict[str, Any] = {
    "active": [],
    "reserved": [],
    "scheduled": [],
    "registered": [],
    "active_queues": [],
    "query_task": {},
}
#: Methods with no meaning for a node without pool, task queues or tasks,
#: and the reason its ``{"error": ...}`` reply gives ([CONTROL-7]).
UNSUPPORTED: dict[str, str] = {
    "pool_grow": "a wkctl node has no pool to grow",
    "pool_shrink": "a wkctl node has no pool to shrink",
    "pool_restart": "a wkctl node has no pool to restart",
    "autoscale": "a wkctl node has no pool to autoscale",
    "add_consumer": "a wkctl node consumes no task queues",
    "cancel_consumer": "a wkctl node consumes no task queues",
    # Celery's own answer for a task it does not know:
    "rate_limit": "unknown task",
    "time_limit": "unknown task",
    "revoke_by_stamped_headers": "a wkctl node runs no tasks, so it keeps no stamped-header revocations",
    "objgraph": "a wkctl node does not graph objects (Celery needs the objgraph library for it)",
    "memdump": "a wkctl node keeps no memory samples",
}

# Celery's ``celery.app.utils.HIDDEN_SETTINGS``: setting names whose value
# is a secret, masked in ``conf`` and ``report``.
_SECRET = re.compile(r"API|TOKEN|KEY|SECRET|PASS|PROFANITIES_LIST|SIGNATURE|DATABASE", re.I)
_MASK = "********"


def redact(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with the value of every secret-looking key masked, recursively
    (Celery's rule for ``conf``), so no reply carries a credential ([SEC-6])."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if _SECRET.search(str(key)):
            out[str(key)] = _MASK
        elif isinstance(value, Mapping):
            out[str(key)] = redact(value)
        else:
            out[str(key)] = value
    return out


@dataclass(frozen=True)
class ProcessInfo:
    """What the process hosting a node measured when a request arrived.

    ``rusage`` is ``resource.getrusage(RUSAGE_SELF)`` as Celery names its
    fields (None where the platform has none); ``rss`` the resident set in
    bytes, None when unknown.
    """

    rusage: Mapping[str, float] | None = None
    rss: int | None = None


@dataclass(frozen=True)
class NodeFacts:
    """The node's own figures a reply reports; all inputs, no reads."""

    name: str
    pid: int
    clock: int
    uptime: float
    sw_ver: str
    broker: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    process: ProcessInfo = field(default_factory=ProcessInfo)
    #: the host's platform (``report``): Python version, system, machine,
    #: implementation, as the host's :class:`~wkctl.protocol.config.Environment` says
    python_version: str = ""
    system: str = ""
    machine: str = ""
    implementation: str = ""


#: The ``pool`` member of ``stats``: Celery's keys, for a node with none.
def _pool() -> dict[str, Any]:
    return {
        "implementation": "wkctl:none (a wkctl node runs no tasks)",
        "max-concurrency": 0,
        "processes": [],
        "max-tasks-per-child": None,
        "put-guarded-by-semaphore": False,
        "timeouts": [],
    }


def stats(facts: NodeFacts) -> dict[str, Any]:
    """``stats``: Celery's ``Worker.stats()`` keys ([CONTROL-3]).

    ``clock`` is a decimal string as Celery sends it (``str(app.clock)``),
    ``uptime`` whole seconds, ``total`` the tasks run per name (none),
    ``rusage`` Celery's ``'N/A'`` where the platform has no getrusage."""
    rusage: Any = dict(facts.process.rusage) if facts.process.rusage is not None else "N/A"
    return {
        "total": {},
        "pid": facts.pid,
        "clock": str(facts.clock),
        "uptime": round(facts.uptime),
        "pool": _pool(),
        "broker": redact(facts.broker),
        "prefetch_count": 0,
        "rusage": rusage,
        "sw_ident": "wkctl",
        "sw_ver": facts.sw_ver,
    }


def conf(facts: NodeFacts) -> dict[str, Any]:
    """``conf``: the node's settings under Celery's names, secrets masked
    ([CONTROL-4]); the broker URL is the masked one."""
    return redact(facts.settings)


def report(facts: NodeFacts) -> dict[str, str]:
    """``report``: ``{"ok": text}`` like Celery's ``app.bugreport()``."""
    lines = [
        "",
        f"software -> wkctl:{facts.sw_ver} py:{facts.python_version}",
        f"platform -> system:{facts.system} arch:{facts.machine} imp:{facts.implementation}",
        f"node     -> {facts.name} pid:{facts.pid} (a wkctl reference node: runs no tasks)",
        "",
    ]
    for key, value in sorted(conf(facts).items()):
        lines.append(f"{key}: {value!r}")
    return {"ok": "\n".join(lines) + "\n"}


def memsample(process: ProcessInfo) -> str | None:
    """``memsample``: the resident set as Celery formats it (``'42.50MB'``),
    or None as Celery answers without psutil."""
    if process.rss is None:
        return None
    return f"{process.rss / 1024.0 / 1024.0:.2f}MB"


def events_toggle(enable: bool) -> dict[str, str]:
    """``enable_events`` / ``disable_events``: acknowledged ([CONTROL-6]).

    Task events are not a node's business (it runs no tasks); worker events
    (heartbeats) are not switched by these commands in Celery either."""
    verb = "enable" if enable else "disable"
    return {"ok": f"no task events to {verb}: a wkctl node runs no tasks"}
