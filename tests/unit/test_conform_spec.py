"""The conformance kit against the spec, and its reports, without a broker.

* the statements compiled into ``wkctl.conform.statements`` are exactly the
  ones in ``spec/`` (the spec is not in the wheel, so the kit carries a
  copy; this test is what keeps the copy honest);
* every MUST statement has a check, or is marked in the spec as not
  testable from outside, or is listed in ``wkctl.conform.coverage`` with
  the reason a probe cannot verify it;
* ``--list``, ``--only`` and the three report formats have the documented
  shape.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wkctl.cli.main import cli, main
from wkctl.conform import CHECKS, STATEMENTS, Result, Run, select
from wkctl.conform.coverage import NOT_PROBED, uncovered
from wkctl.conform.report import human_lines, json_report, junit_xml
from wkctl.conform.specparse import parse_markdown, parse_spec_dir, render_module

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "spec"


def covered_ids() -> set[str]:
    return {sid for c in CHECKS.values() for sid in c.statements}


# -- the compiled statements and the spec ------------------------------------------


def test_compiled_statements_match_the_spec() -> None:
    parsed = parse_spec_dir(SPEC)
    assert parsed, "no statement found in spec/"
    stale = sorted(set(parsed) ^ set(STATEMENTS))
    assert not stale, (
        f"conform/statements.py is stale for {stale}: regenerate it with "
        "`python -m wkctl.conform.specparse spec --output conform/statements.py && ruff format conform/statements.py`"
    )
    for sid, statement in parsed.items():
        assert STATEMENTS[sid] == statement, f"{sid} differs from the spec: regenerate"


def test_every_must_statement_is_checked_or_accounted_for() -> None:
    missing = uncovered(STATEMENTS.values(), covered_ids())
    assert not missing, (
        f"MUST statements with no check, not marked 'not testable from outside' in the spec "
        f"and not listed in conform/coverage.py: {missing}"
    )


def test_not_probed_entries_are_current() -> None:
    covered = covered_ids()
    for sid, reason in NOT_PROBED.items():
        assert sid in STATEMENTS, f"NOT_PROBED names {sid}, which the spec does not define"
        assert STATEMENTS[sid].testable, f"{sid} is marked not testable in the spec already"
        assert sid not in covered, f"{sid} has a check now: remove it from NOT_PROBED"
        assert reason.strip()


def test_checks_cite_existing_statements_and_documented_defects() -> None:
    assert len(CHECKS) >= 40
    for chk in CHECKS.values():
        assert chk.statement in STATEMENTS
        assert chk.level in ("MUST", "SHOULD", "MAY"), chk.id
        assert chk.requirement == STATEMENTS[chk.statement].text
        if chk.deviation:
            assert STATEMENTS[chk.deviation].level == "DEFECT", chk.id
    # The minimum list, by statement.
    for sid in (
        "PIDBOX-14",  # ping
        "PIDBOX-12",  # clock
        "MINGLE-4",  # hello
        "PIDBOX-13",  # revoked
        "PIDBOX-6",  # ticket and clock headers
        "PIDBOX-3",  # other destinations ignored
        "PIDBOX-9",  # unknown methods
        "CLOCK-3",  # forward
        "CLOCK-4",  # adjust past a higher clock
        "REVOKED-4",  # both wire forms
        "GOSSIP-1",  # heartbeats at freq
        "GOSSIP-2",  # required fields
        "EVENT-2",  # increasing clocks
        "ELECT-1",  # worker-elect on election
        "ELECT-2",  # acks every worker-elect
        "PIDBOX-15",  # revoke
    ):
        assert sid in covered_ids(), sid


def test_spec_parser_reads_the_statement_convention() -> None:
    text = """# 4. Pidbox

Prose that mentions [PIDBOX-1] is a reference, not a definition.

- **[PIDBOX-1]** (MUST) A node MUST answer
  on two lines.
- **[PIDBOX-2]** (SHOULD; not testable from outside) It SHOULD log.

