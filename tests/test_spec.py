"""The specification's form: numbered statements, references, AsyncAPI document.

The statement format is part of the contract (the conformance kit and third
parties extract statements by it), so these tests hold the spec to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

import pytest
import yaml

from wkctl.protocol.validation import KINDS

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "spec" / "protocol.md"
ASYNCAPI = REPO / "spec" / "asyncapi.yaml"

STATEMENT = re.compile(
    r"^- \*\*\[(?P<id>[A-Z]+-\d+)\]\*\* \((?P<level>MUST|SHOULD|MAY)"
    r"(?P<untestable>; not testable from outside)?\) (?P<text>.*)$"
)
KEYWORD = re.compile(
    r"\b(MUST NOT|MUST|REQUIRED|SHALL NOT|SHALL|SHOULD NOT|SHOULD|RECOMMENDED|MAY|OPTIONAL)\b"
)
STRENGTH = {
    "MUST": 3,
    "MUST NOT": 3,
    "REQUIRED": 3,
    "SHALL": 3,
    "SHALL NOT": 3,
    "SHOULD": 2,
    "SHOULD NOT": 2,
    "RECOMMENDED": 2,
    "MAY": 1,
    "OPTIONAL": 1,
}
LEVEL_STRENGTH = {"MUST": 3, "SHOULD": 2, "MAY": 1}


def parse_statements(text: str) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Statements (id, level, untestable, text, section) and the prose lines outside them."""
    statements: list[dict[str, Any]] = []
    prose: list[tuple[int, str]] = []
    current: dict[str, Any] | None = None
    section = ""
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
            current = None
            continue
        if in_code:
            continue
        if line.startswith("## "):
            section = line[3:].strip()
        match = STATEMENT.match(line)
        if match:
            current = {
                "id": match["id"],
                "level": match["level"],
                "untestable": bool(match["untestable"]),
                "text": match["text"],
                "section": section,
                "line": number,
            }
            statements.append(current)
        elif current is not None and line.startswith("  ") and line.strip():
            current["text"] += " " + line.strip()
        else:
            current = None
            prose.append((number, line))
    return statements, prose


TEXT = SPEC.read_text(encoding="utf-8")
STATEMENTS, PROSE = parse_statements(TEXT)
IDS = [s["id"] for s in STATEMENTS]


def test_spec_has_numbered_statements_in_every_area() -> None:
    areas = {i.split("-")[0] for i in IDS}
    assert {
        "TRANSPORT",
        "MSG",
        "LIMIT",
        "PIDBOX",
        "EVENT",
        "CLOCK",
        "REVOKED",
        "MINGLE",
        "GOSSIP",
        "ELECT",
        "STATE",
        "SEC",
    } <= areas
    assert len(STATEMENTS) >= 80


def test_statement_ids_are_unique() -> None:
    duplicates = sorted({i for i in IDS if IDS.count(i) > 1})
    assert not duplicates


def test_statement_level_is_its_strongest_keyword() -> None:
    for statement in STATEMENTS:
        found = KEYWORD.findall(statement["text"])
        assert found, f"{statement['id']} has no RFC 2119 keyword"
        strongest = max(STRENGTH[k] for k in found)
        assert strongest == LEVEL_STRENGTH[statement["level"]], (
            statement["id"],
            statement["level"],
            found,
        )


def test_keywords_only_in_statements_and_conventions() -> None:
    # the conventions section defines the keywords; no other prose may use them
    conventions_end = TEXT[: TEXT.index("## 2.")].count("\n") + 1
    stray = [(n, line) for n, line in PROSE if n > conventions_end and KEYWORD.search(line)]
    assert not stray


def test_every_reference_resolves() -> None:
    defined = set(IDS) | set(re.findall(r"^\| (DEFECT-\d+) \|", TEXT, re.M))
    cited = set(re.findall(r"\[([A-Z]+-\d+)\]", TEXT))
    assert cited - defined == set()
    for path in (REPO / "schemas").glob("*.json"):
        for cite in re.findall(r"\[([A-Z]+-\d+)\]", path.read_text()):
            assert cite in defined, (path.name, cite)


def test_untestable_statements_are_marked() -> None:
    untestable = [s["id"] for s in STATEMENTS if s["untestable"]]
    assert untestable, "some internal rules cannot be probed from outside"
    assert all(s["level"] in ("MUST", "SHOULD", "MAY") for s in STATEMENTS)


def test_design_decisions_are_stated() -> None:
    body = " ".join(s["text"] for s in STATEMENTS)
    for needle in (
        "10,000,000",  # max clock jump
        "2^53-1",  # initial sync bound
        "2^63-1",
        "50,000",
        "10,800",
        "8 MiB",
        "32 levels",
        "expire_window",
        '"<hostname>.<pid>"',
        "default 10 s",
        "per distinct node",
        "application/json",
    ):
        assert needle in body, needle


def test_spec_names_every_schema_and_the_schemas_exist() -> None:
    linked = set(re.findall(r"\(\.\./schemas/([a-z_-]+)\.json\)", TEXT))
    assert set(KINDS) <= linked
    for name in linked:
        assert (REPO / "schemas" / f"{name}.json").is_file()


# ---------------------------------------------------------------------------
# AsyncAPI


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_refs(item))
    return found


def _pointer(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.fixture(scope="module")
def asyncapi() -> Any:
    return yaml.safe_load(ASYNCAPI.read_text(encoding="utf-8"))


def test_asyncapi_parses_as_version_3(asyncapi: Any) -> None:
    assert asyncapi["asyncapi"].startswith("3.")
    assert {"info", "channels", "operations", "components"} <= set(asyncapi)
    assert {c["address"] for c in asyncapi["channels"].values()} == {
        "celery.pidbox",
        "reply.celery.pidbox",
        "celeryev",
    }
    for operation in asyncapi["operations"].values():
        assert operation["action"] in ("send", "receive")


def test_asyncapi_refs_resolve(asyncapi: Any) -> None:
    refs = _refs(asyncapi)
    assert refs
    external = 0
    for ref in refs:
        target, fragment = urldefrag(ref)
        if not target:
            _pointer(asyncapi, fragment)  # raises if it does not resolve
            continue
        external += 1
        path = (ASYNCAPI.parent / target).resolve()
        assert path.is_file(), ref
        _pointer(json.loads(path.read_text()), fragment)
    assert external >= len(KINDS) - 1


def test_asyncapi_covers_every_message_kind(asyncapi: Any) -> None:
    payloads = {
        Path(urldefrag(m["payload"]["$ref"])[0]).stem
        for m in asyncapi["components"]["messages"].values()
    }
    assert set(KINDS) - {"envelope"} <= payloads
