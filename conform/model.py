"""The one data type shared by the compiled statements and the spec parser."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Statement"]


@dataclass(frozen=True)
class Statement:
    """One numbered statement of the spec (or one known defect of Celery)."""

    id: str
    #: MUST, SHOULD, MAY; DEFECT for a known defect of Celery; INFO (no keyword)
    level: str
    #: the heading the statement appears under
    section: str
    text: str
    #: False when the spec marks it "not testable from outside" (and for defects)
    testable: bool = True
