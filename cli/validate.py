"""``wkctl validate``: check recorded messages against the protocol's schemas.

Built for CI and for debugging a cluster: every message gets a verdict with
its source (file and line or YAML document), and a file that cannot be read
or parsed is itself reported as an invalid message, never as a traceback,
so one bad input never hides the verdicts on the others.

Inputs: ``.json`` = one message; ``.ndjson``/``.jsonl`` = one per line;
``.yaml``/``.yml`` = one per document (``yaml.safe_load`` semantics only);
``-`` = NDJSON on stdin; any other file is read as one JSON message if it
parses as a whole, else as NDJSON.
"""

from __future__ import annotations

import io
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import click
import yaml

from wkctl.protocol.validation import KINDS, Issue, detect_kind, undetected_reason, validate
from wkctl.protocol.vocab import request_kind

__all__ = ["Result", "validate_cmd", "iter_messages", "check_message"]


@dataclass
class Message:
    """One message read from an input, or the reason it could not be read."""

    source: str
    file: str
    line: int | None = None
    document: int | None = None
    body: Any = None
    #: set when reading/parsing failed: the message is invalid for this reason
    read_error: str | None = None
    #: a capture record's recorded kind and envelope (``--capture``)
    recorded_kind: str | None = None
    envelope: dict[str, Any] | None = None


@dataclass
class Result:
    """The verdict on one message (the ``--json`` object, minus formatting)."""

    message: Message
    kind: str | None
    errors: list[Issue] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.kind is not None and not self.errors

    def json_line(self) -> str:
        """The ``--json`` line; valid results (the bulk) skip the generic encoder."""
        message = self.message
        if self.valid and message.document is None:
            where = f', "line": {message.line}' if message.line is not None else ""
            return (
                f'{{"source": {json.dumps(message.source, ensure_ascii=False)}, '
                f'"file": {json.dumps(message.file, ensure_ascii=False)}{where}, '
                f'"kind": "{self.kind}", "valid": true, "errors": []}}'
            )
        return json.dumps(self.as_json(), ensure_ascii=False)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.message.source,
            "file": self.message.file,
        }
        if self.message.line is not None:
            out["line"] = self.message.line
        if self.message.document is not None:
            out["document"] = self.message.document
        out.update(
            kind=self.kind,
            valid=self.valid,
            errors=[{"path": e.path, "message": e.message} for e in self.errors],
        )
        return out


# ---------------------------------------------------------------------------
# reading


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (RFC 8259) does not, and
    # neither does any other language's parser a peer may use.
    raise ValueError(f"non-standard JSON constant {name}")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
#: one decoder for every line: json.loads(..., parse_constant=...) builds a new one per call
_loads = _DECODER.decode


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "malformed JSON: nested too deeply"
    return f"malformed JSON: {exc}"


def _iter_ndjson(stream: BinaryIO, name: str, capture: bool) -> Iterator[Message]:
    # Lines are read as bytes and decoded one by one, so that a line that is
    # not UTF-8 is reported with its own number and the next lines still count.
    lineno = 0
    while True:
        try:
            raw = stream.readline()
        except OSError as exc:
            yield Message(f"{name}:{lineno + 1}", name, lineno + 1, read_error=_read_error(exc))
            return
        if not raw:
            return
        lineno += 1
        if not raw.strip():
            continue
        message = Message(f"{name}:{lineno}", name, line=lineno)
        try:
            message.body = _loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            message.read_error = _read_error(exc)
        except (ValueError, RecursionError) as exc:
            message.read_error = _json_error(exc)
        yield _unwrap(message, force=capture)


