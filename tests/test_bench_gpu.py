"""benchmarks/bench_gpu.py: its --quick CPU dry run goes through every case and writes the table
and JSON; --native-only leaves the simprec half out; without a GPU the full run is one line,
exit 2. The GPU numbers themselves come from the H200 (docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_dry_run_measures_both_sides(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--repeats", "1", "--warmup", "0", "--backend", "numpy",
                       "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| case |" in table and "time ratio" in table
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert [(r["case"], r["attention"]) for r in rows] == [
        ("gpt", "explicit"), ("gpt", "sdpa"), ("mlp", None)]
    for row in rows:
        for key in ("native fp32", "native amp-fp16", "simprec fp32", "simprec amp-fp16"):
            assert row[key]["median_s"] > 0 and row[key]["steps"] >= 1, key
        assert row["time ratio"] == pytest.approx(
            row["simprec amp-fp16"]["median_s"] / row["native amp-fp16"]["median_s"])
        assert row["memory ratio"] is None  # no CUDA peak memory on the CPU


def test_recipes_are_held_against_the_native_amp_step(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "mlp", "--backend", "numpy", "--recipes",
                       "amp-fp16,fp8-sm70", "--repeats", "1", "--warmup", "0",
                       "--json", str(out)]) == 0
    assert "| mlp | - | fp8-sm70 |" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["rows"]
    assert "simprec fp32" not in row and "simprec speed-up" not in row
    native = row["native amp-fp16"]["median_s"]
    for label in ("amp-fp16", "fp8-sm70"):
        assert row[f"time ratio {label}"] == pytest.approx(
            row[f"simprec {label}"]["median_s"] / native)
    assert bench.parse_recipe("fp8-sm70") == ("fp8", "sm70")
    assert bench.parse_recipe("amp-fp16") == ("amp-fp16", None)
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--recipes", "fp9-sm70"])


def test_native_only_times_the_native_half(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--native-only", "--only", "mlp", "--repeats", "1",
                       "--warmup", "0", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert "native amp-fp16" in row and "simprec amp-fp16" not in row
    assert row["native speed-up"] > 0


def test_full_run_without_a_gpu_is_one_line(bench, capsys, monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]
