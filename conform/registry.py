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

from .model import Statement
from .statements import STATEMENTS

if TYPE_CHECKING:
    from .runner import Context

__all__ = ["CHECKS", "Check", "Failed", "NotRun", "Skipped", "check", "select", "with_needs"]


class Failed(Exception):
    """The node did not do what the statement requires."""

    def __init__(self, reason: str, *, expected: Any = None, actual: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expected = expected
        self.actual = actual


class Skipped(Exception):
    """The check could not be run (the reason says why)."""


class NotRun(Exception):
    """The check needs the node's control channel and the node is not
    answering on it (the run's one failure says why): the check is
    reported as not run, never as a failure of its own."""


@dataclass(frozen=True)
class Check:
    id: str
    #: the statement the check verifies (its level is the check's level)
    statement: str
    title: str
    func: Callable[[Context], str | None]
    #: other statements the check also exercises (for coverage)
    also: tuple[str, ...] = ()
    #: a known defect of Celery (``DEFECT-N`` in the spec) this check detects;
    #: a Celery worker failing the check is reported as a known deviation
    deviation: str | None = None
    #: run after a launched node was stopped (``--launch`` only)
    after_stop: bool = False
    #: checks whose effect on the node (or whose :class:`~.facts.Facts`) this
    #: one builds on: they run first, also under ``--only`` (unreported)
    needs: tuple[str, ...] = ()

    @property
    def section(self) -> str:
        """The spec section of the statement (reports group by it)."""
        return self.spec.section

    @property
    def area(self) -> str:
        """The short group name of the check id (``pidbox`` for ``pidbox.ping``)."""
        return self.id.split(".", 1)[0]

    @property
    def statements(self) -> tuple[str, ...]:
        return (self.statement, *self.also)

    @property
    def spec(self) -> Statement:
        return STATEMENTS[self.statement]

    @property
    def level(self) -> str:
        return self.spec.level

    @property
    def requirement(self) -> str:
        return self.spec.text

    def describe(self) -> dict[str, Any]:
        """The check as ``wkctl conform --list --json`` lists it."""
        return {
            "id": self.id,
            "statement": self.statement,
            "also": list(self.also),
            "level": self.level,
            "section": self.section,
            "title": self.title,
            "requirement": self.requirement,
            "known_deviation": self.deviation,
        }


#: Every check, in run order (the order of registration).
CHECKS: dict[str, Check] = {}


def check(
    id: str,
    statement: str,
    title: str,
    *,
    also: tuple[str, ...] = (),
    deviation: str | None = None,
    after_stop: bool = False,
    needs: tuple[str, ...] = (),
) -> Callable[[Callable[[Context], str | None]], Callable[[Context], str | None]]:
    """Register a check; every statement it cites must exist in the spec, and
    every check it ``needs`` must be registered before it (it runs earlier)."""

    def register(func: Callable[[Context], str | None]) -> Callable[[Context], str | None]:
        if id in CHECKS:
            raise ValueError(f"duplicate check id {id}")
        for ref in (statement, *also, deviation):
            if ref is not None and ref not in STATEMENTS:
                raise ValueError(f"check {id} cites unknown statement {ref}")
        if deviation is not None and STATEMENTS[deviation].level != "DEFECT":
            raise ValueError(f"check {id}: {deviation} is not a known defect")
        for need in needs:
            if need not in CHECKS:
                raise ValueError(f"check {id} needs {need}, which is not registered before it")
        CHECKS[id] = Check(
            id, statement, title, func, tuple(also), deviation, after_stop, tuple(needs)
        )
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
            if key in (c.id, c.section, c.area) or key.upper() in c.statements
        ]
        if not matches:
            raise KeyError(selector)
        for c in matches:
            if c not in picked:
                picked.append(c)
    # An explicit selection runs SHOULD checks too: the user asked for them.
    return [c for c in CHECKS.values() if c in picked]


def with_needs(checks: Iterable[Check]) -> list[Check]:
    """``checks`` and every check they need (transitively), in run order."""
    wanted = {c.id for c in checks}
    todo = list(wanted)
    while todo:
        for need in CHECKS[todo.pop()].needs:
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    return [c for c in CHECKS.values() if c.id in wanted]
