"""Gossip membership with explicit time: join, leave, lost; heartbeat fields."""

from __future__ import annotations

import json
from pathlib import Path

from wkctl.protocol.gossip import Membership, heartbeat_fields
from wkctl.protocol.host import local_event as event

SAMPLES = Path(__file__).resolve().parents[1] / "data"


def hb(host: str, type_: str = "worker-heartbeat", freq: float = 2.0) -> dict:
    return {"type": type_, "hostname": host, "freq": freq, "pid": 7, "clock": 3, "timestamp": 0.0}


def test_join_on_first_heartbeat_then_lost_after_the_expire_window() -> None:
    m = Membership("me@h")
    [change] = m.on_event(hb("w1@h", "worker-online"), now=100.0)
    assert change.kind == "join" and change.worker.hostname == "w1@h"
    assert m.on_event(hb("w1@h"), now=101.0) == []  # already alive
    assert m.alive(104.9) == ["w1@h"]  # 101 + 2 * 200 / 100 = 105
    assert m.sweep(104.9) == []
    assert m.alive(105.0) == []
    [lost] = m.sweep(105.0)
    assert lost.kind == "lost" and "w1@h" not in m


def test_offline_means_leave_and_a_later_heartbeat_rejoins() -> None:
    m = Membership("me@h")
    m.on_event(hb("w1@h"), 0.0)
    [leave] = m.on_event(hb("w1@h", "worker-offline"), 1.0)
    assert leave.kind == "leave" and m.alive(1.0) == []
    assert m.on_event(hb("w1@h", "worker-offline"), 1.5) == []  # no double leave
    assert [c.kind for c in m.on_event(hb("w1@h"), 2.0)] == ["join"]


def test_own_events_and_other_types_are_ignored() -> None:
    m = Membership("me@h")
    assert m.on_event(hb("me@h"), 0.0) == []
    assert m.on_event({"type": "worker-elect", "hostname": "w@h"}, 0.0) == []
    assert m.on_event({"type": "worker-heartbeat", "hostname": 5}, 0.0) == []
    assert m.workers == {}


def test_absurd_freq_is_clamped_so_a_forger_cannot_stay_alive_forever() -> None:
    m = Membership("me@h")
    m.on_event(hb("w@h", freq=1e300), 0.0)
    assert m.alive(7200.0) == []
    m.on_event(hb("v@h", freq=float("nan")), 0.0)
    assert "v@h" in m.alive(3.9) and "v@h" not in m.alive(4.0)


def test_membership_is_bounded() -> None:
    m = Membership("me@h", max_workers=50)
    for i in range(500):
        m.on_event(hb(f"w{i}@h"), float(i))
    assert len(m.workers) == 50


def test_heartbeat_fields_match_celerys_worker_heartbeat() -> None:
    """Same field set as a real Celery 5.7 worker-heartbeat (captured sample)."""
    body = event(
        "worker-heartbeat",
        hostname="n@h",
        clock=4,
        **heartbeat_fields(2.0, "1.0", [0.0, 0.0, 0.0], "Linux"),
    )
    celery = None
    for path in sorted(SAMPLES.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "event:worker-heartbeat":
                celery = record["body"]
                break
    expected = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type", "freq", "active",
                "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}  # fmt: skip
    assert set(body) == expected
    if celery is not None:
        assert set(body) == set(celery)
    assert body["sw_ident"] == "wkctl" and body["freq"] == 2.0 and len(body["loadavg"]) == 3
