"""The nodes known to be alive: what lets a request end as soon as they answered.

A request without ``--expect`` ends once replies have settled (see
:class:`wkctl.protocol.client.ReplyCollector`), or earlier, once every node
known to be alive answered.  "Known alive" is this small per-user cache
(``$XDG_STATE_HOME/wkctl/known-nodes.json``), one entry per cluster
(:attr:`BrokerSettings.cluster_key`): the nodes that answered a broadcast
request within the last :data:`KNOWN_TTL` seconds and were not missing from
a later one.  A node that stopped answering drops out of it at its first
miss; a node that joined since is still collected within the grace the
collector keeps after the known nodes answered, or else at the next request.
The cache only ever makes a request end earlier than the settle window would;
it never changes which replies are accepted.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wkctl.protocol.broker import BrokerSettings, state_dir
from wkctl.protocol.client import Collected

__all__ = ["KNOWN_TTL", "KnownNodes", "known_nodes_file"]

#: How long a node that answered counts as known alive, in seconds.
KNOWN_TTL = 600.0
#: Clusters kept in the file (least recently used dropped first).
MAX_CLUSTERS = 64


def known_nodes_file() -> Path:
    return state_dir() / "known-nodes.json"


@dataclass
class KnownNodes:
    """The cache entry of one cluster: ``{node: last answer (Unix time)}``."""

    key: str
    path: Path
    nodes: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: BrokerSettings, now: float | None = None) -> KnownNodes:
        """The live entries of this cluster; an unreadable file counts as empty
        (it is a cache: losing it costs one settle window)."""
        now = time.time() if now is None else now
        path = known_nodes_file()
        entry = _read(path).get(settings.cluster_key, {})
        nodes = {
            node: float(seen)
            for node, seen in (entry.get("nodes", {}) if isinstance(entry, dict) else {}).items()
            if isinstance(node, str)
            and isinstance(seen, (int, float))
            and not isinstance(seen, bool)
            and now - seen < KNOWN_TTL
        }
        return cls(settings.cluster_key, path, nodes)

    def alive(self) -> frozenset[str]:
        return frozenset(self.nodes)

    def update(self, result: Collected, now: float | None = None) -> None:
        """Learn from one finished broadcast: who answered is alive, a known
        node that did not answer before it ended is not."""
        now = time.time() if now is None else now
        if result.ended != "expect":  # it waited for everyone: the silent are gone
            for node in list(self.nodes):
                if node not in result.replies:
                    del self.nodes[node]
        for node in result.replies:
            self.nodes[node] = now

    def save(self) -> None:
        """Write the file atomically; a read-only state folder is not an error."""
        data = _read(self.path)
        data.pop(self.key, None)
        data[self.key] = {"nodes": self.nodes}
        while len(data) > MAX_CLUSTERS:
            data.pop(next(iter(data)))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
            partial.write_text(json.dumps(data), encoding="utf-8")
            os.replace(partial, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs speed


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
