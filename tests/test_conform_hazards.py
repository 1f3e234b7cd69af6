"""The rule that keeps the unknown-matcher probe from silencing bystanders
(DEFECT-15): pure functions over what nodes announce.  The release matrix
checks the rule against real workers of every release (its DEFECT-15 column);
these pin its edges."""

from __future__ import annotations

from wkctl.conform.hazards import PeerSoftware, matcher_outage, software_from_report

REPORT_54 = (
    "software -> celery:5.4.0 (opalescent) kombu:5.3.7 py:3.11.7\n"
    "            billiard:4.2.1 py-amqp:5.3.1\n"
    "platform -> system:Linux arch:64bit, ELF\n"
    "broker_url: 'redis://127.0.0.1:6379/3'\n"
)
REPORT_447 = "software -> celery:4.4.7 (cliffs) kombu:4.6.11 py:3.10.13\n"


def test_report_gives_celery_and_kombu() -> None:
    assert software_from_report(REPORT_54) == ("5.4.0", "5.3.7")
    assert software_from_report(REPORT_447) == ("4.4.7", "4.6.11")
    assert software_from_report({"error": "unknown"}) == (None, None)
    assert software_from_report("no versions here") == (None, None)


def test_only_affected_kombu_on_redis_is_at_risk() -> None:
    peers = {
        "a": PeerSoftware("a", "celery", "5.4.0", "5.3.7"),
        "b": PeerSoftware("b", "celery", "5.7.0", "5.7.0"),
        "c": PeerSoftware("c", "celery", "5.1.2", "5.1.0"),
        "d": PeerSoftware("d", "celery", "5.2.7", "5.2.4"),
        "e": PeerSoftware("e", "celery", "5.6.3", "5.6.2"),
        "w": PeerSoftware("w", "wkctl"),
    }
    risky = matcher_outage("redis", peers)
    assert set(risky) == {"a", "d", "e"}
    assert risky["a"] == "Celery 5.4.0 with kombu 5.3.7"
    assert matcher_outage("sentinel", peers).keys() == risky.keys()
    assert matcher_outage("amqp", peers) == {}


def test_unknown_kombu_of_a_celery_worker_counts_as_affected() -> None:
    peers = {
        "quiet": PeerSoftware("quiet", "celery"),  # heartbeats, no report reply
        "hardened": PeerSoftware("hardened", "hardened"),
        "odd": PeerSoftware("odd", None, "5.4.0", "garbage"),
        "other": PeerSoftware("other", "other"),  # another implementation
        "silent": PeerSoftware("silent", None),  # neither heartbeats nor report
    }
    risky = matcher_outage("redis", peers)
    assert set(risky) == {"quiet", "hardened", "odd"}
    assert "unknown" in risky["quiet"]
