"""``wkctl validate`` and ``wkctl schema``: outputs, exit codes, bad inputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wkctl.cli.schema import schema_group
from wkctl.cli.validate import validate_cmd
from wkctl.protocol.validation import KINDS, load_schema

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "celery-5.7-amqp-sample.ndjson"

HEARTBEAT = {
    "type": "worker-heartbeat",
    "hostname": "w1@h",
    "pid": 10,
    "clock": 5,
    "timestamp": 1700000000.5,
    "utcoffset": 0,
    "freq": 2.0,
    "sw_ident": "py-celery",
    "sw_ver": "5.4.0",
    "sw_sys": "Linux",
}
HELLO = {
    "method": "hello",
    "arguments": {"from_node": "w1@h", "revoked": []},
    "destination": None,
    "pattern": None,
    "matcher": None,
    "ticket": "t",
    "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"},
}


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(validate_cmd, list(args), input=input, catch_exceptions=False)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def json_results(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def test_valid_files_exit_0(tmp_path: Path) -> None:
    one = write(tmp_path / "one.json", json.dumps(HELLO))
    result = run(one, str(SAMPLE))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("31 messages: 31 valid, 0 invalid")


def test_json_output_shape(tmp_path: Path) -> None:
    bad = dict(HEARTBEAT, clock=-1)
    path = write(
        tmp_path / "m.ndjson", json.dumps(HEARTBEAT) + "\n\n" + json.dumps(bad) + "\n{oops\n"
    )
    result = run("--json", path)
    assert result.exit_code == 1
    results = json_results(result.output)
    assert [r["line"] for r in results] == [1, 3, 4]
    for r in results:
        assert set(r) >= {"source", "kind", "valid", "errors"}
        assert r["source"] == f"{path}:{r['line']}"
        for error in r["errors"]:
            assert set(error) == {"path", "message"}
    assert results[0] == {
        "source": f"{path}:1",
        "file": path,
        "line": 1,
        "kind": "heartbeat",
        "valid": True,
        "errors": [],
    }
    assert results[1]["valid"] is False
    assert results[1]["errors"] == [
        {"path": "/clock", "message": "-1 is less than the minimum of 0"}
    ]
    assert results[2]["kind"] is None and results[2]["valid"] is False
    assert results[2]["errors"][0]["path"] == ""
    assert "malformed JSON" in results[2]["errors"][0]["message"]
    assert "line 1 column 2" in results[2]["errors"][0]["message"]


def test_human_output_names_source_pointer_and_expectation(tmp_path: Path) -> None:
    body = dict(HEARTBEAT, timestamp="now")
    path = write(tmp_path / "x.ndjson", json.dumps(HEARTBEAT) + "\n" + json.dumps(body) + "\n")
    result = run(path)
    assert result.exit_code == 1
    assert f"{path}:2: invalid heartbeat" in result.output
    assert "  /timestamp: 'now' is not of type 'number'" in result.output
    assert f"{path}:1" not in result.output
    assert "2 messages: 1 valid, 1 invalid" in result.output


def test_explicit_kind_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", json.dumps({"w1@h": {"ok": "pong"}}))
    detected = run("--json", path)
    assert detected.exit_code == 0
    assert json_results(detected.output)[0]["kind"] == "ping-reply"
    result = run("--kind", "clock-reply", "--json", path)
    assert result.exit_code == 1
    assert json_results(result.output)[0]["errors"][0]["path"] == "/w1@h"


def test_undetectable_kind_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "u.json", json.dumps({"w1@h": None}))
    result = run(path)
    assert result.exit_code == 1
    assert "kind not detectable" in result.output and "--kind" in result.output
    assert run("--kind", "hello-reply", path).exit_code == 0


def test_yaml_documents(tmp_path: Path) -> None:
    text = (
        "# two messages\n"
        + yaml_dump(HELLO)
        + "---\n"
        + yaml_dump(dict(HELLO, method="helo"))
        + "---\n"
        + "key: [unclosed\n"
    )
    path = write(tmp_path / "m.yaml", text)
    result = run("--json", path)
    assert result.exit_code == 1
    results = json_results(result.output)
    assert [r["document"] for r in results] == [1, 2, 3]
    assert [r["source"] for r in results] == [f"{path}#1", f"{path}#2", f"{path}#3"]
    assert results[0]["valid"] and results[0]["line"] == 2
    assert results[1]["kind"] == "request"  # unknown method: common request fields only
    assert results[1]["valid"]
    assert not results[2]["valid"] and "malformed YAML" in results[2]["errors"][0]["message"]
    human = run(path)
    last_line = text.count("\n") + 1  # the parser reports where it gave up: stream end
    assert f"{path}#3 (line {last_line}): invalid" in human.output
    strict = run("--kind", "hello", "--json", path)
    assert json_results(strict.output)[1]["errors"][0]["path"] == "/method"


def test_yaml_is_safe_loaded(tmp_path: Path) -> None:
    path = write(tmp_path / "evil.yml", "!!python/object/apply:os.system ['echo pwned']\n")
    result = run("--json", path)
    assert result.exit_code == 1
    error = json_results(result.output)[0]["errors"][0]["message"]
    assert "malformed YAML" in error


def yaml_dump(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def test_stdin(tmp_path: Path) -> None:
    result = run("--json", "-", input=json.dumps(HELLO) + "\n" + json.dumps(HEARTBEAT) + "\n")
    assert result.exit_code == 0
    assert [r["source"] for r in json_results(result.output)] == ["<stdin>:1", "<stdin>:2"]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--kind", "nope", "x.json"],
        ["--bogus", "x.json"],
        ["-", "-"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(validate_cmd, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_unreadable_inputs_are_invalid_messages(tmp_path: Path) -> None:
    binary = tmp_path / "bin.ndjson"
    binary.write_bytes(b'{"a": 1}\n\xff\xfe\n')
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"x": "\xe9"}')
    missing = tmp_path / "missing.json"
    folder = tmp_path / "dir.json"
    folder.mkdir()
    result = run("--json", str(missing), str(folder), str(binary), str(latin))
    assert result.exit_code == 1
    results = json_results(result.output)
    by_file = {r["file"]: r for r in results if not r["valid"]}
    assert "cannot read" in by_file[str(missing)]["errors"][0]["message"]
    assert "cannot read" in by_file[str(folder)]["errors"][0]["message"]
    assert "not UTF-8" in by_file[str(latin)]["errors"][0]["message"]
    assert "not UTF-8" in by_file[str(binary)]["errors"][0]["message"]
    assert by_file[str(binary)]["line"] == 2
    # the human summary counts the inputs that could not be read apart
    human = run(str(missing), str(folder), str(binary), str(latin))
    assert human.exit_code == 1
    assert human.output.strip().splitlines()[-1] == (
        "5 messages: 0 valid, 5 invalid, of which 4 could not be read"
    )


@pytest.mark.parametrize(
    "text,needle",
    [
        ('{"clock": NaN}', "non-standard JSON constant NaN"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("", "malformed JSON"),
        ('{"a": 1} trailing', "Extra data"),
    ],
)
def test_malformed_json_is_reported_cleanly(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path / "m.json", text)
    result = run("--json", path)
    assert result.exit_code == 1
    assert needle in json_results(result.output)[0]["errors"][0]["message"]


def test_junit_report(tmp_path: Path) -> None:
    bad = dict(HEARTBEAT, pid="worker-heartbeet")
    path = write(tmp_path / "m.ndjson", json.dumps(HEARTBEAT) + "\n" + json.dumps(bad) + "\n")
    report = tmp_path / "report.xml"
    result = run("--junit", str(report), path)
    assert result.exit_code == 1
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    assert [c.get("classname") for c in cases] == [path, path]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure is not None
    assert cases[1].get("name") == f"{path}:2 [heartbeat]"
    assert "/pid" in (failure.get("message") or "")
    assert "worker-heartbeet" in (failure.text or "")


def test_junit_unwritable_path_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path / "m.json", json.dumps(HELLO))
    result = CliRunner().invoke(
        validate_cmd, ["--junit", str(tmp_path / "no" / "such" / "r.xml"), path]
    )
    assert result.exit_code == 2
    assert "cannot write JUnit report" in result.output


def test_capture_records(tmp_path: Path) -> None:
    records = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    records[2]["headers"]["clock"] = "one"  # envelope error
    records[3]["body"]["pid"] = "x"  # body error
    path = write(tmp_path / "c.ndjson", "".join(json.dumps(r) + "\n" for r in records))
    for args in ([path], ["--capture", path]):
        result = run("--json", *args)
        assert result.exit_code == 1
        results = json_results(result.output)
        invalid = {r["line"]: r for r in results if not r["valid"]}
        assert set(invalid) == {3, 4}
        assert [e["path"] for e in invalid[3]["errors"]] == ["/headers/clock"]
        assert [e["path"] for e in invalid[4]["errors"]] == ["/body/pid"]
        kinds = {r["kind"] for r in results}
        assert {"hello", "hello-reply", "revoke-reply", "event-batch", "heartbeat"} <= kinds
    plain = write(tmp_path / "p.ndjson", json.dumps(HELLO) + "\n")
    result = run("--capture", "--json", plain)
    assert result.exit_code == 1
    assert "not a capture record" in json_results(result.output)[0]["errors"][0]["message"]


def test_schema_list_show_export(tmp_path: Path) -> None:
    runner = CliRunner()
    listing = runner.invoke(schema_group, ["list"])
    assert listing.exit_code == 0
    for kind, description in KINDS.items():
        assert any(
            line.split()[0] == kind and description in line for line in listing.output.splitlines()
        )
    as_json = runner.invoke(schema_group, ["list", "--json"])
    assert json.loads(as_json.output) == KINDS
    show = runner.invoke(schema_group, ["show", "hello-reply"])
    assert show.exit_code == 0 and json.loads(show.output) == load_schema("hello-reply")
    assert runner.invoke(schema_group, ["show", "common"]).exit_code == 0
    unknown = runner.invoke(schema_group, ["show", "helo"])
    assert unknown.exit_code == 2 and "helo" in unknown.output
    export = runner.invoke(schema_group, ["export", str(tmp_path / "s")])
    assert export.exit_code == 0
    assert sorted(p.stem for p in (tmp_path / "s").iterdir()) == sorted([*KINDS, "common"])
    blocked = tmp_path / "file"
    blocked.write_text("x")
    failed = runner.invoke(schema_group, ["export", str(blocked / "sub")])
    assert failed.exit_code == 1 and "cannot write schemas" in failed.output


def test_undetectable_kind_names_the_missing_field(tmp_path: Path) -> None:
    lines = [{"method": "hello"}, {"type": "worker-heartbeat", "clock": 1}, {"hostname": "w@h"}]
    path = write(tmp_path / "m.ndjson", "\n".join(json.dumps(x) for x in lines) + "\n")
    result = run(path)
    assert result.exit_code == 1
    assert "has 'method' but no 'arguments'" in result.output
    assert "has 'type' but no 'hostname'" in result.output
    assert "has 'hostname' but no 'type'" in result.output


def test_yaml_stream_starting_with_separator_numbers_documents_from_one(tmp_path: Path) -> None:
    text = (
        "---\n"
        + json.dumps(HELLO)
        + "\n---\n"
        + json.dumps(HEARTBEAT)
        + "\n---\n!!python/object:os.system {}\n"
    )
    result = run("--json", write(tmp_path / "m.yaml", text))
    assert result.exit_code == 1
    numbers = [(r["source"].rsplit("/", 1)[-1], r["document"]) for r in json_results(result.output)]
    assert numbers == [("m.yaml#1", 1), ("m.yaml#2", 2), ("m.yaml#3", 3)], numbers
