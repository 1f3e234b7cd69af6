"""The command table: every command loads, has help, and the group is click's (in-process)."""

from __future__ import annotations

from wkctl.cli.main import COMMANDS, LazyGroup, cli


def test_every_command_has_help() -> None:
    for name in COMMANDS:
        command = LazyGroup._load(name)
        assert command is not None, name
        assert command.help or command.short_help, name


def test_group_object_is_click() -> None:
    assert cli.name in ("cli", "wkctl")