def _iter_yaml(text: str, name: str, capture: bool) -> Iterator[Message]:
    loader = yaml.SafeLoader(text)
    number = 0
    try:
        while True:
            counted = False  # one number per document, whichever step fails
            try:
                if not loader.check_node():
                    return
                number += 1
                counted = True
                node = loader.get_node()
                line = node.start_mark.line + 1 if node is not None else None
                data = loader.construct_document(node)
            except (yaml.YAMLError, RecursionError) as exc:
                if not counted:
                    number += 1
                mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
                line = mark.line + 1 if mark is not None else None
                where = f" (line {line})" if line is not None else ""
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                yield Message(
                    f"{name}#{number}",
                    name,
                    line=line,
                    document=number,
                    read_error=f"malformed YAML: {problem}{where}",
                )
                return  # the parser cannot resynchronise after an error
            message = Message(f"{name}#{number}", name, line=line, document=number, body=data)
            yield _unwrap(message, force=capture)
    finally:
        loader.dispose()


#: how the verdict on an input that could not be read starts (missing, a
#: folder, not UTF-8): the summary counts them apart
CANNOT_READ = "cannot read: "


def _read_error(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"{CANNOT_READ}not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):
        return f"{CANNOT_READ}{exc.strerror or exc}"
    return f"{CANNOT_READ}{exc}"


def iter_messages(path: str, capture: bool = False) -> Iterator[Message]:
    """Every message of one input (``-`` = stdin), in order.

    Problems reading or parsing become messages with ``read_error`` set.
    """
    if path == "-":
        yield from _iter_ndjson(sys.stdin.buffer, "<stdin>", capture)
        return
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".ndjson", ".jsonl"):
            with open(path, "rb") as stream:
                yield from _iter_ndjson(stream, path, capture)
            return
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as exc:
        yield Message(path, path, read_error=_read_error(exc))
        return
    if suffix in (".yaml", ".yml"):
        yield from _iter_yaml(text, path, capture)
        return
    try:
        body = _loads(text)
    except (ValueError, RecursionError) as exc:
        if suffix == ".json" or "\n" not in text.strip():
            yield Message(path, path, read_error=_json_error(exc))
            return
        yield from _iter_ndjson(io.BytesIO(text.encode("utf-8")), path, capture)
        return
    message = Message(path, path, body=body)
    yield _unwrap(message, force=capture)


# ---------------------------------------------------------------------------
# capture records


def _kind_of_record(recorded: object, body: object) -> str | None:
    """Map a capture record's ``kind`` (``pidbox-request:hello``, ...) to a schema kind."""
    if not isinstance(recorded, str):
        return None
    family, _, name = recorded.partition(":")
    if family == "pidbox-request":
        return request_kind(name)
    if family == "pidbox-reply":
        kind = f"{name}-reply"
        return kind if kind in KINDS else None
    if family == "event-batch":
        return "event-batch"
    if family == "event":
        detected = detect_kind(body)
        return detected if detected in KINDS else "event"
    return recorded if recorded in KINDS else None


def _is_record(body: object) -> bool:
    """A capture record (what `tail`/`dump`/the test capture write), not a bare body."""
    return (
        isinstance(body, dict)
        and "body" in body
        and isinstance(body.get("kind"), str)
        and ("headers" in body or "exchange" in body)
    )


def _unwrap(message: Message, force: bool = True) -> Message:
    record = message.body
    if message.read_error is not None:
        return message
    if not force and not _is_record(record):
        return message
    if not isinstance(record, dict) or "body" not in record:
        message.read_error = 'not a capture record: expected an object with "body" and "kind"'
        message.body = None
        return message
    message.body = record["body"]
    message.recorded_kind = _kind_of_record(record.get("kind"), record["body"]) or ""
    if "headers" in record or "content_type" in record:
        message.envelope = {
            key: record[key]
            for key in ("headers", "content_type", "content_encoding", "exchange", "routing_key")
            if key in record
        }
    return message


# ---------------------------------------------------------------------------
# checking


def check_message(message: Message, kind: str | None = None) -> Result:
    """The verdict on one message: explicit kind, else recorded, else detected."""
    if message.read_error is not None:
        return Result(message, kind, [Issue("", message.read_error)])
    chosen = kind or message.recorded_kind or detect_kind(message.body)
    if not chosen:
        return Result(
            message,
            None,
            [Issue("", f"kind not detectable: {undetected_reason(message.body)} (or give --kind)")],
        )
    prefix = "/body" if message.envelope is not None or message.recorded_kind is not None else ""
    errors = [Issue(prefix + e.path, e.message) for e in validate(message.body, chosen)]
    if message.envelope is not None:
        errors.extend(validate(message.envelope, "envelope"))
    return Result(message, chosen, errors)


