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


def test_a_mistyped_command_gets_a_suggestion() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["helo"])
    assert result.exit_code == 2
    assert "Error: No such command 'helo'. Did you mean 'hello'?" in result.output
    result = CliRunner().invoke(cli, ["revok"])
    assert "Did you mean 'revoke' or 'revoked'?" in result.output
    result = CliRunner().invoke(cli, ["zzz"])
    assert result.exit_code == 2
    assert "Error: No such command 'zzz'." in result.output and "Did you mean" not in result.output
    assert CliRunner().invoke(cli, ["hello", "--help"]).exit_code == 0


def test_shell_completion_of_a_mistyped_command_stays_silent() -> None:
    """Tab completion parses resiliently: no error, no suggestion, exit 0."""
    from click.testing import CliRunner

    env = {"_WKCTL_COMPLETE": "bash_complete", "COMP_WORDS": "wkctl helo ", "COMP_CWORD": "2"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="wkctl")
    assert result.exit_code == 0, result.output
    assert "No such command" not in result.output
