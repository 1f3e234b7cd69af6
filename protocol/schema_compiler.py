"""The schema compiler: Python generated from the JSON Schemas.

:func:`wkctl.protocol.validation.is_valid` is the hot path of every node and
of ``wkctl validate``: it runs one plain function per schema, generated here
when a kind is first used, with no per-call keyword dispatch.  The compiler
supports exactly the keywords the shipped schemas use and refuses any other
(:class:`_CompileError`), so a schema change can never silently make the
fast path more permissive than the schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urldefrag, urljoin

from .kinds import SCHEMA_BASE, check_kind

__all__ = ["compile_check", "generated_source"]


_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "examples", "default"}
)
#: The keywords of each group the compiler emits, and so every keyword it
#: supports (any other makes it refuse the schema).
_OBJECT_KEYWORDS = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependentRequired",
    }
)
_ARRAY_KEYWORDS = frozenset({"items", "prefixItems", "minItems", "maxItems"})
_HANDLED = (
    frozenset({"$ref", "type", "enum", "const"})
    | _OBJECT_KEYWORDS
    | _ARRAY_KEYWORDS
    | frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
    | frozenset({"minLength", "maxLength", "pattern"})
    | frozenset({"allOf", "anyOf", "oneOf", "not", "if", "then", "else"})
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
        self._emit_ref(node, base, v, depth, out)
        known = self._emit_type_and_values(node, v, depth, out)
        # Once "type" has been checked, the type guards of the keyword groups
        # below are known to hold and are left out of the generated code.
        self._emit_object(node, base, v, depth, out, known == "object")
        self._emit_array(node, base, v, depth, out, known == "array")
        self._emit_number(node, v, depth, out, known in ("integer", "number"))
        self._emit_string(node, v, depth, out, known == "string")
        self._emit_combinators(node, base, v, depth, out)
        self._emit_conditional(node, base, v, depth, out)

    def _emit_ref(
        self, node: dict[str, Any], base: str, v: str, depth: int, out: list[str]
    ) -> None:
        if "$ref" not in node:
            return
        target, target_base = self.resolve(node["$ref"], base)
        if _is_leaf(target):
            # small definitions (clock, nodename, ...) are inlined: a
            # Python call per field would cost more than the checks
            self.emit(target, target_base, v, depth, out)
        else:
            pad = "    " * depth
            out.append(f"{pad}if not {self.function(target, target_base)}({v}): return False")

    def _emit_type_and_values(
        self, node: dict[str, Any], v: str, depth: int, out: list[str]
    ) -> str | None:
        """``type``, ``const`` and ``enum``; returns the one type the value
        is then known to have, if any."""
        pad = "    " * depth
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
        return known

    def _emit_combinators(
        self, node: dict[str, Any], base: str, v: str, depth: int, out: list[str]
    ) -> None:
        """``allOf`` (inlined), ``anyOf``, ``oneOf`` and ``not`` (one function per branch)."""
        pad = "    " * depth
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

    def _emit_conditional(
        self, node: dict[str, Any], base: str, v: str, depth: int, out: list[str]
    ) -> None:
        """``if`` / ``then`` / ``else``."""
        if "if" not in node or ("then" not in node and "else" not in node):
            return
        pad = "    " * depth
        out.append(f"{pad}if {self.function(node['if'], base)}({v}):")
        self._emit_branch(node.get("then", True), base, v, depth + 1, out)
        if "else" in node:
            out.append(f"{pad}else:")
            self._emit_branch(node["else"], base, v, depth + 1, out)

    def _emit_branch(self, node: Any, base: str, v: str, depth: int, out: list[str]) -> None:
        before = len(out)
        self.emit(node, base, v, depth, out)
        if len(out) == before:
            out.append("    " * depth + "pass")

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
        if not _OBJECT_KEYWORDS & set(node):
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
        if not _ARRAY_KEYWORDS & set(node):
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


def compile_check(documents: dict[str, dict[str, Any]], kind: str) -> Callable[[object], bool]:
    """The generated check function of ``kind``, from the loaded schema
    ``documents`` (``{$id: schema}``)."""
    check_kind(kind)
    compiler = _Compiler(documents)
    uri = SCHEMA_BASE + f"{kind}.json"
    entry = compiler.function(documents[uri], uri)
    source = "\n\n".join(compiler.sources)
    exec(compile(source, f"<wkctl schema {kind}>", "exec"), compiler.namespace)
    function: Callable[[object], bool] = compiler.namespace[entry]
    function.__doc__ = f"Return True iff the body is a valid {kind!r} message."
    return function


def generated_source(documents: dict[str, dict[str, Any]], kind: str) -> str:
    """The Python source generated for ``kind`` (for debugging and review)."""
    compiler = _Compiler(documents)
    uri = SCHEMA_BASE + f"{kind}.json"
    check_kind(kind)
    compiler.function(documents[uri], uri)
    return "\n\n".join(compiler.sources)
