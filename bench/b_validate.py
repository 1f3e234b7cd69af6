"""Benchmark 4: validation throughput, ``wkctl validate`` vs jsonschema and check-jsonschema.

The data is a large NDJSON file of message bodies: every real message
captured from Celery 5.7 and 5.4 workers in ``tests/data`` (pidbox
requests and replies of every method, heartbeats, elections, task.multi
batches), repeated, interleaved with Celery-format task and worker events
from ``bench/harness/eventstreams.py`` (wire form: without the receiver's
``local_received``).  All of it is valid, as traffic mostly is.

Sides, on the same messages, each process pinned to one core (``taskset``):

* ``wkctl validate FILE``: the whole command (start-up, reading, kind
  detection per message, validation, summary), messages / wall time;
* a plain ``jsonschema.validate()`` loop, kinds given for free (the issue's
  baseline), on the first messages of the file;
* a loop over prebuilt ``Draft202012Validator.is_valid`` (jsonschema's best
  case);
* ``check-jsonschema``: one file per message, one run per kind (it
  validates files, not NDJSON), on the first messages of the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    BenchContext,
    alternate,
    case,
    metric,
    ratio,
    run_timed,
    target,
    venv_script,
)

NAME = "validate"
TITLE = "validation throughput: wkctl validate vs jsonschema.validate() loop and check-jsonschema"
SCHEMAS = REPO / "schemas"


def _one_core(cmd: list[str]) -> list[str]:
    return (["taskset", "-c", "0"] + cmd) if shutil.which("taskset") else cmd


def _wire(ev: Any) -> Any:
    if isinstance(ev, list):
        return [_wire(e) for e in ev]
    if isinstance(ev, dict):
        ev = dict(ev)
        ev.pop("local_received", None)
    return ev


def build_data(workdir: Path, n: int) -> tuple[Path, Path, dict[str, int]]:
    """Write ``n`` message bodies (NDJSON) and their kinds (one per line)."""
    from bench.harness.eventstreams import realistic_stream
    from wkctl.protocol.validation import detect_kind

    real: list[Any] = []
    for path in sorted((REPO / "tests" / "data").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                real.append(record.get("body", record) if isinstance(record, dict) else record)
    real = [b for b in real if detect_kind(b)]
    generated = (_wire(x) for x in realistic_stream(4 * n + 100, seed=11, workers=20, batches=True))
    data = workdir / "messages.ndjson"
    kinds_path = workdir / "kinds.txt"
    counts: dict[str, int] = {}
    kinds: list[str] = []
    with data.open("w") as f:
        i = 0
        while i < n:
            body = real[i % len(real)] if (real and i % 2 == 0) else next(generated)
            kind = detect_kind(body) or ""
            if not kind:
                continue
            f.write(json.dumps(body, separators=(",", ":")) + "\n")
            kinds.append(kind)
            counts[kind] = counts.get(kind, 0) + 1
            i += 1
    kinds_path.write_text("\n".join(kinds) + "\n")
    return data, kinds_path, counts


def _wkctl(data: Path, n: int, cpu_rates: list[float]) -> float | None:
    r = run_timed(_one_core(venv_script("wkctl") + ["validate", str(data)]), timeout=600)
    if r.rc != 0 or f"{n} messages: {n} valid" not in r.stdout:
        print(f"    wkctl validate: rc {r.rc}: {r.stdout[-300:]} {r.stderr[-300:]}", flush=True)
        return None
    if r.cpu > 0:
        cpu_rates.append(n / r.cpu)
    return n / r.wall


def _loop(mode: str, data: Path, kinds: Path, limit: int) -> float | None:
    r = run_timed(
        _one_core(
            [sys.executable, "-m", "bench.validate_loop", "--mode", mode, "--file", str(data)]
            + ["--kinds", str(kinds), "--schemas", str(SCHEMAS), "--limit", str(limit)]
        ),
        timeout=600,
    )
    if r.rc != 0:
        print(f"    validate_loop {mode}: {r.stderr[-500:]}", flush=True)
        return None
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if out["valid"] != out["messages"]:
        print(f"    validate_loop {mode}: only {out['valid']}/{out['messages']} valid", flush=True)
    return out["messages"] / out["seconds"]


def _prepare_check_jsonschema(workdir: Path, data: Path, kinds: Path, limit: int) -> Path:
    """One file per message, a folder per kind, and the schemas without ``$id``.

    check-jsonschema validates instance files; without ``$id`` the schemas'
    relative ``$ref``s resolve to the neighbouring files instead of the
    (offline) https base.
    """
    root = workdir / "cj"
    shutil.rmtree(root, ignore_errors=True)
    (root / "schemas").mkdir(parents=True)
    for path in SCHEMAS.glob("*.json"):
        doc = json.loads(path.read_text())
        doc.pop("$id", None)
        (root / "schemas" / path.name).write_text(json.dumps(doc))
    with data.open() as f:
        for i, (line, kind) in enumerate(zip(f, kinds.read_text().split()[:limit], strict=False)):
            folder = root / "inst" / kind
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"m{i}.json").write_text(line)
    return root


def _check_jsonschema(root: Path, max_kinds: int | None = None) -> float | None:
    exe = venv_script("check-jsonschema")
    if not Path(exe[0]).exists() and shutil.which("check-jsonschema") is None:
        return None
    total = 0.0
    count = 0
    folders = sorted((root / "inst").iterdir(), key=lambda p: -len(list(p.iterdir())))
    for folder in folders[:max_kinds]:
        files = sorted(str(p) for p in folder.glob("*.json"))
        r = run_timed(
            _one_core(
                exe + ["--schemafile", str(root / "schemas" / f"{folder.name}.json")] + files
            ),
            timeout=600,
        )
        if r.rc != 0:
            print(
                f"    check-jsonschema {folder.name}: {r.stdout[-300:]}{r.stderr[-300:]}",
                flush=True,
            )
            return None
        total += r.wall
        count += len(files)
    return count / total if total else None


def ensure_check_jsonschema(install: bool = True) -> str | None:
    """check-jsonschema's version; installed into this environment if missing."""
    try:
        from importlib.metadata import version

        return version("check-jsonschema")
    except Exception:
        if not install:
            return None
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "check-jsonschema"],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        return None
    from importlib.metadata import version

    return version("check-jsonschema")


