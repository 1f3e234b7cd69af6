"""The ``wkctl`` group as users meet it: help, version, errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wkctl import __version__
from wkctl.cli.main import COMMANDS


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("WKCTL_BROKER_URL", None)
    full_env.pop("CELERY_BROKER_URL", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "wkctl", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )


def test_every_command_is_listed_with_a_summary() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("Commands:", 1)[1].strip().splitlines()
    listed = {
        line.split()[0]: line.split(None, 1)[1] if len(line.split()) > 1 else "" for line in lines
    }
    assert set(listed) == set(COMMANDS), "every command in the table must load and be listed"
    for name, summary in listed.items():
        assert summary.strip(), f"{name} has no one-line summary"


def test_version_both_entry_points() -> None:
    assert run("--version").stdout.strip() == f"wkctl {__version__}"
    script = Path(sys.executable).with_name("wkctl")
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"wkctl {__version__}"


def test_unreachable_broker_is_one_line_exit_4(tmp_path: Path) -> None:
    result = run(
        "-b", "amqp://guest:topsecret@127.0.0.1:1//", "hello", "--timeout", "0.5", cwd=tmp_path
    )
    assert result.returncode == 4
    assert result.stderr == (
        "wkctl: error: cannot connect to broker amqp://guest:**@127.0.0.1:1//: [Errno 111] Connection refused "
        "(is it running? choose another with --broker, WKCTL_BROKER_URL or broker_url in wkctl.yaml)\n"
    )
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and "topsecret" not in result.stderr + result.stdout


def test_unreachable_redis_is_one_line_exit_4(tmp_path: Path) -> None:
    result = run("-b", "redis://:pw@127.0.0.1:1/0", "clock", "--timeout", "0.5", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert result.stderr.startswith(
        "wkctl: error: cannot connect to broker redis://:**@127.0.0.1:1/0: "
    )
    assert "Traceback" not in result.stderr


def test_malformed_and_unknown_transport(tmp_path: Path) -> None:
    result = run("-b", "nonsense", "hello", cwd=tmp_path)
    assert result.returncode == 4
    assert result.stderr == (
        "wkctl: error: malformed broker URL 'nonsense' from --broker: "
        "expected transport://[user:password@]host[:port]/[vhost]\n"
    )
    result = run("hello", env={"WKCTL_BROKER_URL": "kafka://h:1"}, cwd=tmp_path)
    assert (
        result.returncode == 4
        and "unknown broker transport 'kafka' from WKCTL_BROKER_URL" in result.stderr
    )


def test_bad_config_file_exit_3(tmp_path: Path) -> None:
    (tmp_path / "wkctl.yaml").write_text("brokr_url: amqp://x//\n")
    result = run("hello", cwd=tmp_path)
    assert result.returncode == 3
    assert result.stderr.startswith("wkctl: error: config file wkctl.yaml: unknown key 'brokr_url'")
    assert "Traceback" not in result.stderr


def test_verbose_says_which_broker(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    result = run("-v", "hello", "--timeout", "0.2", env=env, cwd=tmp_path)
    assert "wkctl: broker: filesystem:// (from embedded default)" in result.stderr
    result = run(
        "-v", "-b", "amqp://guest:guest@127.0.0.1:1//", "hello", "--timeout", "0.2", cwd=tmp_path
    )
    assert "wkctl: broker: amqp://guest:**@127.0.0.1:1// (from --broker)" in result.stderr


def test_debug_shows_a_traceback(tmp_path: Path) -> None:
    result = run("--debug", "-b", "nonsense", "hello", cwd=tmp_path)
    assert result.returncode == 4 and "Traceback" in result.stderr


@pytest.mark.parametrize("args", [["--no-such-option"], ["no-such-command"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
