"""Read the numbered statements out of the spec's Markdown.

The spec (``spec/*.md`` in the repository) gives every normative statement
a stable identifier such as ``[MINGLE-2]``.  The spec is not shipped in the
wheel, so the statements the conformance kit quotes are compiled into
:mod:`wkctl.conform.statements` by this module::

    python -m wkctl.conform.specparse spec --output conform/statements.py

and a test re-parses ``spec/`` and fails when the compiled copy is stale,
or when a MUST statement has no check and is not marked as not testable
from outside.

What counts as a statement is the spec's own convention (its section 1):
a list item ``- **[AREA-N]** (LEVEL) text`` whose continuation lines are
indented, LEVEL being ``MUST``, ``SHOULD`` or ``MAY``, optionally followed
by ``; not testable from outside``.  Without the parenthesised level the
strongest RFC 2119 keyword of the text decides.  The rows of the table of
Celery's known defects (first cell ``DEFECT-N``) are read too, with level
``DEFECT``: a check cites one when real Celery workers fail it by design.
Ids merely mentioned inside other text are references, not definitions.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from .model import Statement

__all__ = ["Statement", "parse_markdown", "parse_spec_dir", "render_module"]

_ID = r"[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)*-\d+[a-z]?"
_START = re.compile(
    r"^\s*(?:[-*+]\s+|\d+[.)]\s+|\|\s*)?(?:\*\*|__)?\[(?P<id>" + _ID + r")\](?:\*\*|__)?[:.]?\s*"
)
_LEVEL_MARK = re.compile(r"^\((?P<level>MUST|SHOULD|MAY)(?P<rest>[^)]*)\)\s*")
_DEFECT_ROW = re.compile(r"^\|\s*(?P<id>DEFECT-\d+)\s*\|(?P<rest>.*)$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_NOT_TESTABLE = re.compile(r"not\s+(?:externally\s+)?testable", re.IGNORECASE)
_LEVELS = (
    ("MUST", re.compile(r"\b(?:MUST(?: NOT)?|SHALL(?: NOT)?|REQUIRED)\b")),
    ("SHOULD", re.compile(r"\b(?:SHOULD(?: NOT)?|RECOMMENDED|NOT RECOMMENDED)\b")),
    ("MAY", re.compile(r"\b(?:MAY|OPTIONAL)\b")),
)


def _clean(text: str) -> str:
    text = re.sub(r"\s*\|\s*$", "", text)  # trailing table pipe
    text = re.sub(r"\s*\|\s*", " | ", text)
    return re.sub(r"\s+", " ", text).strip()


def _level(text: str) -> str:
    for name, pattern in _LEVELS:
        if pattern.search(text):
            return name
    return "INFO"


def _blocks(markdown: str) -> Iterator[tuple[str, str]]:
    """(section, block text) for every paragraph, list item and table row."""
    section = ""
    block: list[str] = []
    fenced = False

    def flush() -> Iterator[tuple[str, str]]:
        if block:
            yield section, "\n".join(block)
            block.clear()

    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            yield from flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        heading = _HEADING.match(line)
        if heading:
            yield from flush()
            section = heading.group(2).strip()
            continue
        if not line.strip():
            yield from flush()
            continue
        # Only an unindented list marker or table row starts a new block:
        # indented lines continue the statement above them.
        if re.match(r"^(?:[-*+]\s+|\d+[.)]\s+|\|)", line):
            yield from flush()
        block.append(line)
    yield from flush()


def parse_markdown(markdown: str) -> list[Statement]:
    out: list[Statement] = []
    for section, block in _blocks(markdown):
        defect = _DEFECT_ROW.match(block)
        if defect:
            cells = [c.strip() for c in defect.group("rest").split("|")]
            text = _clean(cells[0]) if cells else ""
            out.append(Statement(defect.group("id"), "DEFECT", section, text, testable=False))
            continue
        match = _START.match(block)
        if not match:
            continue
        text = _clean(block[match.end() :])
        mark = _LEVEL_MARK.match(text)
        if mark:
            level = mark.group("level")
            testable = not _NOT_TESTABLE.search(mark.group("rest"))
            text = text[mark.end() :]
        else:
            level = _level(text)
            testable = not _NOT_TESTABLE.search(text)
        out.append(Statement(match.group("id"), level, section, text, testable))
    return out


def parse_spec_dir(folder: str | Path) -> dict[str, Statement]:
    """Every statement of every ``*.md`` file under ``folder``; raises
    ``ValueError`` naming both places when an id is defined twice."""
    found: dict[str, tuple[Statement, str]] = {}
    for path in sorted(Path(folder).rglob("*.md")):
        for statement in parse_markdown(path.read_text(encoding="utf-8")):
            if statement.id in found:
                raise ValueError(
                    f"statement {statement.id} defined twice: {found[statement.id][1]} and {path}"
                )
            found[statement.id] = (statement, str(path))
    return {key: value[0] for key, value in found.items()}


def render_module(statements: Iterable[Statement]) -> str:
    """The source of :mod:`wkctl.conform.statements` for these statements."""
    lines = [
        '"""The spec\'s numbered statements, compiled from ``spec/*.md``.',
        "",
        "Generated by ``python -m wkctl.conform.specparse spec --output conform/statements.py``; do not edit by",
        "hand: a test fails when this copy and the spec disagree.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from .model import Statement",
        "",
        '__all__ = ["STATEMENTS", "Statement"]',
        "",
        "STATEMENTS: dict[str, Statement] = {",
    ]
    for s in sorted(statements, key=lambda s: _sort_key(s.id)):
        lines.append(f"    {s.id!r}: Statement(")
        lines.append(f"        id={s.id!r},")
        lines.append(f"        level={s.level!r},")
        lines.append(f"        section={s.section!r},")
        lines.append(f"        text={s.text!r},")
        if not s.testable:
            lines.append("        testable=False,")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _sort_key(id_: str) -> tuple[str, int, str]:
    prefix, _, number = id_.rpartition("-")
    digits = re.match(r"\d+", number)
    return (prefix, int(digits.group(0)) if digits else 0, number)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    output = None
    if "--output" in args:
        # Written only after parsing: the package being run imports the
        # very file it regenerates, so a shell redirect would truncate it
        # before it is read.
        at = args.index("--output")
        output = args[at + 1] if at + 1 < len(args) else None
        del args[at : at + 2]
        if output is None:
            print("specparse: --output needs a path", file=sys.stderr)
            return 2
    folder = args[0] if args else "spec"
    try:
        statements = parse_spec_dir(folder)
    except (OSError, ValueError) as exc:
        print(f"specparse: {exc}", file=sys.stderr)
        return 1
    if not statements:
        print(f"specparse: no statements found under {folder}", file=sys.stderr)
        return 1
    text = render_module(statements.values())
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