def run(ctx: BenchContext) -> dict[str, Any]:
    n = 2_000 if ctx.quick else 200_000
    plain_n = 200 if ctx.quick else 3_000
    prebuilt_n = 1_000 if ctx.quick else 50_000
    cj_n = 100 if ctx.quick else 2_000
    # A full run installs check-jsonschema when missing; a quick (smoke) run
    # never touches the network and simply goes without that side.
    cj_version = ensure_check_jsonschema(install=not ctx.quick)
    workdir = ctx.workdir / "validate"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx.log(f"  building {n:,} messages")
    data, kinds, counts = build_data(workdir, n)
    cj_root = _prepare_check_jsonschema(workdir, data, kinds, cj_n)
    reps = ctx.reps if ctx.quick else 3
    cpu_rates: list[float] = []
    sides = {
        "wkctl validate": lambda r: _wkctl(data, n, cpu_rates),
        "jsonschema.validate() loop": lambda r: _loop("plain", data, kinds, plain_n),
        "jsonschema prebuilt validators": lambda r: _loop("prebuilt", data, kinds, prebuilt_n),
    }
    if cj_version:
        sides["check-jsonschema"] = lambda r: _check_jsonschema(cj_root, 3 if ctx.quick else None)
    res = alternate(reps, sides)
    c = case(
        f"{n:,} mixed messages",
        {
            "messages": n,
            "kinds": counts,
            "plain_loop_messages": plain_n,
            "prebuilt_loop_messages": prebuilt_n,
            "check_jsonschema_messages": cj_n,
            "reps": reps,
        },
        {
            "throughput": metric(
                "msgs/s",
                "higher",
                res,
                note="one core (taskset -c 0); wkctl: whole command incl. start-up and kind "
                "detection; loops: validation only, kinds given",
            )
        },
    )
    c["metrics"]["cpu_throughput"] = metric(
        "msgs per CPU-second",
        "higher",
        {"wkctl validate": cpu_rates},
        note="the same wkctl runs divided by the process's own user+system CPU time: "
        "what the code does on a core it has to itself (the wall-clock figure also "
        "counts time the pinned core spent on other processes of this shared machine)",
    )
    m = c["metrics"]["throughput"]
    c["ratios"]["throughput"] = ratio(m, "wkctl validate", "jsonschema.validate() loop")
    c["ratios_other"] = {
        other: ratio(m, "wkctl validate", other)
        for other in m["sides"]
        if other != "wkctl validate"
    }
    target(
        c,
        "wkctl validate vs plain jsonschema.validate() loop (x)",
        c["ratios"]["throughput"],
        5,
        True,
    )
    target(
        c,
        "wkctl validate messages/s on one core",
        m["sides"]["wkctl validate"].get("median"),
        50_000,
        True,
    )
    notes = [
        "ratios to the other baselines: "
        + ", ".join(f"{k}: {v}x" for k, v in c["ratios_other"].items())
    ]
    if not cj_version:
        notes.append("check-jsonschema could not be installed: its side is missing")
    return {
        "name": NAME,
        "title": TITLE,
        "cases": [c],
        "notes": notes,
        "setup": {
            "note": "Real captured Celery 5.7/5.4 messages (tests/data) interleaved with "
            "Celery-format events; the loops and check-jsonschema run on the first "
            f"{plain_n:,} / {prebuilt_n:,} / {cj_n:,} messages of the same file."
        },
    }
