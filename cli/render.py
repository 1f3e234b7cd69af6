"""Output helpers: JSON, YAML, aligned tables, color only on a terminal.

``click.echo`` strips ANSI styles when stdout is not a terminal, so commands
can style freely and pipes still get plain text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
import yaml

__all__ = ["emit", "emit_json", "emit_yaml", "format_options", "table", "style"]


def to_json(obj: Any, *, compact: bool = False) -> str:
    """JSON text for a terminal or a pipe.

    Non-ASCII stays readable, except where the output stream could not
    encode it: a lone surrogate (valid in JSON, ``"\\ud800"``, and so
    possible in any node name a peer sends) is written as its escape.
    """
    kwargs: dict[str, Any] = {"separators": (",", ":")} if compact else {"indent": 2}
    text = json.dumps(obj, ensure_ascii=False, default=str, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, default=str, **kwargs)
    return text


F = TypeVar("F", bound=Callable[..., Any])


def format_options(fn: F) -> F:
    """``--json`` and ``--yaml`` (parameters ``json_flag``, ``yaml_flag``), the
    output switches of every command that prints a document;
    :meth:`~wkctl.cli.context.AppContext.output_format` picks between them
    and the configured default."""
    fn = click.option("--yaml", "yaml_flag", is_flag=True, help="Print YAML.")(fn)
    return click.option("--json", "json_flag", is_flag=True, help="Print JSON.")(fn)


def emit_json(obj: Any, *, compact: bool = False) -> None:
    click.echo(to_json(obj, compact=compact))


def emit_yaml(obj: Any) -> None:
    click.echo(
        yaml.safe_dump(
            json.loads(json.dumps(obj, default=str)), sort_keys=False, allow_unicode=True
        ),
        nl=False,
    )


def emit(obj: Any, fmt: str) -> bool:
    """Print ``obj`` as JSON or YAML; returns False for ``text`` (caller renders)."""
    if fmt == "json":
        emit_json(obj)
        return True
    if fmt == "yaml":
        emit_yaml(obj)
        return True
    return False


def clip(value: Any, limit: int = 40) -> str:
    """One table cell: ``-`` for None, cut to ``limit`` characters with an
    ellipsis (the full value is in ``--json``)."""
    if value is None:
        return "-"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def style(text: str, **kwargs: Any) -> str:
    return click.style(text, **kwargs)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, indent: str = "") -> None:
    """An aligned plain-text table; the header is bold on a terminal."""
    body = [["" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    head = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    click.echo(indent + click.style(head, bold=True))
    for row in body:
        click.echo(indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
