"""Validate decoded message bodies against the protocol's JSON Schemas.

The schemas in :mod:`wkctl.schemas` are the contract (draft 2020-12). This
module loads them with :mod:`importlib.resources` (so an installed wheel
works exactly like a checkout), resolves ``$ref``s between the files through
an offline :class:`referencing.Registry`, and offers two ways to check a body:

* :func:`is_valid` is the hot path (every inbound message of a node, every
  line of ``wkctl tail --validate`` / ``wkctl validate``). It runs Python code
  *generated from the schemas themselves* when a kind is first used: one
  plain function per schema, no per-call keyword dispatch. The generator
  supports exactly the keywords the shipped schemas use and refuses any other,
  so a schema change can never silently make the fast path more permissive
  than the schema; a test checks it agrees with :mod:`jsonschema` on every
  sample and on thousands of mutants.
* :func:`validate` returns the detailed errors (JSON pointer + message). It
  asks the fast path first and only runs :mod:`jsonschema` when the body is
  invalid, so valid traffic costs the same as :func:`is_valid`.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

from .vocab import HEARTBEAT_TYPES, request_kind

__all__ = [
    "KINDS",
    "SCHEMA_BASE",
    "Issue",
    "UnknownKind",
    "detect_kind",
    "undetected_reason",
    "export_schemas",
    "is_valid",
    "load_schema",
    "schema_files",
    "validate",
]

#: The base of every schema ``$id``; ``<base><kind>.json`` names one schema.
SCHEMA_BASE = "https://wkctl.dev/schemas/"

#: Every message kind with a schema, and a one-line description of it.
KINDS: dict[str, str] = {
    "hello": "pidbox request: Mingle hello (clock + revoked ids sync at node start)",
    "clock": "pidbox request: ask a node for its Lamport clock",
    "revoked": "pidbox request: ask a node for its revoked task ids",
    "ping": "pidbox request: liveness ping",
    "revoke": "pidbox request: revoke task id(s) on every addressed node",
    "election": "pidbox request: start an election (nodes answer with worker-elect)",
    "request": "any pidbox request: common fields + the specific schema when the method has one",
    "hello-reply": "pidbox reply to hello: {node: {clock, revoked}} (revoked list or mapping form)",
    "clock-reply": "pidbox reply to clock: {node: {clock}}",
    "revoked-reply": "pidbox reply to revoked: {node: [task_id, ...]}",
    "ping-reply": "pidbox reply to ping: {node: {ok: 'pong'}}",
    "revoke-reply": "pidbox reply to revoke (when asked for): {node: {ok: message}}",
    "stats": "pidbox request: worker statistics (Flower, the Prometheus exporters)",
    "conf": "pidbox request: the worker's configuration",
    "report": "pidbox request: installation report for bug reports",
    "active": "pidbox request: tasks being executed",
    "reserved": "pidbox request: tasks received and waiting to run",
    "scheduled": "pidbox request: eTA/countdown tasks waiting for their time",
    "registered": "pidbox request: names of the tasks the worker knows",
    "active_queues": "pidbox request: task queues the worker consumes",
    "query_task": "pidbox request: state of tasks by id",
    "memsample": "pidbox request: sample of the resident set size",
    "memdump": "pidbox request: memory samples taken so far",
    "objgraph": "pidbox request: graph of uncollected objects (debugging)",
    "enable_events": "pidbox request: start sending task events",
    "disable_events": "pidbox request: stop sending task events",
    "heartbeat-request": "pidbox request: send one worker-heartbeat now (monitors' refresh)",
    "shutdown": "pidbox request: stop the worker (a clean stop: worker-offline)",
    "terminate": "pidbox request: revoke and terminate task ids",
    "revoke_by_stamped_headers": "pidbox request: revoke tasks by stamped header values",
    "rate_limit": "pidbox request: change the rate limit of a task type",
    "time_limit": "pidbox request: change the time limits of a task type",
    "pool_grow": "pidbox request: add pool processes",
    "pool_shrink": "pidbox request: remove pool processes",
    "pool_restart": "pidbox request: restart the pool (reloading modules)",
    "autoscale": "pidbox request: change the autoscaler's bounds",
    "add_consumer": "pidbox request: start consuming a task queue",
    "cancel_consumer": "pidbox request: stop consuming a task queue",
    "stats-reply": "pidbox reply to stats: Worker statistics",
    "conf-reply": "pidbox reply to conf: The configuration: setting name -> value (JSON-safe; no secret, [CONTROL-4])",
    "report-reply": "pidbox reply to report: {ok: report text}",
    "active-reply": "pidbox reply to active: Tasks being executed: request info objects (Flower reads id, args, kwargs, worker_pid)",
    "reserved-reply": "pidbox reply to reserved: Tasks reserved: request info objects",
    "scheduled-reply": "pidbox reply to scheduled: Scheduled tasks: {eta, priority, request}",
    "registered-reply": "pidbox reply to registered: Task names, each optionally followed by ' [attr=value ...]' (celery-prometheus-exporter chains the lists)",
    "active_queues-reply": "pidbox reply to active_queues: Queues consumed: kombu Queue.as_dict(recurse=True) (Flower and the exporter read name and the flags)",
    "query_task-reply": "pidbox reply to query_task: {task_id: [state, request info]}, state one of active, reserved, scheduled, ready",
    "memsample-reply": "pidbox reply to memsample: Resident set size as text ('42.50MB'), null without psutil",
    "memdump-reply": "pidbox reply to memdump: Memory samples as text",
    "objgraph-reply": "pidbox reply to objgraph: {filename} of the graph written",
    "enable_events-reply": "pidbox reply to enable_events: {ok: message}",
    "disable_events-reply": "pidbox reply to disable_events: {ok: message}",
    "heartbeat-reply": "pidbox reply to heartbeat: null: the command sends a worker-heartbeat event instead",
    "shutdown-reply": "pidbox reply to shutdown: {ok: message} (a Celery worker stops without replying)",
    "terminate-reply": "pidbox reply to terminate: {ok: message}, as revoke",
    "revoke_by_stamped_headers-reply": "pidbox reply to revoke_by_stamped_headers: {ok: message}",
    "rate_limit-reply": "pidbox reply to rate_limit: {ok: message}",
    "time_limit-reply": "pidbox reply to time_limit: {ok: message}",
    "pool_grow-reply": "pidbox reply to pool_grow: {ok: message}",
    "pool_shrink-reply": "pidbox reply to pool_shrink: {ok: message}",
    "pool_restart-reply": "pidbox reply to pool_restart: {ok: message}",
    "autoscale-reply": "pidbox reply to autoscale: {ok: message}",
    "add_consumer-reply": "pidbox reply to add_consumer: {ok: message}",
    "cancel_consumer-reply": "pidbox reply to cancel_consumer: {ok: message}",
    "election-reply": "pidbox reply to election: null",
    "elect": "event worker-elect: one node's election request",
    "elect-ack": "event worker-elect-ack: acknowledgement of one worker-elect",
    "heartbeat": "events worker-online / worker-heartbeat / worker-offline",
    "task-event": "event task-* (standard and custom task events)",
    "event-batch": "JSON array of task events published with routing key task.multi",
    "event": "any event: common fields + the specific schema when the type is known",
    "envelope": "transport headers/properties: pidbox clock/expires/ticket, event hostname, content type",
}

#: Shared definitions, referenced by the kinds; loadable but not a message kind.
_COMMON = "common"


class UnknownKind(ValueError):
    """Raised for a kind name that has no schema; the message lists valid kinds."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"unknown message kind {kind!r}; valid kinds: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Issue:
    """One validation error: where (a JSON pointer, ``""`` = the whole body) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


# ---------------------------------------------------------------------------
# loading


def _check_kind(kind: str) -> None:
    if kind not in KINDS and kind != _COMMON:
        raise UnknownKind(kind)


def schema_files() -> dict[str, Any]:
    """Map every schema name (the kinds plus ``common``) to its packaged file.

    The values are :class:`importlib.resources.abc.Traversable` objects
    (``pathlib.Path`` in a checkout); read them with ``.read_text()``.
    """
    root = importlib.resources.files("wkctl.schemas")
    return {name: root / f"{name}.json" for name in [*KINDS, _COMMON]}


@functools.cache
def _raw_schema(kind: str) -> str:
    _check_kind(kind)
    return schema_files()[kind].read_text(encoding="utf-8")


def load_schema(kind: str) -> dict[str, Any]:
    """Return a fresh copy of the schema of ``kind`` (``common`` is accepted too).

    Raises :class:`UnknownKind` for a name without a schema.
    """
    return json.loads(_raw_schema(kind))


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    """All schemas keyed by ``$id`` (loaded once; treat as read-only)."""
    docs = {}
    for name in [*KINDS, _COMMON]:
        schema = json.loads(_raw_schema(name))
        docs[schema["$id"]] = schema
    return docs


def export_schemas(directory: str | Path) -> list[Path]:
    """Write every schema file (``common.json`` included) into ``directory``.

    The ``$ref``s between files are relative, so the exported set resolves
    on its own for any tool that maps ``$id`` base to the directory.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in [*KINDS, _COMMON]:
        path = target / f"{name}.json"
        path.write_text(_raw_schema(name), encoding="utf-8")
        written.append(path)
    return written


