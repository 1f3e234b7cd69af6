"""Run the benchmarks: ``python -m bench`` (or ``python bench/run.py``).

Options: ``--only NAME`` (repeatable or comma-separated: hello, elect,
state, validate, tail, scale, exporter), ``--quick`` (tiny sizes, a smoke run),
``--reps N``, ``--brokers amqp,redis``, ``--out PATH`` (JSON results; default
``bench/results/<date>.json``), ``--md`` / ``--no-md`` (regenerate the
sections of BENCHMARKS.md between the markers; on by default for full runs,
off for ``--quick``).

Prints one table row per measured side, writes the JSON results, and
updates BENCHMARKS.md.  Exit status 0 when every selected benchmark produced
numbers for both sides, 1 otherwise; timings never fail a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.common import REPO, BenchContext, machine_info  # noqa: E402

ALL = ("hello", "elect", "state", "validate", "tail", "scale", "exporter")
MD_PATH = REPO / "BENCHMARKS.md"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def _spread(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "-"
    if s["n"] >= 4:
        return f"IQR {_fmt(s['q1'])}–{_fmt(s['q3'])}"
    return f"min–max {_fmt(s['min'])}–{_fmt(s['max'])}"


def rows(result: dict[str, Any]) -> list[list[str]]:
    """Table rows: case, metric, side, median, spread, n, ratio."""
    out = []
    for c in result.get("cases", []):
        for mname, m in c["metrics"].items():
            r = c.get("ratios", {}).get(mname)
            for i, (side, s) in enumerate(m["sides"].items()):
                out.append(
                    [
                        c["case"],
                        mname,
                        side,
                        f"{_fmt(s.get('median'))} {m['unit']}",
                        _spread(s),
                        f"{s.get('n', 0)}"
                        + (f" ({s['failed']} failed)" if s.get("failed") else ""),
                        (f"{r:g}x" if r is not None and i == 0 else ""),
                    ]
                )
    return out


HEAD = ["case", "metric", "side", "median", "spread", "n", "wkctl vs other"]


def print_table(result: dict[str, Any]) -> None:
    table = [HEAD] + rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(HEAD))]
    print(f"\n== {result['name']}: {result['title']}")
    for j, r in enumerate(table):
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if j == 0:
            print("  " + "  ".join("-" * w for w in widths))
    for c in result.get("cases", []):
        for t in c.get("targets", []):
            print(
                f"  target [{'met' if t['met'] else 'MISSED'}] {t['what']}: {_fmt(t['value'])} (goal {t['goal']})"
            )
    for note in result.get("notes", []):
        print(f"  note: {note}")
    if result.get("error"):
        print(f"  ERROR: {result['error']}")


# -- BENCHMARKS.md ---------------------------------------------------------------


def md_section(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"### {result['name']}: {result['title']}", ""]
    lines += [f"_Measured {meta['date']} ({'quick' if meta.get('quick') else 'full'} sizes)._", ""]
    setup = result.get("setup") or {}
    if setup.get("note"):
        lines += [setup["note"], ""]
    if result.get("error"):
        lines += [f"**Did not run to completion:** `{result['error']}`", ""]
    body = rows(result)
    if body:
        lines.append("| " + " | ".join(HEAD) + " |")
        lines.append("|" + "---|" * len(HEAD))
        for r in body:
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in r) + " |")
        lines.append("")
    notes = []
    for c in result.get("cases", []):
        for mname, m in c["metrics"].items():
            if m.get("note"):
                notes.append(f"`{mname}`: {m['note']}")
    for note in dict.fromkeys(notes):
        lines.append(f"- {note}")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    targets = [t for c in result.get("cases", []) for t in c.get("targets", [])]
    if targets:
        lines += ["", "Targets:", ""]
        for t in targets:
            mark = "met" if t["met"] else "**missed**"
            lines.append(f"- {mark}: {t['what']} = {_fmt(t['value'])} (goal {t['goal']})")
    lines.append("")
    return "\n".join(lines)


def md_meta(meta: dict[str, Any], argv: list[str]) -> str:
    v = meta["versions"]
    return "\n".join(
        [
            f"Generated {meta['date']} by `{' '.join(['python -m bench', *argv])}`.",
            "",
            f"- machine: {meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']} GiB, {meta['os']}",
            f"- brokers: RabbitMQ {meta['rabbitmq']}, Redis {meta['redis']} (local, default config)",
            f"- Python {meta['python']}; wkctl {v['wkctl']}; Celery {v['celery']}, kombu {v['kombu']}, "
            f"py-amqp {v['py-amqp']}, redis-py {v['redis-py']}; jsonschema {v['jsonschema']}, "
            f"check-jsonschema {v['check-jsonschema']}",
            f"- repetitions: median of {meta['reps']} per side unless a row says otherwise, "
            "sides alternated in ABBA order within the same run; spread = interquartile range "
            "(min–max below 4 samples)",
            f"- total run time: {meta.get('elapsed_s', 0):.0f} s",
            "",
        ]
    )


def _replace_block(text: str, tag: str, content: str) -> str:
    begin, end = f"<!-- bench:{tag}:begin -->", f"<!-- bench:{tag}:end -->"
    block = f"{begin}\n{content.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + block + tail
    marker = "<!-- bench:end -->"
    if marker in text:
        return text.replace(marker, block + "\n\n" + marker)
    return text.rstrip() + "\n\n" + block + "\n"


def update_markdown(
    path: Path, meta: dict[str, Any], results: dict[str, Any], argv: list[str]
) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- bench:end -->\n"
    # The machine block describes the run that produced every block: only a
    # run of all benchmarks rewrites it (a partial run dates its own blocks).
    if set(meta.get("selected", ALL)) >= set(ALL):
        text = _replace_block(text, "meta", md_meta(meta, argv))
    for name in ALL:
        if name in results:
            text = _replace_block(text, name, md_section(results[name], meta))
    path.write_text(text)


# -- driver --------------------------------------------------------------------------


def _run_one(name: str, ctx: BenchContext, selected: set[str], results: dict[str, Any]) -> None:
    if name in ("hello", "elect"):
        from bench import cluster

        results.update(cluster.run(ctx, selected & {"hello", "elect"}))
        return
    module = __import__(f"bench.b_{name}", fromlist=["run"])
    results[name] = module.run(ctx)


def both_sides_measured(result: dict[str, Any]) -> bool:
    """Every case has a wkctl side and another side with a median."""
    if not result.get("cases"):
        return False
    for c in result["cases"]:
        sides = {s: v for m in c["metrics"].values() for s, v in m["sides"].items()}
        ours = [
            v for s, v in sides.items() if s.startswith("wkctl") and v.get("median") is not None
        ]
        theirs = [
            v for s, v in sides.items() if not s.startswith("wkctl") and v.get("median") is not None
        ]
        if not ours or not theirs:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per side")
    parser.add_argument("--brokers", default="amqp,redis")
    parser.add_argument("--out", default=None, metavar="PATH")
    parser.add_argument("--md", dest="md", action="store_true", default=None)
    parser.add_argument("--no-md", dest="md", action="store_false")
    args = parser.parse_args(argv)
    selected = [n.strip() for part in args.only for n in part.split(",") if n.strip()] or list(ALL)
    unknown = [n for n in selected if n not in ALL]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)} (known: {', '.join(ALL)})")
    reps = args.reps or (2 if args.quick else 5)
    write_md = (not args.quick) if args.md is None else args.md
    out = (
        Path(args.out)
        if args.out
        else REPO / "bench" / "results" / f"{datetime.now():%Y-%m-%d-%H%M%S}.json"
    )

    t0 = time.monotonic()
    meta = machine_info()
    meta.update(quick=args.quick, reps=reps, selected=selected)
    print(
        f"wkctl benchmarks: {', '.join(selected)} ({'quick' if args.quick else 'full'}, {reps} reps) "
        f"on {meta['cores']} cores, RabbitMQ {meta['rabbitmq']}, Redis {meta['redis']}",
        flush=True,
    )
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="wkctl-bench-") as tmp:
        ctx = BenchContext(
            quick=args.quick,
            reps=reps,
            brokers=[b.strip() for b in args.brokers.split(",") if b.strip()],
            workdir=Path(tmp),
            log=lambda msg: print(msg, flush=True),
        )
        try:
            done: set[str] = set()
            for name in ALL:
                if name not in selected or name in done:
                    continue
                print(f"[{time.monotonic() - t0:6.1f}s] {name}", flush=True)
                try:
                    _run_one(name, ctx, set(selected), results)
                except Exception as exc:
                    traceback.print_exc()
                    results.setdefault(name, {"name": name, "title": name, "cases": []})
                    results[name]["error"] = f"{type(exc).__name__}: {exc}"
                done.update(results)
        finally:
            ctx.close()
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    for name in selected:
        if name in results:
            print_table(results[name])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "benchmarks": results}, indent=1))
    print(f"\nresults: {out} ({meta['elapsed_s']:.0f} s)")
    if write_md:
        update_markdown(MD_PATH, meta, results, argv)
        print(f"updated {MD_PATH}")
    ok = all(name in results and both_sides_measured(results[name]) for name in selected)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
