"""The reference node's answers to Celery's whole control vocabulary (sans-IO),
and the command-line argument mapping of ``wkctl inspect``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wkctl.cli.control import parse_arguments
from wkctl.cli.errors import CliError
from wkctl.protocol import control
from wkctl.protocol.node import Inbound, Log, Node, NodeConfig, Publish, ShutdownRequested
from wkctl.protocol.validation import validate
from wkctl.protocol.vocab import CELERY_METHODS, METHOD_ALIASES, reply_kind, request_kind
from wkctl.protocol.wire import pidbox_request

#: arguments a method's request schema requires
ARGS: dict[str, dict[str, Any]] = {
    "hello": {"from_node": "peer@x", "revoked": []},
    "revoke": {"task_id": "t1"},
    "terminate": {"task_id": "t2", "signal": "TERM"},
    "election": {"id": "e1", "topic": "none"},
}

SECRET = "s3cret-Value"


def node(**config: Any) -> Node:
    n = Node(
        NodeConfig(
            name="n1@x",
            pid=4242,
            mingle=False,
            broker_info={
                "hostname": "mq",
                "userid": "guest",
                "transport_options": {"sentinel_kwargs": {"password": SECRET}},
            },
            settings_info={
                "broker_url": "amqp://guest:**@mq//",
                "result_backend_api_token": SECRET,
            },
            **config,
        )
    )
    n.start(100.0)
    return n


def ask(n: Node, method: str, arguments: dict[str, Any] | None = None, now: float = 160.0):
    body = pidbox_request(
        method,
        arguments or {},
        reply_exchange="reply.celery.pidbox",
        reply_routing_key="rk",
        ticket="tk",
    )
    out = n.receive_pidbox(
        Inbound.json(body, {"clock": 1}),
        now,
        control.ProcessInfo(rusage={"utime": 0.5, "maxrss": 1000}, rss=3 * 1024 * 1024),
    )
    replies = [a.body for a in out if isinstance(a, Publish) and a.target == "reply"]
    return replies, out


@pytest.mark.parametrize("method", sorted(CELERY_METHODS | set(METHOD_ALIASES)))
def test_every_method_and_alias_is_answered_with_a_valid_reply(method: str) -> None:
    n = node()
    request = pidbox_request(
        method, ARGS.get(method, {}), ticket="t", reply_exchange="r", reply_routing_key="k"
    )
    assert validate(request, request_kind(method)) == []
    [reply], out = ask(n, method, ARGS.get(method, {}))
    assert validate(reply, reply_kind(method) or "") == [], reply
    value = reply["n1@x"]
    assert not (isinstance(value, dict) and "unknown command" in str(value.get("error"))), value
    assert not [a for a in out if isinstance(a, Log) and a.level >= 30], out


def test_aliases_answer_as_their_method() -> None:
    n = node()
    for alias, method in METHOD_ALIASES.items():
        [a], _ = ask(n, alias)
        [m], _ = ask(n, method)
        assert a == m, alias


def test_stats_reports_the_node_truthfully() -> None:
    [reply], _ = ask(node(), "stats", now=160.0)
    stats = reply["n1@x"]
    assert stats["pid"] == 4242
    assert stats["uptime"] == 60  # started at 100
    assert stats["pool"]["processes"] == [] and stats["pool"]["max-concurrency"] == 0
    assert int(stats["clock"]) > 0 and isinstance(stats["clock"], str)  # Celery's str(clock)
    assert stats["rusage"] == {"utime": 0.5, "maxrss": 1000}
    assert stats["total"] == {} and stats["prefetch_count"] == 0
    assert stats["broker"]["hostname"] == "mq"


def test_no_reply_carries_a_secret() -> None:
    n = node()
    for method in ("stats", "conf", "report", "dump_conf"):
        [reply], _ = ask(n, method)
        text = json.dumps(reply)
        assert SECRET not in text, method
    [conf], _ = ask(n, "conf")
    assert conf["n1@x"]["broker_url"] == "amqp://guest:**@mq//"
    assert conf["n1@x"]["result_backend_api_token"] == "********"


def test_task_lists_are_empty_not_errors() -> None:
    n = node()
    for method in ("active", "reserved", "scheduled", "registered", "active_queues"):
        [reply], _ = ask(n, method)
        assert reply == {"n1@x": []}, method
    [reply], _ = ask(n, "query_task", {"ids": ["a", "b"]})
    assert reply == {"n1@x": {}}


def test_memsample_is_the_resident_set() -> None:
    [reply], _ = ask(node(), "memsample")
    assert reply == {"n1@x": "3.00MB"}


def test_enable_and_disable_events_are_acknowledged_without_warning() -> None:
    n = node()
    for _ in range(3):  # Flower sends it every 5 s
        for method in ("enable_events", "disable_events"):
            [reply], out = ask(n, method)
            assert set(reply["n1@x"]) == {"ok"}
            assert not [a for a in out if isinstance(a, Log)], out


def test_meaningless_methods_get_an_error_logged_once_per_method() -> None:
    n = node()
    logs: list[Log] = []
    for _ in range(3):
        for method in ("pool_grow", "add_consumer", "rate_limit", "no_such_method"):
            [reply], out = ask(n, method)
            assert isinstance(reply["n1@x"]["error"], str) and reply["n1@x"]["error"]
            logs += [a for a in out if isinstance(a, Log)]
    assert len(logs) == 4, logs
    assert [log.level for log in logs].count(30) == 1  # only the unknown method warns
    [reply], _ = ask(n, "rate_limit", {"task_name": "tasks.add", "rate_limit": "1/s"})
    assert reply == {"n1@x": {"error": "unknown task"}}  # Celery's words for it
    [reply], _ = ask(n, "ping")
    assert reply == {"n1@x": {"ok": "pong"}}


def test_shutdown_replies_then_asks_the_host_to_stop() -> None:
    n = node()
    [reply], out = ask(n, "shutdown", {"msg": "bye"})
    assert reply == {"n1@x": {"ok": "shutting down"}}
    [request] = [a for a in out if isinstance(a, ShutdownRequested)]
    assert request.reason == "bye"
    # the clean stop the host then performs announces the node offline
    stop = n.stop(161.0)
    assert [a.body["type"] for a in stop if isinstance(a, Publish)] == ["worker-offline"]


def test_shutdown_not_addressed_to_the_node_is_ignored() -> None:
    n = node()
    body = pidbox_request("shutdown", {}, destination=["other@x"])
    out = n.receive_pidbox(Inbound.json(body, {"clock": 1}), 1.0)
    assert not [a for a in out if isinstance(a, ShutdownRequested)]


# -- wkctl inspect: arguments ------------------------------------------------------


def test_positional_values_follow_celerys_signature() -> None:
    assert parse_arguments("rate_limit", ("tasks.add", "10/s"), None) == {
        "task_name": "tasks.add",
        "rate_limit": "10/s",
    }
    assert parse_arguments("time_limit", ("tasks.add", "10", "20.5"), None) == {
        "task_name": "tasks.add",
        "soft": 10,
        "hard": 20.5,
    }
    assert parse_arguments("query_task", ("a", "b"), None) == {"ids": ["a", "b"]}
    assert parse_arguments("dump_tasks", ("rate_limit",), None) == {"taskinfoitems": ["rate_limit"]}
    assert parse_arguments("terminate", ("TERM", "t1", "t2"), None) == {
        "signal": "TERM",
        "task_id": ["t1", "t2"],
    }


def test_key_value_words_and_json_arguments() -> None:
    assert parse_arguments("active", ("safe=true",), None) == {"safe": True}
    assert parse_arguments("custom", ("a=1", "b=x"), '{"c": [1]}') == {"a": 1, "b": "x", "c": [1]}


@pytest.mark.parametrize(
    "method,args,json_args,message",
    [
        ("stats", ("extra",), None, "stats takes at most 0 positional argument(s)"),
        ("pool_grow", ("1", "2"), None, "pool_grow takes at most 1 positional argument(s) (n)"),
        ("stats", (), "{not json", "--args: not JSON"),
        ("stats", (), "[1]", "--args: must be a JSON object"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(
    method: str, args: tuple[str, ...], json_args: str | None, message: str
) -> None:
    with pytest.raises(CliError) as exc:
        parse_arguments(method, args, json_args)
    assert exc.value.exit_code == 2
    assert message in exc.value.message


def test_invented_method_names_are_logged_boundedly() -> None:
    n = node()
    warnings = 0
    for i in range(1100):
        _, out = ask(n, f"invented_{i}")
        warnings += sum(1 for a in out if isinstance(a, Log) and a.level == 30)
    assert warnings == 1024
    [reply], _ = ask(n, "ping")
    assert reply == {"n1@x": {"ok": "pong"}}