# ---------------------------------------------------------------------------
# jsonschema: the reference validator, used for detailed errors


@functools.cache
def _registry() -> Any:
    from referencing import Registry, Resource

    return Registry().with_resources(
        (uri, Resource.from_contents(doc)) for uri, doc in _documents().items()
    )


@functools.cache
def _jsonschema_validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    _check_kind(kind)
    return Draft202012Validator(_documents()[SCHEMA_BASE + f"{kind}.json"], registry=_registry())


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _deepest(error: Any) -> Any:
    """Follow anyOf/oneOf context to the most specific error, as best_match does."""
    from jsonschema.exceptions import best_match

    while error.context:
        deeper = best_match(error.context)
        if deeper is None:
            break
        error = deeper
    return error


def _jsonschema_issues(body: object, kind: str) -> list[Issue]:
    issues = []
    for error in _jsonschema_validator(kind).iter_errors(body):
        if error.validator in ("anyOf", "oneOf") and error.context:
            inner = _deepest(error)
            issues.append(Issue(_pointer(inner.absolute_path), inner.message))
        else:
            issues.append(Issue(_pointer(error.absolute_path), error.message))
    # allOf branches can report the same fault twice (e.g. "not an object")
    return sorted(set(issues), key=lambda i: (i.path, i.message))