| Id | Defect | Affected | Fix |
|---|---|---|---|
| DEFECT-1 | Crashes alone. | 5.7 | [ELECT-6] |
"""
    statements = {s.id: s for s in parse_markdown(text)}
    assert set(statements) == {"PIDBOX-1", "PIDBOX-2", "DEFECT-1"}
    assert statements["PIDBOX-1"].text == "A node MUST answer on two lines."
    assert statements["PIDBOX-1"].level == "MUST" and statements["PIDBOX-1"].testable
    assert statements["PIDBOX-2"].level == "SHOULD" and not statements["PIDBOX-2"].testable
    assert statements["DEFECT-1"].level == "DEFECT"
    assert statements["PIDBOX-1"].section == "4. Pidbox"
    # the generated module round-trips
    namespace: dict[str, object] = {}
    source = render_module(statements.values()).replace("from .model", "from wkctl.conform.model")
    exec(compile(source, "statements", "exec"), namespace)
    assert namespace["STATEMENTS"] == statements


# -- selection and --list ---------------------------------------------------------


def test_select_levels_and_only() -> None:
    must = select()
    strict = select(strict=True)
    assert all(c.level == "MUST" for c in must)
    assert len(strict) > len(must)
    assert {c.id for c in select(["PIDBOX-9"])} == {"pidbox.unknown-method"}
    assert {c.id for c in select(["election"])} >= {"election.ack-peer", "election.elect"}
    assert [c.id for c in select(["pidbox.expired"])] == ["pidbox.expired"]  # SHOULD, asked for
    with pytest.raises(KeyError):
        select(["NOPE-1"])


def test_list_prints_every_check_with_its_statement() -> None:
    result = CliRunner().invoke(cli, ["conform", "--list"])
    assert result.exit_code == 0, result.output
    for chk in CHECKS.values():
        line = next(line for line in result.output.splitlines() if f" {chk.id} " in line)
        assert f"[{chk.statement}]" in line and chk.level in line
    assert "not probed" in result.output
    as_json = json.loads(CliRunner().invoke(cli, ["conform", "--list", "--json"]).output)
    assert {c["id"] for c in as_json["checks"]} == set(CHECKS)
    assert set(as_json["not_probed"]) == set(NOT_PROBED)
    assert all(c["requirement"] for c in as_json["checks"])


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["conform", "--list", "--only", "NOPE-1"])
    assert exc.value.code == 2
    assert "--only NOPE-1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["-b", "amqp://127.0.0.1:1//", "conform"])
    assert exc.value.code == 2
    assert "--node" in capsys.readouterr().err


# -- report shapes ----------------------------------------------------------------


def fake_run() -> Run:
    run = Run(node="n1@host", broker="amqp://guest:**@localhost//", strict=True)
    for chk, status in zip(
        [
            CHECKS["pidbox.ping"],
            CHECKS["pidbox.ticket"],
            CHECKS["events.online"],
            CHECKS["clock.single"],
        ],
        ["pass", "fail", "skip", "deviation"],
        strict=True,
    ):
        run.results.append(
            Result(
                id=chk.id,
                statement=chk.statement,
                level=chk.level,
                section=chk.section,
                title=chk.title,
                requirement=chk.requirement,
                status=status,
                detail=f"detail of {chk.id}",
                expected="abc" if status in ("fail", "deviation") else None,
                actual="<no ticket header>" if status in ("fail", "deviation") else None,
                duration=0.01,
                deviation=chk.deviation if status == "deviation" else None,
            )
        )
    return run


def test_human_report_groups_by_section_and_ends_with_counts() -> None:
    lines = human_lines(fake_run())
    assert lines[-1] == "1 passed, 1 failed, 1 skipped, 1 known deviation"
    text = "\n".join(lines)
    assert "4. Pidbox: requests and replies:" in text
    assert "FAIL  [PIDBOX-6] pidbox.ticket" in text
    assert "expected: abc" in text and "actual:   <no ticket header>" in text
    assert f"requirement: {CHECKS['pidbox.ticket'].requirement}" in text
    assert "KNOWN [CLOCK-5] clock.single" in text and "DEFECT-11" not in lines[-1]
    sections = [line for line in lines if line.endswith(":") and line[0].isdigit()]
    assert sections == sorted(sections, key=lambda s: int(s.split(".")[0]))


def test_json_report_shape() -> None:
    doc = json_report(fake_run())
    json.dumps(doc)
    assert doc["passed"] is False
    assert doc["summary"] == {
        "passed": 1,
        "failed": 1,
        "skipped": 1,
        "not_run": 0,
        "known_deviations": 1,
    }
    by_id = {c["id"]: c for c in doc["checks"]}
    for check in doc["checks"]:
        assert {"id", "statement", "title", "result", "detail", "duration"} <= set(check)
    assert by_id["pidbox.ticket"]["expected"] == "abc"
    assert by_id["clock.single"]["known_deviation"] == "DEFECT-11"


def test_junit_shape() -> None:
    root = ET.fromstring(junit_xml(fake_run()))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} == {
        "4. Pidbox: requests and replies",
        "9. Gossip, heartbeats and liveness",
        "6. Lamport clock",
    }
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert len(cases) == 4
    failed = next(c for name, c in cases.items() if "pidbox.ticket" in name)
    failure = failed.find("failure")
    assert failure is not None and "expected: abc" in (failure.text or "")
    skipped = next(c for name, c in cases.items() if "events.online" in name)
    assert skipped.find("skipped") is not None
    pidbox = next(s for s in suites if s.get("name", "").startswith("4."))
    assert pidbox.get("tests") == "2" and pidbox.get("failures") == "1"


def test_unreachable_broker_is_a_broker_error(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        main(["-b", "amqp://guest:secret@127.0.0.1:1//", "conform", "--node", "n@h"])
    assert exc.value.code == 4
    err = capsys.readouterr().err
    assert err.startswith("wkctl: error: cannot connect to broker amqp://guest:**@127.0.0.1:1//")
    assert "secret" not in err and "Traceback" not in err
    assert time.monotonic() - started < 15


def test_heartbeat_extras_exempts_only_the_answer_to_the_heartbeat_command() -> None:
    """[GOSSIP-9]: Celery's on-demand heartbeat lacks active/processed/loadavg;
    a periodic one may arrive before it, so the exempt heartbeat is the first
    one without the extras after the command, and only that one."""
    from types import SimpleNamespace

    from wkctl.conform.checks_events import heartbeat_extras
    from wkctl.conform.probe import RecordedEvent
    from wkctl.conform.registry import Failed

    def beat(at: float, extras: bool) -> RecordedEvent:
        body = {"type": "worker-heartbeat", "hostname": "n@h", "freq": 2.0}
        if extras:
            body.update(active=0, processed=1, loadavg=[0.1, 0.1, 0.1])
        return RecordedEvent(at, "worker.heartbeat", {}, "application/json", body)

    def ctx(*beats: RecordedEvent, asked: float | None = 10.0) -> Any:
        return SimpleNamespace(facts=SimpleNamespace(heartbeats=list(beats), heartbeat_asked=asked))

    periodic_first = ctx(beat(10.1, True), beat(10.2, False), beat(12.1, True))
    assert heartbeat_extras(periodic_first) == "present"  # the CI failure's order
    assert heartbeat_extras(ctx(beat(10.2, False), beat(12.1, True))) == "present"
    with pytest.raises(Failed):  # a second heartbeat without them
        heartbeat_extras(ctx(beat(10.2, False), beat(12.1, True), beat(14.1, False)))
    with pytest.raises(Failed):  # before the command: not its answer
        heartbeat_extras(ctx(beat(9.0, False), beat(12.1, True)))
    with pytest.raises(Failed):  # no command sent: nothing is exempt
        heartbeat_extras(ctx(beat(10.2, False), beat(12.1, True), asked=None))
