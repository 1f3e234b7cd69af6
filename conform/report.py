"""Report writers: human text grouped by spec section, JSON, JUnit XML.

The human report is for a person reading a CI log: one line per check with
its statement id, and under each failure the requirement quoted, what was
expected and what was observed.  JSON is for programs; JUnit XML is what
CI systems render (one test suite per section, one test case per check,
failures with the expected-vs-actual text, skips with their reason).
Checks *not run* (they need a node that answers, and it does not) are one
block at the end of the text report, ``"result": "not-run"`` in JSON and
``<skipped type="not-run">`` in JUnit.
"""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

from .registry import Check
from .runner import DEVIATION, FAIL, NOT_RUN, PASS, SKIP, Result, Run

__all__ = ["human_lines", "json_report", "junit_xml", "list_lines", "result_lines"]

_MARK = {PASS: "PASS", FAIL: "FAIL", SKIP: "SKIP", DEVIATION: "KNOWN", NOT_RUN: "NOT-RUN"}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _section_key(section: str) -> tuple[int, str]:
    """Spec order: sections are numbered (``4. Pidbox: ...``)."""
    number = section.split(".", 1)[0]
    return (int(number), section) if number.isdigit() else (10_000, section)


def by_section(items: Iterable[Any]) -> list[tuple[str, list[Any]]]:
    """Items (results or checks) grouped by spec section, in spec order."""
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(item.section, []).append(item)
    return sorted(groups.items(), key=lambda kv: _section_key(kv[0]))


def result_lines(result: Result) -> list[str]:
    """The lines of one check in the human report."""
    head = f"  {_MARK[result.status]:5} [{result.statement}] {result.id}: {result.title}"
    if result.level != "MUST":
        head += f" ({result.level})"
    lines = [head]
    if result.status == PASS:
        if result.detail:
            lines[0] += f" - {result.detail}"
        return lines
    if result.status == SKIP:
        lines.append(f"        skipped: {result.detail}")
        return lines
    if result.status == NOT_RUN:
        lines.append(f"        {result.detail}")
        return lines
    lines.append(f"        requirement: {result.requirement}")
    lines.append(
        f"        {'deviation' if result.status == DEVIATION else 'failure'}: {result.detail}"
    )
    if result.expected is not None or result.actual is not None:
        lines.append(f"        expected: {_show(result.expected)}")
        lines.append(f"        actual:   {_show(result.actual)}")
    return lines


def human_lines(run: Run) -> list[str]:
    lines = [f"conformance of {run.node} on {run.broker}" + (" (strict)" if run.strict else "")]
    if run.identity:
        who = ", ".join(f"{k} {v}" for k, v in run.identity.items())
        lines.append(f"node reports: {who}")
    ran = [r for r in run.results if r.status != NOT_RUN]
    for section, results in by_section(ran):
        lines.append("")
        lines.append(f"{section}:")
        for result in results:
            lines.extend(result_lines(result))
    not_run = [r for r in run.results if r.status == NOT_RUN]
    if not_run:
        # One block, not one line per check: they all wait on the failure above.
        reasons = sorted({r.detail for r in not_run})
        lines.append("")
        lines.append(f"Not run ({len(not_run)}): " + "; ".join(reasons) + ":")
        lines.extend(
            textwrap.wrap(
                ", ".join(r.id for r in not_run),
                width=100,
                initial_indent="  ",
                subsequent_indent="  ",
                break_on_hyphens=False,
            )
        )
    lines.append("")
    lines.append(run.summary())
    return lines


def json_report(run: Run) -> dict[str, Any]:
    return run.as_dict()


def junit_xml(run: Run) -> str:
    root = ET.Element(
        "testsuites",
        name=f"wkctl conform {run.node}",
        tests=str(len(run.results)),
        failures=str(run.count(FAIL)),
        skipped=str(run.count(SKIP) + run.count(NOT_RUN)),
        time=f"{run.duration:.3f}",
    )
    for name, results in by_section(run.results):
        suite = ET.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(results)),
            failures=str(sum(r.status == FAIL for r in results)),
            skipped=str(sum(r.status in (SKIP, NOT_RUN) for r in results)),
            errors="0",
            time=f"{sum(r.duration for r in results):.3f}",
        )
        for result in results:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conform.{name}",
                name=f"[{result.statement}] {result.id}: {result.title}",
                time=f"{result.duration:.3f}",
            )
            text = "\n".join(result_lines(result)[1:])
            if result.status == FAIL:
                failure = ET.SubElement(case, "failure", message=result.detail, type=result.level)
                failure.text = text
            elif result.status == SKIP:
                ET.SubElement(case, "skipped", message=result.detail)
            elif result.status == NOT_RUN:
                # JUnit has no "not run": a skip, typed so tools can tell it apart.
                ET.SubElement(case, "skipped", message=result.detail, type=NOT_RUN)
            elif result.status == DEVIATION:
                out = ET.SubElement(case, "system-out")
                out.text = f"known deviation {result.deviation}\n{text}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def list_lines(checks: Iterable[Check]) -> list[str]:
    """``--list``: every check with its statement, level and requirement."""
    lines: list[str] = []
    for section, group in by_section(checks):
        if lines:
            lines.append("")
        lines.append(f"{section}:")
        for chk in group:
            lines.append(f"  {chk.id:28} {'[' + chk.statement + ']':13} {chk.level:6} {chk.title}")
    return lines
