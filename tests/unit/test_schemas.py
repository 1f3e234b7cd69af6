"""The schemas and the validation library.

Samples: real captures of Celery 5.7 and 5.4 on RabbitMQ and Redis (checked
in under tests/data; test_capture_validates.py makes fresh ones at test
time) plus hand-written forms of older releases and edge cases, each
labelled with why it exists.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from wkctl.protocol import schema_compiler as sc
from wkctl.protocol import validation as v
from wkctl.protocol.validation import (
    KINDS,
    SCHEMA_BASE,
    Issue,
    UnknownKind,
    detect_kind,
    export_schemas,
    is_valid,
    load_schema,
    schema_files,
    validate,
)
from wkctl.protocol.vocab import REQUEST_METHODS, request_kind

DATA = Path(__file__).resolve().parents[1] / "data"

REQUIRED_KINDS = {
    "hello",
    "clock",
    "revoked",
    "revoke",
    "election",
    "hello-reply",
    "clock-reply",
    "revoked-reply",
    "elect",
    "elect-ack",
    "heartbeat",
    "task-event",
    "event-batch",
    "envelope",
}


def record_kind(record: dict[str, Any]) -> str:
    family, _, name = record["kind"].partition(":")
    if family == "pidbox-request":
        # "heartbeat" names the event kind; the command's is heartbeat-request
        return request_kind(name)
    if family == "pidbox-reply":
        return f"{name}-reply"
    if family == "event-batch":
        return "event-batch"
    kind = detect_kind(record["body"])
    assert kind is not None, record
    return kind


def load_records() -> list[dict[str, Any]]:
    records = []
    for path in sorted(DATA.glob("*.ndjson")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                record["_source"] = f"{path.name}:{number}"
                records.append(record)
    return records


RECORDS = load_records()
SAMPLES = [(r["_source"], record_kind(r), r["body"]) for r in RECORDS]


def test_kinds_cover_the_issue() -> None:
    assert REQUIRED_KINDS <= set(KINDS)
    assert all(isinstance(d, str) and d and "\n" not in d for d in KINDS.values())


@pytest.mark.parametrize("name", [*KINDS, "common"])
def test_schema_passes_the_2020_12_metaschema(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{SCHEMA_BASE}{name}.json"
    assert schema["title"] and schema["description"]


def test_schema_files_are_packaged_and_exportable(tmp_path: Path) -> None:
    files = schema_files()
    assert set(files) == {*KINDS, "common"}
    for name, resource in files.items():
        assert json.loads(resource.read_text(encoding="utf-8"))["$id"].endswith(f"/{name}.json")
    written = export_schemas(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{n}.json" for n in files)
    for path in written:
        assert json.loads(path.read_text()) == load_schema(path.stem)


def test_every_ref_resolves_offline() -> None:
    ids = {load_schema(n)["$id"] for n in [*KINDS, "common"]}

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    from urllib.parse import urldefrag, urljoin

    for name in [*KINDS, "common"]:
        schema = load_schema(name)
        for ref in refs(schema):
            target, _ = urldefrag(urljoin(schema["$id"], ref))
            assert target in ids, f"{name}: {ref}"


def test_unknown_kind_names_the_kind_and_the_valid_ones() -> None:
    for call in (
        lambda: load_schema("helo"),
        lambda: validate({}, "helo"),
        lambda: is_valid({}, "helo"),
    ):
        with pytest.raises(UnknownKind) as info:
            call()
        assert "'helo'" in str(info.value) and "hello-reply" in str(info.value)
        assert isinstance(info.value, ValueError)


def test_samples_cover_every_kind() -> None:
    assert {kind for _, kind, _ in SAMPLES} >= REQUIRED_KINDS - {"envelope"}


@pytest.mark.parametrize("source,kind,body", SAMPLES, ids=[s for s, _, _ in SAMPLES])
def test_sample_validates(source: str, kind: str, body: Any) -> None:
    assert validate(body, kind) == []
    assert is_valid(body, kind)
    if kind in ("heartbeat", "elect", "elect-ack", "task-event"):
        assert is_valid(body, "event")
    if kind in REQUEST_METHODS or kind == "heartbeat-request":
        assert is_valid(body, "request")


@pytest.mark.parametrize("record", RECORDS, ids=[r["_source"] for r in RECORDS])
def test_sample_envelope_validates(record: dict[str, Any]) -> None:
    envelope = {"headers": record["headers"], "content_type": record["content_type"]}
    assert validate(envelope, "envelope") == []


def test_detect_kind() -> None:
    for source, kind, body in SAMPLES:
        detected = detect_kind(body)
        if kind == "revoke-reply":
            assert detected is None, source  # {ok: message} fits many commands' replies
        elif kind.endswith("-reply") and all(
            x is None or (isinstance(x, dict) and "error" in x) for x in body.values()
        ):
            assert detected is None, source  # null/{error} fit every reply kind
        else:
            assert detected == kind, source
    assert detect_kind("hello") is None
    assert detect_kind(42) is None
    assert detect_kind({}) is None
    assert detect_kind({"method": "stats", "arguments": {}}) == "stats"
    assert detect_kind({"method": "dump_conf", "arguments": {}}) == "conf"
    assert detect_kind({"method": "custom_cmd", "arguments": {}}) == "request"
    assert detect_kind({"type": "custom-x", "hostname": "h"}) == "event"
    assert (
        detect_kind({"headers": {"hostname": "h"}, "content_type": "application/json"})
        == "envelope"
    )


# ---------------------------------------------------------------------------
# mutants: rejected, with the right JSON pointer


def first(kind: str, predicate: Any = lambda body: True) -> Any:
    for _, k, body in SAMPLES:
        if k == kind and predicate(body):
            return copy.deepcopy(body)
    raise LookupError(kind)


def paths(issues: list[Issue]) -> set[str]:
    return {i.path for i in issues}


def node_of(reply: dict[str, Any]) -> str:
    return next(iter(reply))


def test_mutant_hello_without_from_node() -> None:
    body = first("hello")
    del body["arguments"]["from_node"]
    issues = validate(body, "hello")
    assert paths(issues) == {"/arguments"}
    assert "'from_node' is a required property" in issues[0].message


def test_mutant_wrong_method() -> None:
    body = first("hello")
    body["method"] = "helo"
    assert paths(validate(body, "hello")) == {"/method"}
    assert detect_kind(body) == "request"


def test_mutant_request_without_reply_fields() -> None:
    body = first("clock")
    del body["ticket"]
    issues = validate(body, "clock")
    assert {i.path for i in issues} == {""}
    assert any("reply_to" in i.message or "ticket" in i.message for i in issues)


def test_mutant_revoke_with_numeric_task_id() -> None:
    body = first("revoke")
    body["arguments"]["task_id"] = 5
    assert paths(validate(body, "revoke")) == {"/arguments/task_id"}


def test_mutant_heartbeat_timestamp_now() -> None:
    # the event that kills every Celery 5.4/5.7 worker of a cluster
    body = first("heartbeat")
    body["timestamp"] = "now"
    issues = validate(body, "heartbeat")
    assert paths(issues) == {"/timestamp"}
    assert "'now' is not of type 'number'" in issues[0].message
    assert not is_valid(body, "event")


@pytest.mark.parametrize("clock", [-1, 2**63, 1.5, "12", True, None])
def test_mutant_heartbeat_bad_clock(clock: Any) -> None:
    body = first("heartbeat")
    body["clock"] = clock
    assert paths(validate(body, "heartbeat")) == {"/clock"}


def test_clock_bounds_are_inclusive() -> None:
    body = first("heartbeat")
    for clock in (0, 2**63 - 1):
        body["clock"] = clock
        assert is_valid(body, "heartbeat")


def test_mutant_wrong_event_type() -> None:
    body = first("heartbeat")
    body["type"] = "worker-heartbeet"
    assert paths(validate(body, "heartbeat")) == {"/type"}
    assert detect_kind(body) == "event"
    elect = first("elect")
    elect["type"] = "worker-elect-ack"
    assert paths(validate(elect, "elect")) == {"/type"}


def test_mutant_elect_without_id() -> None:
    body = first("elect")
    del body["id"]
    issues = validate(body, "elect")
    assert paths(issues) == {""}
    assert "'id' is a required property" in issues[0].message


def test_mutant_hello_reply_bad_values() -> None:
    body = first("hello-reply", lambda b: isinstance(next(iter(b.values())).get("revoked"), dict))
    node = node_of(body)
    task_id = next(iter(body[node]["revoked"]))
    body[node]["revoked"][task_id] = [1.0]
    body[node]["clock"] = "12"
    assert paths(validate(body, "hello-reply")) == {
        f"/{node}/clock",
        f"/{node}/revoked/{task_id}",
    }


def test_mutant_hello_reply_without_clock() -> None:
    body = first("hello-reply")
    node = node_of(body)
    del body[node]["clock"]
    issues = validate(body, "hello-reply")
    assert paths(issues) == {f"/{node}"}
    assert "'clock' is a required property" in issues[0].message


def test_pointer_escapes_node_names() -> None:
    body = {"a/b~c@h": {"clock": -1}}
    assert paths(validate(body, "clock-reply")) == {"/a~1b~0c@h/clock"}


def test_mutant_event_batch_item() -> None:
    body = first("event-batch", lambda b: len(b) > 1)
    del body[1]["uuid"]
    assert paths(validate(body, "event-batch")) == {"/1"}


def test_mutant_envelope_pickle() -> None:
    envelope = {"headers": {"hostname": "w@h"}, "content_type": "application/x-python-serialize"}
    assert paths(validate(envelope, "envelope")) == {"/content_type"}
    assert paths(
        validate({"headers": {"clock": 1}, "content_type": "application/json"}, "envelope")
    ) == {"/headers"}


def test_non_objects_are_rejected_at_the_root() -> None:
    for kind in KINDS:
        for body in ("x", 1, None, True):
            issues = validate(body, kind)
            assert issues and paths(issues) == {""}, kind


# ---------------------------------------------------------------------------
# the fast path agrees with jsonschema


WRONG_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    1.5,
    1.0,
    "",
    "x",
    [],
    {},
    [1],
    {"a": 1},
    ["x"],
    math.inf,
]


def _locations(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _locations(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):
            yield from _locations(value, (*prefix, index))


def _replace(body: Any, where: tuple[Any, ...], value: Any) -> Any:
    if not where:
        return value
    clone = copy.deepcopy(body)
    parent = clone
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = value
    return clone


def _delete(body: Any, where: tuple[Any, ...]) -> Any:
    clone = copy.deepcopy(body)
    parent = clone
    for part in where[:-1]:
        parent = parent[part]
    del parent[where[-1]]
    return clone


def mutants(body: Any) -> Iterator[Any]:
    for where in _locations(body):
        for value in WRONG_VALUES:
            yield _replace(body, where, value)
        if where:
            yield _delete(body, where)


def _distinct_samples() -> list[tuple[str, Any]]:
    seen: set[str] = set()
    out = []
    for _, kind, body in SAMPLES:
        shape = kind + json.dumps(_shape(body), sort_keys=True)
        if shape not in seen:
            seen.add(shape)
            out.append((kind, body))
    return out


def _shape(node: Any) -> Any:
    if isinstance(node, dict):
        return {("<node>" if "@" in k else k): _shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_shape(x) for x in node[:2]]
    return type(node).__name__


def test_fast_path_agrees_with_jsonschema_on_samples_and_mutants() -> None:
    checked = disagreements = 0
    problems = []
    for sample_kind, body in _distinct_samples():
        for mutant in mutants(body):
            for kind in {sample_kind, "event", "request", "envelope"}:
                fast = is_valid(mutant, kind)
                slow = v._jsonschema_validator(kind).is_valid(mutant)
                checked += 1
                if fast != slow:
                    disagreements += 1
                    if len(problems) < 5:
                        problems.append((kind, fast, slow, mutant))
    assert checked > 5000
    assert disagreements == 0, problems


def test_fast_path_agrees_across_kinds() -> None:
    # every sample against every kind: mostly invalid, a few valid twice
    for _, _, body in SAMPLES:
        for kind in KINDS:
            assert is_valid(body, kind) == v._jsonschema_validator(kind).is_valid(body), kind


def test_fast_path_refuses_unknown_keywords() -> None:
    compiler = sc._Compiler({})
    with pytest.raises(sc._CompileError):
        compiler.emit({"uniqueItems": True}, SCHEMA_BASE, "x", 1, [])
    with pytest.raises(sc._CompileError):
        compiler.emit({"enum": [1, 2]}, SCHEMA_BASE, "x", 1, [])


def test_fast_path_source_is_inspectable() -> None:
    source = v.fast_path_source("hello-reply")
    assert source.startswith("def ") and "return False" in source


def test_is_valid_is_fast() -> None:
    # a smoke check, not a benchmark: far above the jsonschema loop on any CI box
    import time

    bodies = [(k, b) for _, k, b in SAMPLES] * 40
    start = time.perf_counter()
    for kind, body in bodies:
        is_valid(body, kind)
    fast = len(bodies) / (time.perf_counter() - start)
    validator = {k: v._jsonschema_validator(k) for k in KINDS}
    sample = bodies[:500]
    start = time.perf_counter()
    for kind, body in sample:
        validator[kind].is_valid(body)
    slow = len(sample) / (time.perf_counter() - start)
    assert fast > 5 * slow, (fast, slow)
