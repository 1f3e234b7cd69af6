"""The rule that keeps the unknown-matcher probe from silencing bystanders
(DEFECT-15): pure functions over what nodes announce.  The release matrix
checks the rule against real workers of every release (its DEFECT-15 column);
these pin its edges."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import require_celery

from support.brokers import BrokerPool
from support.workers import WorkerPool, celery_python
from wkctl.cli.main import cli
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


# -- live: Celery 5.4.0 with its own kombu 5.3.7 on Redis -------------------------


@pytest.fixture
def redis_db(broker_pool: BrokerPool) -> Iterator[str]:
    if broker_pool.redis_url is None:
        pytest.skip("no Redis")
    url = broker_pool.isolated("redis")
    yield url
    broker_pool.release(url)


def _unknown_matcher(url: str, node: str, *flags: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        cli,
        [
            "-b",
            url,
            "conform",
            "--node",
            node,
            "--only",
            "pidbox.unknown-matcher",
            "--json",
            *flags,
        ],
        catch_exceptions=False,
    )
    doc = json.loads(result.output)
    (check,) = [c for c in doc["checks"] if c["id"] == "pidbox.unknown-matcher"]
    return dict(check)


@pytest.mark.broker
@pytest.mark.celery
def test_unknown_matcher_probe_spares_bystanders_and_needs_the_flag(
    redis_db: str, worker_pool: WorkerPool
) -> None:
    require_celery("5.4")
    python = celery_python("5.4")
    assert python is not None
    kombu = subprocess.run(
        [python, "-c", "import kombu; print(kombu.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    if kombu != "5.3.7":
        pytest.fail(f".venv-celery54 must pair Celery 5.4.0 with its kombu 5.3.7, has {kombu}")
    target = worker_pool.start(redis_db, n=1, version="5.4", prefix="mt")[0]
    try:
        # without the flag: not sent, and the reason names the defect and the flag
        check = _unknown_matcher(redis_db, target.hostname)
        assert check["result"] == "skip", check
        assert "Celery 5.4.0 with kombu 5.3.7" in check["detail"] and "DEFECT-15" in check["detail"]
        assert "--outage-probes" in check["detail"]
        # with the flag but a bystander on the broker: still not sent
        bystander = worker_pool.start(redis_db, n=1, version="5.4", prefix="by")[0]
        check = _unknown_matcher(redis_db, target.hostname, "--outage-probes")
        assert check["result"] == "skip" and bystander.hostname in check["detail"], check
        worker_pool.stop([bystander])
        # alone and asked for: sent; the node loses its control channel, reported as DEFECT-15
        check = _unknown_matcher(redis_db, target.hostname, "--outage-probes")
        assert check["result"] == "deviation" and check["known_deviation"] == "DEFECT-15", check
        assert target.wait_log("MatcherNotInstalled", 5), target.log_text()[-1500:]
    finally:
        worker_pool.stop([target])
