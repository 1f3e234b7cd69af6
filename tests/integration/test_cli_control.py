"""``wkctl ping``, ``status``, ``inspect`` and ``-d/--destination`` against
real Celery workers (the session's shared 5.7 + 5.4 cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from support.broken_nodes import ProbeTarget
from support.cluster import Cluster, run_cli, shared_cluster
from wkctl.protocol.validation import validate
from wkctl.protocol.wire import Names

pytestmark = [pytest.mark.broker, pytest.mark.celery]


@pytest.fixture(scope="module", params=["amqp", "redis"])
def cluster(request: pytest.FixtureRequest, broker_pool: Any, worker_pool: Any) -> Cluster:
    return shared_cluster(request.param, broker_pool, worker_pool)


def test_status_is_one_line_per_node(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli([*cluster.args, "status", "--expect", "3"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[:3] == [f"{name}: OK" for name in cluster.hostnames]
    assert lines[-1] == "3 nodes online."


def test_destination_addresses_only_the_named_nodes(cluster: Cluster, capsys) -> None:
    one, two = cluster.hostnames[0], cluster.hostnames[2]
    for command in (["ping"], ["clock"], ["revoked"], ["hello"], ["revoke", "cli-dest-1"]):
        code, out, err = run_cli(
            [*cluster.args, *command, "-d", one, "--destination", two, "--json", "--stats"],
            capsys,
        )
        assert code == 0, (command, err)
        assert sorted(json.loads(out)) == [one, two], command
        stats = json.loads(err.strip().splitlines()[-1])
        # addressed nodes known: the command ends once both replied, not at the timeout
        assert stats["replied"] == 2 and stats["expect"] == 2, stats
    code, out, _ = run_cli([*cluster.args, "revoked", "--json", "--expect", "3"], capsys)
    revoked = json.loads(out)
    assert [n for n, ids in revoked.items() if "cli-dest-1" in ids] == [one, two]


def test_inspect_any_method_with_valid_replies(cluster: Cluster, capsys) -> None:
    for argv, kind in (
        (["stats"], "stats-reply"),
        (["dump_conf"], "conf-reply"),
        (["registered"], "registered-reply"),
        (["active", "safe=true"], "active-reply"),
        (["active_queues"], "active_queues-reply"),
    ):
        code, out, err = run_cli(
            [*cluster.args, "inspect", *argv, "--json", "--expect", "3"], capsys
        )
        assert code == 0, (argv, err)
        data = json.loads(out)
        assert sorted(data) == cluster.hostnames, argv
        assert validate(data, kind) == [], argv
        assert "warning" not in err
    worker = cluster.hostnames[1]
    code, out, err = run_cli(
        [*cluster.args, "inspect", "query_task", "no-such-id", "-d", worker, "--yaml"], capsys
    )
    assert code == 0, err
    assert out.strip() == f"{worker}: {{}}"
    code, out, err = run_cli(
        [*cluster.args, "inspect", "rate_limit", "no.such.task", "1/s", "-d", worker], capsys
    )
    # the one node addressed answered with an error: printed, and exit 1
    assert code == 1, err
    assert "error" in out and "unknown task" in out
    assert err == "wkctl: error: every node that replied answered rate_limit with an error\n"
    code, out, err = run_cli(
        [*cluster.args, "inspect", "nosuchmethod", "--json", "--expect", "3"], capsys
    )
    assert code == 1, err
    assert sorted(json.loads(out)) == cluster.hostnames  # every worker answered, with an error
    assert all(set(reply) == {"error"} for reply in json.loads(out).values()), out
    assert err.strip().endswith("(it is not a Celery 5.x method: is the name right?)"), err


def test_inspect_flags_an_invalid_reply(cluster: Cluster, capsys) -> None:
    names = Names(control_exchange=cluster.control_exchange, event_exchange=cluster.event_exchange)
    with ProbeTarget(cluster.url, breaks="stats-no-pool", names=names) as target:
        code, out, err = run_cli(
            [*cluster.args, "inspect", "stats", "-d", target.name, "-d", cluster.hostnames[0]],
            capsys,
        )
    assert code == 1
    [flagged] = [line for line in out.splitlines() if "INVALID" in line]
    assert target.name in flagged
    assert f"the stats reply of {target.name} is not valid against stats-reply" in err
    assert "'pool' is a required property" in err
    assert "1 invalid stats reply(ies)" in err


def test_inspect_refuses_stopping_methods_without_force(cluster: Cluster, capsys) -> None:
    code, out, err = run_cli([*cluster.args, "inspect", "shutdown"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("wkctl: error: shutdown stops every addressed node")
    assert err.count("\n") == 1
    code, _, err = run_cli([*cluster.args, "status", "--expect", "3"], capsys)
    assert code == 0, err  # nobody was stopped
