"""Node loss: a node killed with SIGKILL (no ``worker-offline``).

* Its peers report it lost once its heartbeats expire (Celery's window:
  twice its ``freq``, plus the liveness sweep), once each.
* An election started while the dead node was still counted alive cannot
  complete (its ``worker-elect`` never comes); every survivor decides it
  after the election timeout, all of them the same winner, and keeps no
  state of it (``Elections.active`` empty; a later election is decided
  normally).  Celery's own election would hang forever and leak here.

The victim is a real ``wkctl node`` process; the survivors are hosted in
this process (one binding) so that their election state can be inspected,
plus a second ``wkctl node`` process as a survivor seen only from outside.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from support.nodes import NodeProcess, hosted_nodes, unique_name
from wkctl.protocol.client import Client
from wkctl.protocol.gossip import DEFAULT_SWEEP_INTERVAL

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

HEARTBEAT = 0.5
VICTIM_HEARTBEAT = 1.0
ELECTION_TIMEOUT = 3.0


def _lost(handle: Any, name: str) -> int:
    return sum(1 for c in list(handle.changes) if c.kind == "lost" and c.worker.hostname == name)


def test_killed_node_is_lost_and_pending_election_still_decided(
    broker_url: str, tmp_path: Path
) -> None:
    victim = NodeProcess.start(
        broker_url,
        unique_name("victim"),
        "--heartbeat",
        str(VICTIM_HEARTBEAT),
        logdir=tmp_path,
        wait=False,
    )
    survivor_proc = NodeProcess.start(
        broker_url,
        unique_name("surv"),
        "--heartbeat",
        str(HEARTBEAT),
        "--election-timeout",
        str(ELECTION_TIMEOUT),
        logdir=tmp_path,
        wait=False,
    )
    names = [unique_name("alive"), unique_name("alive")]
    try:
        victim.wait_ready()
        survivor_proc.wait_ready()
        with hosted_nodes(
            broker_url, names, heartbeat=HEARTBEAT, election_timeout=ELECTION_TIMEOUT
        ) as handles:
            everyone = {victim.name, survivor_proc.name, *names}
            for handle in handles:
                assert handle.wait_for(lambda h: everyone - {h.name} <= set(h.alive_peers()), 10), (
                    handle.alive_peers()
                )
            chosen: list[Any] = []
            for handle in handles:
                handle.set_election_handler(
                    "loss-test", lambda action, decision, out=chosen: out.append(decision)
                )

            # kill -9, then at once an election: the victim is still counted alive
            victim.process.kill()
            victim.process.wait(5)
            killed = time.monotonic()
            election_id = f"loss-{uuid.uuid4().hex[:8]}"
            with Connection(broker_url) as conn, Client(conn) as client:
                client.election(election_id, "loss-test", {"x": 1})
            for handle in handles:
                assert victim.name in handle.alive_peers() or time.monotonic() - killed > 1.0

            # lost once its heartbeats expired (2 x freq + sweep), once per survivor
            for handle in handles:
                assert handle.wait_for(lambda h: _lost(h, victim.name) >= 1, 10), handle.log_text()[
                    -2000:
                ]
            lost_after = time.monotonic() - killed
            # expiry (2 x its freq) + at most one liveness sweep interval + margin
            assert lost_after < 2 * VICTIM_HEARTBEAT + DEFAULT_SWEEP_INTERVAL + 1.5, lost_after

            # the election is decided by every survivor, identically, after the timeout
            decisions = [h.wait_decision(election_id, ELECTION_TIMEOUT + 10) for h in handles]
            decided_after = time.monotonic() - killed
            assert all(d is not None for d in decisions), [h.log_text()[-2000:] for h in handles]
            winners = {d.winner.node_id for d in decisions}  # type: ignore[union-attr]
            assert len(winners) == 1, winners
            winner = winners.pop()
            assert victim.name not in winner
            for d in decisions:
                assert d is not None
                # decided by the timeout, or earlier once the victim was counted
                # lost (it is then no longer waited for); never with the victim
                assert d.reason in ("timeout", "complete"), d
                assert victim.name not in d.participants
                if d.reason == "timeout":
                    assert victim.name in d.missing
                assert set(d.participants) == {survivor_proc.name, *names}
            assert decided_after < ELECTION_TIMEOUT + 5, decided_after
            assert survivor_proc.wait_log(f"elected for '{election_id}'", 5) or (
                survivor_proc.wait_log(f"I won the election '{election_id}'", 1)
            ), survivor_proc.log_text()[-2000:]
            out_name = (
                survivor_proc.name
                if f"I won the election '{election_id}'" in survivor_proc.log_text()
                else None
            )
            if out_name is None:
                assert winner in survivor_proc.log_text()
            # only the winner ran the action, once
            assert len(chosen) == (0 if out_name else 1), chosen
            print(
                f"\nvictim lost after {lost_after:.2f} s; election decided after "
                f"{decided_after:.2f} s (timeout {ELECTION_TIMEOUT} s); winner {winner}"
            )

            # no leaked election state; a following election completes without waiting
            time.sleep(0.3)
            for handle in handles:
                with handle.binding.lock:
                    assert election_id not in handle.node.elections.active
                    assert not handle.node.elections.active, handle.node.elections.active
            second = f"after-{uuid.uuid4().hex[:8]}"
            started = time.monotonic()
            with Connection(broker_url) as conn, Client(conn) as client:
                client.election(second, "loss-test", {"x": 2})
            again = [h.wait_decision(second, ELECTION_TIMEOUT + 5) for h in handles]
            assert all(d is not None and d.reason == "complete" for d in again), again
            assert time.monotonic() - started < ELECTION_TIMEOUT, "the dead node is still expected"
            # reported lost exactly once
            time.sleep(2 * HEARTBEAT)
            assert all(_lost(h, victim.name) == 1 for h in handles)
    finally:
        victim.kill()
        code = survivor_proc.stop()
    assert code == 0
    log = survivor_proc.log_text()
    assert log.count(f"missed heartbeat from {victim.name}") == 1, log[-2000:]
