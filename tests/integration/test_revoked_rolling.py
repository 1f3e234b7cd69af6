"""No lost revoked ids: 10,000 revoked ids survive a rolling restart.

The fleet: two ``wkctl node``\\ s, a Celery 5.7 worker and a Celery 5.4
worker (the two wire forms of ``revoked``: a list from 5.7 and wkctl, a
mapping ``id -> [timestamp, id]`` from 5.4).  10,000 task ids (arbitrary
strings, not only UUIDs) are revoked cluster-wide in batches; then every
member is stopped and started again, one at a time, with nothing but the
usual Mingle at start to get the ids back (no state file).  Afterwards
every member holds every id.  A member restarted while the others hold the
ids must have them again before the next one goes down, or ids would be
lost for good once the last holder restarts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from support.nodes import NodeProcess, unique_name
from wkctl.protocol.client import Client, normalize_revoked

pytestmark = [pytest.mark.broker, pytest.mark.celery, pytest.mark.timeout(300)]

N_IDS = 10_000
BATCH = 2_500


def revoked_of(url: str, names: list[str], timeout: float = 3.0) -> dict[str, set[str]]:
    with Connection(url) as conn, Client(conn) as client:
        got = client.call("revoked", {}, timeout=timeout, destination=names)
    return {name: set(normalize_revoked(value)) for name, value in got.replies.items()}


def missing_report(held: dict[str, set[str]], ids: set[str]) -> dict[str, int]:
    return {name: len(ids - have) for name, have in held.items()}


def test_rolling_restart_keeps_every_revoked_id(
    broker_url: str, celery_workers: Any, worker_pool: Any, tmp_path: Path
) -> None:
    # every second id a UUID, the rest arbitrary strings Celery accepts
    ids = [
        str(uuid.uuid4()) if i % 2 else f"job:{i}:{uuid.uuid4().hex[:8]}/ünï" for i in range(N_IDS)
    ]
    wanted = set(ids)
    w57 = celery_workers(broker_url, version="5.7")[0]
    w54 = celery_workers(broker_url, version="5.4")[0]
    nodes = [
        NodeProcess.start(broker_url, unique_name("roll"), "--heartbeat", "0.5", logdir=tmp_path)
        for _ in range(2)
    ]
    members: dict[str, Any] = {w57.hostname: w57, w54.hostname: w54}
    members.update({n.name: n for n in nodes})
    names = sorted(members)
    try:
        with Connection(broker_url) as conn, Client(conn) as client:
            for start in range(0, N_IDS, BATCH):
                client.revoke(ids[start : start + BATCH])
        deadline = time.monotonic() + 30
        while True:
            held = revoked_of(broker_url, names)
            if set(held) == set(names) and all(wanted <= have for have in held.values()):
                break
            assert time.monotonic() < deadline, missing_report(held, wanted)
            time.sleep(0.5)

        timings: dict[str, float] = {}
        for name in names:
            member = members[name]
            started = time.monotonic()
            if isinstance(member, NodeProcess):
                assert member.stop() == 0
                fresh = NodeProcess.start(
                    broker_url, name, "--heartbeat", "0.5", logdir=tmp_path
                )  # waits until ready: Mingle is over
            else:
                version = member.version
                member.stop()
                fresh = worker_pool.start(broker_url, version=version, extra_args=("-n", name))[0]
            members[name] = fresh
            timings[name] = time.monotonic() - started
            held = revoked_of(broker_url, [name])
            assert name in held, f"{name} did not answer after its restart"
            lost = wanted - held[name]
            assert not lost, (
                f"{name} lost {len(lost)} of {N_IDS} revoked ids in its restart "
                f"(e.g. {sorted(lost)[:3]})"
            )
        held = revoked_of(broker_url, names)
        assert set(held) == set(names)
        assert missing_report(held, wanted) == dict.fromkeys(names, 0)
        print(
            f"\nrolling restart of {len(names)} members, {N_IDS} ids kept; seconds per member: "
            + ", ".join(f"{k.split('@')[0]}={v:.1f}" for k, v in timings.items())
        )
    finally:
        for member in members.values():
            if isinstance(member, NodeProcess):
                member.stop()
            else:
                worker_pool.stop([member])
