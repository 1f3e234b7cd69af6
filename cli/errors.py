"""Exit codes and the one error type the CLI turns into a one-line message.

Every expected failure (bad configuration, unreachable broker, no replies,
bad input) becomes a :class:`CliError`; ``main`` prints it as a single line
on stderr and exits with its code.  Only ``--debug`` shows a traceback.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CliError", "ExitCode"]


class ExitCode(IntEnum):
    """Documented exit codes (README: Exit codes)."""

    OK = 0
    #: the command ran but its answer is negative: no replies, invalid
    #: messages, no election winner, failed conformance checks
    FAILURE = 1
    #: wrong command line (click's own code for usage errors)
    USAGE = 2
    #: configuration problem: config file, environment, ``-A`` app
    CONFIG = 3
    #: broker problem: unreachable, malformed URL, unknown transport
    BROKER = 4
    #: interrupted by Ctrl-C (128 + SIGINT)
    INTERRUPTED = 130


class CliError(Exception):
    """An expected failure, reported as ``wkctl: error: <message>``."""

    def __init__(self, message: str, exit_code: int = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = int(exit_code)
