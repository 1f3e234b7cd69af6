"""The check registry: what a check is, how it reports, how it is selected.

A check is a function of a :class:`~wkctl.conform.runner.Context`; it
returns a short detail string when the node behaved, or raises
:class:`Failed` (with what was expected and what was observed) or
:class:`Skipped` (with why the check could not be run).  Each check cites
one statement of the spec by id; its level (MUST/SHOULD) is the
statement's, so ``--strict`` and the exit code follow the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .statements import STATEMENTS, Statement

if TYPE_CHECKING:
    from .runner import Context

__all__ = ["CHECKS", "Check", "Failed", "Skipped", "check", "select"]


class Failed(Exception):
    """The node did not do what the statement requires."""

    def __init__(self, reason: str, *, expected: Any = None, actual: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = expected
        self.actual = actual


class Skipped(Exception):
    """The check could not be run (the reason says why)."""


@dataclass(frozen=True)
class Check:
    id: str
    statement: str
    section: str
    title: str
    func: Callable[[Context], str | None]
    #: a statement id documenting a Celery defect this check detects; a
    #: Celery worker failing the check is reported as a known deviation
    deviation: str | None = None

    @property
    def spec(self) -> Statement:
        return STATEMENTS[self.statement]

    @property
    def level(self) -> str:
        return self.spec.level

    @property
    def requirement(self) -> str:
        return self.spec.text


#: Every check, in run order (the order of registration).
CHECKS: dict[str, Check] = {}


def check(
    id: str, statement: str, section: str, title: str, *, deviation: str | None = None
) -> Callable[[Callable[[Context], str | None]], Callable[[Context], str | None]]:
    """Register a check; the statement (and any deviation) must exist."""

    def register(func: Callable[[Context], str | None]) -> Callable[[Context], str | None]:
        if id in CHECKS:
            raise ValueError(f"duplicate check id {id}")
        for ref in (statement, deviation):
            if ref is not None and ref not in STATEMENTS:
                raise ValueError(f"check {id} cites unknown statement {ref}")
        CHECKS[id] = Check(id, statement, section, title, func, deviation)
        return func

    return register


def select(only: Iterable[str] = (), *, strict: bool = False) -> list[Check]:
    """The checks to run: MUST-level ones (plus SHOULD with ``strict``),
    narrowed by ``only`` (check ids, statement ids or section names).

    Raises ``KeyError`` naming a selector that matches nothing.
    """
    chosen = [c for c in CHECKS.values() if c.level == "MUST" or (strict and c.level != "MUST")]
    only = [o for o in only if o]
    if not only:
        return chosen
    picked: list[Check] = []
    for selector in only:
        key = selector.strip()
        matches = [
            c
            for c in CHECKS.values()
            if key in (c.id, c.statement, c.section)
            or key.upper() == c.statement
            or c.id.startswith(key + ".")
        ]
        if not matches:
            raise KeyError(selector)
        for c in matches:
            if c not in picked:
                picked.append(c)
    # An explicit selection runs SHOULD checks too: the user asked for them.
    return [c for c in CHECKS.values() if c in picked]
