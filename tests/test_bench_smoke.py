"""The benchmarks still run: every one at a tiny size, on one broker.

Timings are never asserted (a shared machine is noisy); what must hold is
that each benchmark produced its results JSON, with a wkctl side and a
comparison side carrying numbers in every case, and the BENCHMARKS.md
generator renders it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHES = ("hello", "elect", "state", "validate", "tail", "scale", "exporter")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, amqp_url: str) -> dict:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--reps", "1", "--brokers", "amqp"]
        + ["--no-md", "--out", str(out)],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.exists(), f"no results written:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    data = json.loads(out.read_text())
    data["_proc"] = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    return data


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.broker
@pytest.mark.celery
def test_meta_names_the_machine(results: dict) -> None:
    meta = results["meta"]
    assert meta["quick"] is True
    assert _number(meta["cores"]) and meta["cores"] >= 1
    assert meta["rabbitmq"] and meta["redis"]
    assert meta["versions"]["wkctl"] and meta["versions"]["celery"]
    assert set(meta["selected"]) == set(BENCHES)


@pytest.mark.broker
@pytest.mark.celery
@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_measured_both_sides(results: dict, name: str) -> None:
    bench = results["benchmarks"].get(name)
    assert bench is not None, f"{name} missing; output:\n{results['_proc']['stdout'][-2000:]}"
    assert not bench.get("error"), bench.get("error")
    assert bench["title"] and bench["cases"]
    for case in bench["cases"]:
        assert case["case"] and isinstance(case["params"], dict)
        ours, theirs = [], []
        for metric in case["metrics"].values():
            assert metric["unit"] and metric["better"] in ("lower", "higher")
            for side, stats in metric["sides"].items():
                assert set(stats) >= {"n", "median", "samples"}
                if stats["median"] is not None:
                    assert _number(stats["median"])
                    assert stats["min"] <= stats["median"] <= stats["max"]
                    (ours if side.startswith("wkctl") else theirs).append(side)
        assert ours, f"{name} / {case['case']}: no wkctl figure"
        assert theirs, f"{name} / {case['case']}: no comparison figure"
        for t in case["targets"]:
            assert isinstance(t["met"], bool) and t["what"] and t["goal"]


@pytest.mark.broker
@pytest.mark.celery
def test_markdown_renders(results: dict, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    from bench.run import update_markdown

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nintro\n\n<!-- bench:end -->\n")
    bench = {k: v for k, v in results["benchmarks"].items()}
    update_markdown(md, results["meta"], bench, ["--quick"])
    update_markdown(md, results["meta"], bench, ["--quick"])  # idempotent blocks
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nintro")
    for name in BENCHES:
        assert text.count(f"<!-- bench:{name}:begin -->") == 1
        assert f"### {name}:" in text
    assert "| case | metric | side | median |" in text
