"""Validate decoded message bodies against the protocol's JSON Schemas.

The schemas in :mod:`wkctl.schemas` are the contract (draft 2020-12); the
kind names live in :mod:`wkctl.protocol.kinds`, the generator of the fast
path in :mod:`wkctl.protocol.schema_compiler`. This
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .kinds import (
    COMMON,
    KINDS,
    SCHEMA_BASE,
    UnknownKind,
    check_kind,
    detect_kind,
    iter_kinds,
    undetected_reason,
)
from .schema_compiler import compile_check, generated_source

__all__ = [
    "KINDS",
    "SCHEMA_BASE",
    "Issue",
    "UnknownKind",
    "detect_kind",
    "fast_path_source",
    "iter_kinds",
    "undetected_reason",
    "export_schemas",
    "is_valid",
    "load_schema",
    "schema_files",
    "validate",
]


@dataclass(frozen=True)
class Issue:
    """One validation error: where (a JSON pointer, ``""`` = the whole body) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.message}"


# ---------------------------------------------------------------------------
# loading


def schema_files() -> dict[str, Any]:
    """Map every schema name (the kinds plus ``common``) to its packaged file.

    The values are :class:`importlib.resources.abc.Traversable` objects
    (``pathlib.Path`` in a checkout); read them with ``.read_text()``.
    """
    root = importlib.resources.files("wkctl.schemas")
    return {name: root / f"{name}.json" for name in [*KINDS, COMMON]}


@functools.cache
def _raw_schema(kind: str) -> str:
    check_kind(kind)
    text: str = schema_files()[kind].read_text(encoding="utf-8")
    return text


def load_schema(kind: str) -> dict[str, Any]:
    """Return a fresh copy of the schema of ``kind`` (``common`` is accepted too).

    Raises :class:`UnknownKind` for a name without a schema.
    """
    schema: dict[str, Any] = json.loads(_raw_schema(kind))
    return schema


@functools.cache
def _documents() -> dict[str, dict[str, Any]]:
    """All schemas keyed by ``$id`` (loaded once; treat as read-only)."""
    docs = {}
    for name in [*KINDS, COMMON]:
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
    for name in [*KINDS, COMMON]:
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
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    check_kind(kind)
    return Draft202012Validator(_documents()[SCHEMA_BASE + f"{kind}.json"], registry=_registry())


def _pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _deepest(error: Any) -> Any:
    """Follow anyOf/oneOf context to the most specific error, as best_match does."""
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

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


@functools.cache
def _compiled(kind: str) -> Callable[[object], bool]:
    """The generated check function of ``kind`` (built once, then cached)."""
    return compile_check(_documents(), kind)


def fast_path_source(kind: str) -> str:
    """The Python source generated for ``kind`` (for debugging and review)."""
    return generated_source(_documents(), kind)


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