# ---------------------------------------------------------------------------
# the fast path: Python generated from the schemas

_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"}
)
_HANDLED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
    }
)

# Type tests with jsonschema's draft 2020-12 semantics: bool is not a number,
# a float with an integral value is an integer, arrays are lists only.
_TYPE_TESTS = {
    "object": "isinstance({v}, dict)",
    "array": "isinstance({v}, list)",
    "string": "isinstance({v}, str)",
    "null": "{v} is None",
    "boolean": "isinstance({v}, bool)",
    "number": "(type({v}) in _NUM or (isinstance({v}, (int, float)) and not isinstance({v}, bool)))",
    "integer": "(type({v}) is int or _is_int({v}))",
}


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value.is_integer()


class _CompileError(Exception):
    pass


_COMPOSITE = frozenset(
    {"$ref", "allOf", "anyOf", "oneOf", "not", "if", "properties", "items", "prefixItems"}
)
_COMPOSITE |= {"additionalProperties", "propertyNames"}


def _is_leaf(node: object) -> bool:
    """A schema with no subschemas: safe and cheap to inline at each use."""
    return isinstance(node, dict) and not (_COMPOSITE & set(node))


class _Compiler:
    """Turns a schema (and what it references) into Python source.

    Each referenced schema and each anyOf/oneOf/not/if branch becomes a
    function returning bool; everything else is inlined as ``if ...: return
    False`` statements. Constants (property sets, enums, regexes) are passed
    in a namespace rather than spelled out in the source.
    """

    def __init__(self, documents: Mapping[str, Any]) -> None:
        self.documents = documents
        self.namespace: dict[str, Any] = {
            "_is_int": _is_int,
            "_MISSING": _MISSING,
            "_NUM": (int, float),
        }
        self.functions: dict[tuple[str, int], str] = {}
        self.sources: list[str] = []
        self._counter = 0

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: object) -> str:
        name = self._name("_c")
        self.namespace[name] = value
        return name

    def resolve(self, ref: str, base: str) -> tuple[Any, str]:
        uri, fragment = urldefrag(urljoin(base, ref))
        try:
            node = self.documents[uri]
        except KeyError:
            raise _CompileError(f"unresolvable $ref {ref!r} from {base}") from None
        if fragment:
            if not fragment.startswith("/"):
                raise _CompileError(f"only JSON pointer fragments are supported: {ref!r}")
            for part in fragment[1:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
        return node, uri

    def function(self, node: Any, base: str) -> str:
        key = (base, id(node))
        if key in self.functions:
            return self.functions[key]
        name = self._name("_f")
        self.functions[key] = name
        lines = [f"def {name}(x):"]
        self.emit(node, base, "x", 1, lines)
        lines.append("    return True")
        self.sources.append("\n".join(lines))
        return name

    def emit(self, node: Any, base: str, v: str, depth: int, out: list[str]) -> None:
        pad = "    " * depth
        if node is True:
            return
        if node is False:
            out.append(f"{pad}return False")
            return
        if not isinstance(node, dict):
            raise _CompileError(f"not a schema: {node!r}")
        unknown = set(node) - _HANDLED - _ANNOTATIONS
        if unknown:
            raise _CompileError(f"keywords not supported by the fast path: {sorted(unknown)}")

        if "$ref" in node:
            target, target_base = self.resolve(node["$ref"], base)
            if _is_leaf(target):
                # small definitions (clock, nodename, ...) are inlined: a
                # Python call per field would cost more than the checks
                self.emit(target, target_base, v, depth, out)
            else:
                out.append(f"{pad}if not {self.function(target, target_base)}({v}): return False")
        known = None
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            test = " or ".join(_TYPE_TESTS[t].format(v=v) for t in types)
            out.append(f"{pad}if not ({test}): return False")
            if len(types) == 1:
                known = types[0]
        if "const" in node:
            out.append(f"{pad}if not {self._equals(v, [node['const']])}: return False")
        if "enum" in node:
            out.append(f"{pad}if not {self._equals(v, node['enum'])}: return False")

        # Once "type" has been checked, the type guards of the keyword groups
        # below are known to hold and are left out of the generated code.
        self._emit_object(node, base, v, depth, out, known == "object")
        self._emit_array(node, base, v, depth, out, known == "array")
        self._emit_number(node, v, depth, out, known in ("integer", "number"))
        self._emit_string(node, v, depth, out, known == "string")

        for sub in node.get("allOf", ()):
            self.emit(sub, base, v, depth, out)
        if "anyOf" in node:
            calls = [f"{self.function(s, base)}({v})" for s in node["anyOf"]]
            out.append(f"{pad}if not ({' or '.join(calls)}): return False")
        if "oneOf" in node:
            calls = [f"{self.function(s, base)}({v})" for s in node["oneOf"]]
            out.append(f"{pad}if ({' + '.join(calls)}) != 1: return False")
        if "not" in node:
            out.append(f"{pad}if {self.function(node['not'], base)}({v}): return False")
        if "if" in node and ("then" in node or "else" in node):
            out.append(f"{pad}if {self.function(node['if'], base)}({v}):")
            before = len(out)
            if "then" in node:
                self.emit(node["then"], base, v, depth + 1, out)
            if len(out) == before:
                out.append(f"{pad}    pass")
            if "else" in node:
                out.append(f"{pad}else:")
                before = len(out)
                self.emit(node["else"], base, v, depth + 1, out)
                if len(out) == before:
                    out.append(f"{pad}    pass")

    def _equals(self, v: str, values: list[Any]) -> str:
        # jsonschema compares strings and None by value and never equates a
        # bool with a number; the shipped schemas only enumerate strings.
        if all(isinstance(x, str) for x in values):
            return f"(isinstance({v}, str) and {v} in {self.const(frozenset(values))})"
        if values == [None]:
            return f"({v} is None)"
        raise _CompileError(f"enum/const values not supported by the fast path: {values!r}")

    def _emit_object(
        self, node: dict[str, Any], base: str, v: str, depth: int, out: list[str], known: bool
    ) -> None:
        keys = {
            "properties",
            "required",
            "additionalProperties",
            "propertyNames",
            "minProperties",
            "maxProperties",
            "dependentRequired",
        }
        if not keys & set(node):
            return
        pad = "    " * depth
        body: list[str] = []
        if known:
            depth -= 1
        inner = "    " * (depth + 1)
        if "required" in node and node["required"]:
            req = self.const(frozenset(node["required"]))
            body.append(f"{inner}if not {v}.keys() >= {req}: return False")
        if "minProperties" in node:
            body.append(f"{inner}if len({v}) < {int(node['minProperties'])}: return False")
        if "maxProperties" in node:
            body.append(f"{inner}if len({v}) > {int(node['maxProperties'])}: return False")
        for key, deps in node.get("dependentRequired", {}).items():
            need = self.const(frozenset(deps))
            body.append(f"{inner}if {key!r} in {v} and not {v}.keys() >= {need}: return False")
        props = node.get("properties", {})
        for key, sub in props.items():
            if sub is True or sub == {}:
                continue
            item = self._name("_p")
            body.append(f"{inner}{item} = {v}.get({key!r}, _MISSING)")
            body.append(f"{inner}if {item} is not _MISSING:")
            before = len(body)
            self.emit(sub, base, item, depth + 2, body)
            if len(body) == before:
                body.append(f"{inner}    pass")
        if "propertyNames" in node:
            k = self._name("_k")
            fn = self.function(node["propertyNames"], base)
            body.append(f"{inner}for {k} in {v}:")
            body.append(f"{inner}    if not {fn}({k}): return False")
        extra = node.get("additionalProperties", True)
        if extra is not True and extra != {}:
            k, item = self._name("_k"), self._name("_a")
            listed = self.const(frozenset(props))
            body.append(f"{inner}for {k}, {item} in {v}.items():")
            body.append(f"{inner}    if {k} in {listed}: continue")
            self.emit(extra, base, item, depth + 2, body)
        if body and not known:
            out.append(f"{pad}if isinstance({v}, dict):")
        out.extend(body)

    def _emit_array(
        self, node: dict[str, Any], base: str, v: str, depth: int, out: list[str], known: bool
    ) -> None:
        if not {"items", "prefixItems", "minItems", "maxItems"} & set(node):
            return
        pad = "    " * depth
        if known:
            depth -= 1
        inner = "    " * (depth + 1)
        body: list[str] = []
        if "minItems" in node:
            body.append(f"{inner}if len({v}) < {int(node['minItems'])}: return False")
        if "maxItems" in node:
            body.append(f"{inner}if len({v}) > {int(node['maxItems'])}: return False")
        prefix = node.get("prefixItems", [])
        for index, sub in enumerate(prefix):
            item = self._name("_i")
            body.append(f"{inner}if len({v}) > {index}:")
            body.append(f"{inner}    {item} = {v}[{index}]")
            self.emit(sub, base, item, depth + 2, body)
        items = node.get("items", True)
        if items is not True and items != {}:
            item = self._name("_i")
            seq = f"{v}[{len(prefix)}:]" if prefix else v
            body.append(f"{inner}for {item} in {seq}:")
            before = len(body)
            self.emit(items, base, item, depth + 2, body)
            if len(body) == before:
                body.append(f"{inner}    pass")
        if body and not known:
            out.append(f"{pad}if isinstance({v}, list):")
        out.extend(body)

    def _emit_number(
        self, node: dict[str, Any], v: str, depth: int, out: list[str], known: bool
    ) -> None:
        checks = []
        for keyword, op in (
            ("minimum", "<"),
            ("maximum", ">"),
            ("exclusiveMinimum", "<="),
            ("exclusiveMaximum", ">="),
        ):
            if keyword in node:
                checks.append(f"{v} {op} {self.const(node[keyword])}")
        if checks:
            pad = "    " * depth
            if known:
                out.append(f"{pad}if {' or '.join(checks)}: return False")
            else:
                isnum = _TYPE_TESTS["number"].format(v=v)
                out.append(f"{pad}if {isnum} and ({' or '.join(checks)}): return False")

    def _emit_string(
        self, node: dict[str, Any], v: str, depth: int, out: list[str], known: bool
    ) -> None:
        checks = []
        if "minLength" in node:
            checks.append(f"len({v}) < {int(node['minLength'])}")
        if "maxLength" in node:
            checks.append(f"len({v}) > {int(node['maxLength'])}")
        if "pattern" in node:
            checks.append(f"{self.const(re.compile(node['pattern']))}.search({v}) is None")
        if checks:
            pad = "    " * depth
            if known:
                out.append(f"{pad}if {' or '.join(checks)}: return False")
            else:
                out.append(
                    f"{pad}if isinstance({v}, str) and ({' or '.join(checks)}): return False"
                )


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


@functools.cache
def _compiled(kind: str) -> Callable[[object], bool]:
    """The generated check function of ``kind`` (built once, then cached)."""
    _check_kind(kind)
    compiler = _Compiler(_documents())
    uri = SCHEMA_BASE + f"{kind}.json"
    entry = compiler.function(_documents()[uri], uri)
    source = "\n\n".join(compiler.sources)
    exec(compile(source, f"<wkctl schema {kind}>", "exec"), compiler.namespace)
    function: Callable[[object], bool] = compiler.namespace[entry]
    function.__doc__ = f"Return True iff the body is a valid {kind!r} message."
    return function


def fast_path_source(kind: str) -> str:
    """The Python source generated for ``kind`` (for debugging and review)."""
    compiler = _Compiler(_documents())
    uri = SCHEMA_BASE + f"{kind}.json"
    _check_kind(kind)
    compiler.function(_documents()[uri], uri)
    return "\n\n".join(compiler.sources)


# ---------------------------------------------------------------------------
# public checks


def is_valid(body: object, kind: str) -> bool:
    """True iff ``body`` (decoded JSON) is a valid message of ``kind``.

    The hot path: no error objects are built. Raises :class:`UnknownKind`.
    """
    try:
        check = _CHECKS[kind]
    except KeyError:
        check = _CHECKS[kind] = _compiled(kind)
    return check(body)


_CHECKS: dict[str, Callable[[object], bool]] = {}


def validate(body: object, kind: str) -> list[Issue]:
    """Every error of ``body`` against the schema of ``kind``; ``[]`` = valid.

    Each :class:`Issue` has the JSON pointer of the offending value and what
    was expected. Raises :class:`UnknownKind`.
    """
    if is_valid(body, kind):
        return []
    issues = _jsonschema_issues(body, kind)
    if not issues:  # the fast path is stricter than the schema: trust the schema
        return []
    return issues


def iter_kinds() -> Iterator[tuple[str, str]]:
    """(kind, description) pairs in a stable order, for listings."""
    return iter(KINDS.items())


def detect_kind(body: object) -> str | None:
    """Guess the kind of a decoded body, or None where the shape is ambiguous.

    Requests are recognized by ``method`` (``request`` for methods without
    a schema of their own), events by ``type`` (``event`` for types without
    a schema of their own) and
    ``event-batch`` by being a list. A reply (``{node: value}``) is only
    classified when its values say which command it answers: a list is a
    ``revoked`` reply, ``{clock, revoked}`` a ``hello`` reply, ``{clock}`` a
    ``clock`` reply, ``{ok: "pong"}`` a ``ping`` reply; ``null`` and
    ``{error}`` values fit every reply kind, so they stay undetected.
    """
    if isinstance(body, list):
        return "event-batch"
    if not isinstance(body, dict):
        return None
    method = body.get("method")
    if isinstance(method, str) and "arguments" in body:
        return request_kind(method)
    event_type = body.get("type")
    if isinstance(event_type, str) and "hostname" in body:
        if event_type in HEARTBEAT_TYPES:
            return "heartbeat"
        if event_type == "worker-elect":
            return "elect"
        if event_type == "worker-elect-ack":
            return "elect-ack"
        if event_type.startswith("task-"):
            return "task-event"
        return "event"
    if "content_type" in body and "headers" in body and "body" not in body:
        return "envelope"
    return _detect_reply(body)


def undetected_reason(body: object) -> str:
    """Why :func:`detect_kind` found no kind: the field that is missing or
    the shape that is ambiguous, named so the user can fix the message."""
    if not isinstance(body, dict):
        return f"the body is {type(body).__name__}, not an object or a list"
    if not body:
        return "the body is an empty object"
    if "method" in body and "arguments" not in body:
        return "it has 'method' but no 'arguments' (a request needs both)"
    if "arguments" in body and not isinstance(body.get("method"), str):
        return "it has 'arguments' but no 'method' string (a request needs both)"
    if "type" in body and "hostname" not in body:
        return "it has 'type' but no 'hostname' (an event needs both)"
    if "hostname" in body and not isinstance(body.get("type"), str):
        return "it has 'hostname' but no 'type' string (an event needs both)"
    if all(v is None or (isinstance(v, dict) and "error" in v) for v in body.values()):
        return "a reply whose values are all null or {error} fits every reply kind"
    return (
        "no 'method' (request), no 'type' and 'hostname' (event), and the values do not "
        "say which command they answer (reply)"
    )


def _detect_reply(body: dict[Any, Any]) -> str | None:
    found: set[str] = set()
    for value in body.values():
        if value is None or (isinstance(value, dict) and "error" in value):
            continue
        if isinstance(value, list):
            found.add("revoked-reply")
        elif isinstance(value, dict):
            if "revoked" in value:
                found.add("hello-reply")
            elif "clock" in value:
                found.add("clock-reply")
            elif "ok" in value and value.get("ok") == "pong":
                found.add("ping-reply")
            else:
                return None
        else:
            return None
    if len(found) == 1:
        return found.pop()
    return None
