"""``wkctl schema``: list, show and export the protocol's JSON Schemas.

The schemas are the machine-readable half of the spec; exporting them lets
implementations in other languages validate with their own tools.
"""

from __future__ import annotations

import json

import click

from wkctl.protocol.validation import KINDS, UnknownKind, export_schemas, load_schema

__all__ = ["schema_group"]

_SHOWABLE = [*KINDS, "common"]


@click.group("schema")
def schema_group() -> None:
    """List, show and export the message schemas (JSON Schema draft 2020-12)."""


@schema_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print {kind: description} as JSON.")
def list_cmd(as_json: bool) -> None:
    """Every message kind with a one-line description."""
    if as_json:
        click.echo(json.dumps(KINDS, indent=2))
        return
    width = max(len(kind) for kind in KINDS)
    for kind, description in KINDS.items():
        click.echo(f"{kind.ljust(width)}  {description}")


@schema_group.command("show")
@click.argument("kind", type=click.Choice(_SHOWABLE), metavar="KIND")
def show_cmd(kind: str) -> None:
    """Print the schema of KIND (or `common`, the shared definitions)."""
    try:
        schema = load_schema(kind)
    except UnknownKind as exc:  # pragma: no cover - click.Choice already checked
        raise click.UsageError(str(exc)) from None
    click.echo(json.dumps(schema, indent=2, ensure_ascii=False))


@schema_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False), metavar="DIR")
def export_cmd(directory: str) -> None:
    """Write every schema file (and common.json) into DIR, creating it if needed."""
    try:
        written = export_schemas(directory)
    except OSError as exc:
        raise click.ClickException(
            f"cannot write schemas to {directory}: {exc.strerror or exc}"
        ) from None
    click.echo(f"wrote {len(written)} schema files to {directory}")
