"""When each ``worker-elect`` could first reach any consumer: an idle one.

``python -m bench.request_tap --broker URL`` binds a queue to the event
exchange with routing key ``worker.elect`` alone (no acks, no heartbeats
ahead of the requests) and prints ``READY``, then one line
``<unix time> <election id> <hostname>`` per request it receives.  A process
of its own: a thread of the benchmark would share the benchmark process's
interpreter with the full event tap, which works through every ack of the
election and would delay these timestamps.

:class:`RequestTap` starts it and collects the lines.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

from .common import REPO, child_env, die_with_parent


class RequestTap:
    """The ``worker-elect`` arrival times of an idle consumer, by election id."""

    def __init__(self, url: str) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.request_tap", "--broker", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=str(REPO),
            env=child_env(),
            preexec_fn=die_with_parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "READY":
            self.close()
            raise RuntimeError(f"request tap did not start: {line.strip() or 'exited'}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            words = line.split()
            if len(words) == 3:
                with self._lock:
                    self.arrivals.setdefault(words[1], []).append(float(words[0]))

    def last(self, election_id: str, n: int, t0: float, wait: float = 2.0) -> float | None:
        """ms from ``t0`` (Unix time) to the n-th request of the election (None:
        fewer than n arrived within ``wait`` seconds)."""
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                times = sorted(self.arrivals.get(election_id, []))
            if len(times) >= n:
                return (times[n - 1] - t0) * 1000
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.request_tap")
    parser.add_argument("--broker", required=True)
    args = parser.parse_args(argv)

    from kombu import Connection, Consumer, Queue

    from wkctl.protocol.broker import event_exchange, transport_of
    from wkctl.protocol.wire import Names

    conn = Connection(args.broker)
    conn.ensure_connection(max_retries=3)
    queue = Queue(
        f"benchtap.req.{int(time.time() * 1000)}",
        exchange=event_exchange(Names(), transport_of(args.broker)),
        routing_key="worker.elect",
        auto_delete=True,
        durable=False,
        exclusive=True,
    )

    def on_message(message: Any) -> None:
        now = time.time()
        try:
            body = json.loads(message.body)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("type") == "worker-elect":
            print(f"{now:.6f} {body.get('id')} {body.get('hostname')}", flush=True)

    Consumer(conn.channel(), [queue], no_ack=True, on_message=on_message).consume()
    try:
        conn.drain_events(timeout=0.05)  # Redis subscribes at the first poll
    except TimeoutError:
        pass
    print("READY", flush=True)
    while True:
        try:
            conn.drain_events(timeout=1.0)
        except TimeoutError:
            continue


if __name__ == "__main__":
    sys.exit(main())
