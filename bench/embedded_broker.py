"""The embedded broker over many runs: ``python -m bench.embedded_broker``.

Opt-in (about 10 s per run): runs ``wkctl demo`` ``--runs`` times in a row
(20 by default) on one embedded broker folder of its own (a fresh
``XDG_STATE_HOME`` unless ``--state`` is given) and prints, per run, what
the folder holds afterwards (files, bytes, queues, bindings) and the
latencies the demo itself reports: ``hello --expect 3`` (broadcast to the
last reply) and the election (decision).  An embedded broker that does not
clean up after exited processes shows growing files and latencies; one that
does stays flat (issue 12's target: bounded files, the 20th run's
latencies within 1.5x of the first's).

Options: ``--runs N``, ``--state DIR``, ``--json`` (one JSON document
instead of the table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HELLO = re.compile(r"last reply after ([0-9.]+) ms")
ELECT = re.compile(r"decided in ([0-9.]+) ms")


def folder_figures(root: Path) -> dict[str, int]:
    """Files, bytes, queues (with messages waiting) and bindings of an embedded broker."""
    files = sizes = 0
    queues: set[str] = set()
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            sizes += path.stat().st_size
            if path.suffix == ".msg":
                queues.add(path.name.partition(".")[2])
    bindings = 0
    for table in (root / "control").glob("*.exchange"):
        try:
            bindings += len(json.loads(table.read_text() or "[]"))
        except (OSError, ValueError):
            pass
    return {"files": files, "bytes": sizes, "queues": len(queues), "bindings": bindings}


def one_run(state: Path) -> dict[str, Any]:
    env = dict(os.environ, XDG_STATE_HOME=str(state), XDG_CONFIG_HOME=str(state / "noconfig"))
    for key in ("WKCTL_BROKER_URL", "CELERY_BROKER_URL"):
        env.pop(key, None)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "wkctl", "demo", "--tail-seconds", "0.5", "--dump-seconds", "0.5"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    hello = HELLO.search(proc.stdout)
    elect = ELECT.search(proc.stdout)
    return {
        "rc": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 2),
        "hello_ms": float(hello.group(1)) if hello else None,
        "elect_ms": float(elect.group(1)) if elect else None,
        **folder_figures(state / "wkctl" / "broker"),
        "stderr": proc.stderr.strip()[-300:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--state", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    state = args.state or Path(tempfile.mkdtemp(prefix="wkctl-embedded-"))
    rows = []
    if not args.json:
        print(f"embedded broker in {state / 'wkctl' / 'broker'}")
        print("| run | files | bytes | queues | bindings | hello ms | election ms | rc |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i in range(1, args.runs + 1):
        row = one_run(state)
        rows.append(row)
        if not args.json:
            print(
                f"| {i} | {row['files']} | {row['bytes']:,} | {row['queues']} | "
                f"{row['bindings']} | {row['hello_ms']} | {row['elect_ms']} | {row['rc']} |",
                flush=True,
            )
            if row["rc"]:
                print(f"  run {i} failed: {row['stderr']}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"state": str(state), "runs": rows}, indent=2))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