# ---------------------------------------------------------------------------
# output


def _human(result: Result) -> None:
    if result.valid:
        return
    what = f"invalid {result.kind}" if result.kind else "invalid"
    message = result.message
    where = message.source
    if message.document is not None and message.line is not None:
        where += f" (line {message.line})"  # YAML: document number and its first line
    click.echo(f"{where}: {what}")
    for issue in result.errors:
        where = (issue.path or "(body)") if result.message.read_error is None else ""
        line = f"  {where}: {issue.message}" if where else f"  {issue.message}"
        click.echo(line)


def _junit(results: list[Result], path: str) -> None:
    failures = sum(1 for r in results if not r.valid)
    suites = ET.Element("testsuites", name="wkctl validate")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="wkctl validate",
        tests=str(len(results)),
        failures=str(failures),
        errors="0",
        skipped="0",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=result.message.file,
            name=f"{result.message.source} [{result.kind or 'unknown kind'}]",
        )
        if not result.valid:
            first = result.errors[0] if result.errors else Issue("", "invalid")
            failure = ET.SubElement(
                case,
                "failure",
                message=f"{first.path or '/'}: {first.message}",
                type="invalid" if result.kind else "undetectable",
            )
            failure.text = "\n".join(f"{e.path or '/'}: {e.message}" for e in result.errors)
    suites.set("tests", str(len(results)))
    suites.set("failures", str(failures))
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    try:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise click.UsageError(f"cannot write JUnit report {path}: {exc.strerror or exc}") from None


@click.command("validate")
@click.option(
    "-k",
    "--kind",
    type=click.Choice(list(KINDS)),
    metavar="KIND",
    help="Validate every message as KIND (see `wkctl schema list`); default: detect per message.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON result object per message (NDJSON)."
)
@click.option(
    "--junit",
    "junit_path",
    metavar="PATH",
    type=click.Path(dir_okay=False),
    help="Also write a JUnit XML report (one test case per message).",
)
@click.option(
    "--capture",
    is_flag=True,
    help="Every input line is a capture record {kind, body, headers, content_type, ...} "
    "(records are also recognized without this flag): validate each body as its "
    "recorded kind, and its envelope.",
)
@click.argument("files", nargs=-1, metavar="[FILE ...|-]")
@click.pass_context
def validate_cmd(
    ctx: click.Context,
    kind: str | None,
    as_json: bool,
    junit_path: str | None,
    capture: bool,
    files: tuple[str, ...],
) -> None:
    """Validate messages against the protocol's JSON Schemas.

    FILE.json holds one message, FILE.ndjson/.jsonl one per line, FILE.yaml/.yml
    one per document; - reads NDJSON from stdin. Exit status: 0 if every
    message is valid, 1 if any is invalid (or unreadable), 2 on usage errors.
    """
    if not files:
        raise click.UsageError("give at least one FILE, or - to read NDJSON from stdin")
    if files.count("-") > 1:
        raise click.UsageError("stdin (-) can be given only once")
    keep = junit_path is not None
    results: list[Result] = []
    total = invalid = unreadable = 0
    out = sys.stdout
    for path in files:
        for message in iter_messages(path, capture=capture):
            result = check_message(message, kind)
            total += 1
            if not result.valid:
                invalid += 1
            if (message.read_error or "").startswith(CANNOT_READ):
                unreadable += 1
            if as_json:
                out.write(result.json_line() + "\n")
            else:
                _human(result)
            if keep:
                results.append(result)
    if junit_path is not None:
        _junit(results, junit_path)
    if not as_json:
        noun = "message" if total == 1 else "messages"
        click.echo(
            f"{total} {noun}: {total - invalid} valid, {invalid} invalid"
            + (f", of which {unreadable} could not be read" if unreadable else "")
        )
    out.flush()
    ctx.exit(1 if invalid else 0)
