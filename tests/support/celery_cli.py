"""Run Celery's own command line (``celery inspect`` / ``celery control``)
many times in one process, for the tests of the control vocabulary.

Run with an interpreter that has Celery (the tools venv):
``python celery_cli.py BROKER_URL NODE TIMEOUT < commands.json``, where the
input is a JSON list of argument lists (``["inspect", "stats"]``).  Prints
one JSON line per command: its arguments, exit code and output, exactly as
``celery --broker BROKER_URL <args> -d NODE --json --timeout T`` would
print them; starting the interpreter and importing Celery once instead of
once per command is what keeps the test short.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    from celery.bin.celery import celery

    broker, node, timeout = sys.argv[1], sys.argv[2], sys.argv[3]
    for args in json.load(sys.stdin):
        argv = ["--broker", broker, *args, "-d", node, "--json", "--timeout", timeout]
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                celery.main(args=argv, prog_name="celery", standalone_mode=False)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # a click error or Celery's own
                code = getattr(exc, "exit_code", 1)
                err.write(f"{type(exc).__name__}: {exc}\n")
        print(
            json.dumps(
                {"args": args, "code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
