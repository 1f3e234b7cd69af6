"""Host many wkctl reference nodes in one process, for the benchmarks.

``python -m bench.nodehost --broker URL --count K --prefix NAME`` starts K
nodes on one :class:`wkctl.protocol.binding.Binding` (one connection, one
loop thread), prints ``READY <K> <rss_kb>`` once every node finished its
first Mingle round, then ``RSS <kb>`` whenever a line ``rss`` arrives on
stdin, and stops cleanly (``worker-offline``) on EOF or SIGTERM.

Why a process of its own: Celery workers are separate processes, and the
benchmark must not measure a cluster whose nodes share the measuring
process's interpreter (GIL) with the command being timed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from wkctl.protocol.binding import Binding
from wkctl.protocol.broker import BrokerSettings


def rss_kb() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.nodehost")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--prefix", default="ref")
    parser.add_argument("--host", default="bench")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--no-gossip", action="store_true")
    parser.add_argument("--mingle-timeout", type=float, default=1.0)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    binding = Binding(BrokerSettings(url=args.broker))
    handles = [
        binding.add_node(
            f"{args.prefix}{i}@{args.host}",
            heartbeat=args.heartbeat,
            gossip=not args.no_gossip,
            mingle_timeout=args.mingle_timeout,
        )
        for i in range(args.count)
    ]
    binding.start()
    deadline = time.monotonic() + args.ready_timeout
    for handle in handles:
        if not handle.wait_synced(max(0.1, deadline - time.monotonic())):
            print(f"FAILED {handle.name} not synced: {handle.failed}", flush=True)
            binding.shutdown()
            return 1
    print(f"READY {len(handles)} {rss_kb()}", flush=True)

    def join(name: str) -> None:
        """Start one more node now and say how long its Mingle took."""
        t0 = time.perf_counter()
        handle = binding.add_node(name, heartbeat=args.heartbeat, gossip=not args.no_gossip)
        ok = handle.wait_synced(10.0)
        ms = (time.perf_counter() - t0) * 1000.0
        peers = len(handle.syncs[-1].peers) if handle.syncs else 0
        print(f"JOINED {ms:.3f} {peers} {int(ok)}", flush=True)
        handle.stop()

    def read_stdin() -> None:
        for line in sys.stdin:
            words = line.split()
            if words == ["rss"]:
                print(f"RSS {rss_kb()}", flush=True)
            elif len(words) == 2 and words[0] == "join":
                join(words[1])
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    while not stop.wait(0.2):
        if binding.error is not None:
            print(f"FAILED loop: {binding.error!r}", flush=True)
            return 1
    binding.shutdown(timeout=10.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
