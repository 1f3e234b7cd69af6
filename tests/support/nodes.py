"""wkctl reference nodes for tests: in memory, in process, or as processes.

* :class:`MemoryBus` wires sans-IO :class:`~wkctl.protocol.node.Node`\\ s
  together with explicit time: pidbox broadcasts reach every node, replies
  the node whose reply routing key they name, events every node.  No
  broker, fully deterministic (the core's unit tests).
* :func:`hosted_nodes` runs N nodes in this process over a real broker
  through one :class:`~wkctl.protocol.binding.Binding` (one connection,
  one thread).
* :class:`NodeProcess` runs ``wkctl node`` as a subprocess, its stderr in a
  log file, stopped with SIGTERM (``returncode`` then tells the exit code).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wkctl.protocol.binding import Binding, NodeHandle
from wkctl.protocol.broker import BrokerSettings
from wkctl.protocol.host import local_environment
from wkctl.protocol.node import Action, Inbound, Log, Node, NodeConfig, Publish

REPO = Path(__file__).resolve().parent.parent.parent

# -- in memory ------------------------------------------------------------


@dataclass
class MemoryBus:
    """Deliver the actions of sans-IO nodes to each other, in order.

    ``published`` keeps every message ever published, ``logs`` every log
    record per node; ``deliver`` processes until no message is left.
    """

    nodes: dict[str, Node] = field(default_factory=dict)
    published: list[tuple[str, Publish]] = field(default_factory=list)
    logs: dict[str, list[Log]] = field(default_factory=dict)
    other: dict[str, list[Action]] = field(default_factory=dict)
    queue: list[tuple[str, Publish]] = field(default_factory=list)
    #: hostnames whose messages are dropped (a crashed node)
    dead: set[str] = field(default_factory=set)

    def add(self, name: str, **config: Any) -> Node:
        config.setdefault("pid", 1000 + len(self.nodes))
        node = Node(NodeConfig(name=name, **config), env=local_environment())
        self.nodes[name] = node
        self.logs[name] = []
        self.other[name] = []
        return node

    def take(self, name: str, actions: Iterable[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                if name not in self.dead:
                    self.published.append((name, action))
                    self.queue.append((name, action))
            elif isinstance(action, Log):
                self.logs[name].append(action)
            else:
                self.other[name].append(action)

    def start(self, name: str, now: float) -> None:
        self.take(name, self.nodes[name].start(now))

    def tick(self, now: float) -> None:
        for name, node in self.nodes.items():
            if name not in self.dead and _running(node):
                self.take(name, node.tick(now))

    def deliver(self, now: float, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            sender, msg = self.queue.pop(0)
            inbound = Inbound.json(msg.body, msg.headers, msg.routing_key)
            for name, node in self.nodes.items():
                if name in self.dead or not _running(node):
                    continue  # like a binding: only started, not stopped nodes take input
                if msg.target == "pidbox":
                    self.take(name, node.receive_pidbox(inbound, now))
                elif msg.target == "reply":
                    if node.config.reply_routing_key == msg.routing_key:
                        self.take(name, node.receive_reply(inbound, now))
                elif msg.target == "event":
                    self.take(name, node.receive_event(inbound, now))
        raise RuntimeError("message storm: delivery did not settle")

    def run(self, start: float, end: float, step: float = 0.05) -> float:
        """Advance time from ``start`` to ``end``, ticking and delivering."""
        now = start
        while now <= end:
            self.tick(now)
            self.deliver(now)
            now = round(now + step, 6)
        return now

    def log_text(self, name: str) -> str:
        return "\n".join(r.message for r in self.logs[name])

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [
            p.body for _, p in self.published if p.target == "event" and p.body.get("type") == type_
        ]


def _running(node: Node) -> bool:
    return node.started and not node.is_stopped


# -- in process, real broker ----------------------------------------------


@contextlib.contextmanager
def hosted_nodes(
    settings: BrokerSettings | str, names: Iterable[str], wait: bool = True, **config: Any
) -> Iterator[list[NodeHandle]]:
    """N nodes in this process on one connection; stopped cleanly on exit."""
    if isinstance(settings, str):
        settings = BrokerSettings(url=settings)
    binding = Binding(settings).start()
    try:
        handles = [binding.add_node(name, **config) for name in names]
        if wait:
            for handle in handles:
                if not handle.wait_synced(15):
                    raise RuntimeError(
                        f"node {handle.name} did not start: {handle.failed or handle.log_text()}"
                    )
        yield handles
    finally:
        binding.shutdown()


# -- as processes ---------------------------------------------------------


def unique_name(prefix: str = "wk") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}@wkctl-test"


@dataclass
class NodeProcess:
    """``wkctl --broker URL node --name NAME ...`` as a child process."""

    name: str
    broker_url: str
    logfile: Path
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        broker_url: str,
        name: str | None = None,
        *args: str,
        logdir: Path | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        name = name or unique_name()
        folder = logdir or Path(os.environ.get("TMPDIR", "/tmp"))
        logfile = folder / f"node-{name.replace('@', '_')}-{uuid.uuid4().hex[:4]}.log"
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env.pop("WKCTL_BROKER_URL", None)
        cmd = [sys.executable, "-m", "wkctl", "--broker", broker_url, "node", "--name", name, *args]
        process = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=open(logfile, "wb"),
            env=child_env,
            cwd=str(REPO),
        )
        node = cls(name, broker_url, logfile, process)
        if wait:
            node.wait_ready()
        return node

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            if self.process.poll() is not None:
                return text in self.log_text()
            time.sleep(0.05)
        return False

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self.wait_log(": ready.", timeout):
            self.kill()
            raise RuntimeError(f"wkctl node {self.name} not ready:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def decode(publish: Publish) -> Any:
    """The JSON a Publish puts on the wire, decoded again (round trip check)."""
    return json.loads(json.dumps(publish.body))
