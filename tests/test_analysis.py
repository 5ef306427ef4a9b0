"""Tests of simprec.analysis: the Recorder's counts, its files, the report and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import simprec as sp
from simprec import hooks
from simprec.analysis import EXPONENTS, Recorder, Recording, load, write_report
from simprec.analysis import figures as figs
from simprec.analysis.recorder import BIN_ABOVE, BIN_BELOW, BIN_NONFINITE, BIN_ZERO, E_MIN


def _col(e):
    return int(e - E_MIN)


# ----------------------------------------------------------------------------- counts


def test_cast_counts_every_category():
    values = np.array([0.0, 1e-9, -2.0 ** -20, 1e5, 1.0, -3.0, np.nan, np.inf, 2.0 ** -25,
                       2.0 ** -14], dtype=np.float32)
    x = sp.tensor(values)
    with Recorder() as rec:
        rec.start_step(0)
        y = x.to(sp.fp16)
        rec.end_step()
    (row,) = rec.rows(fmt="fp16")
    assert row["kind"] == "cast" and row["step"] == 0 and row["ops"] == "Cast"
    assert row["count"] == 10
    assert row["nonzero_wide"] == 9          # NaN counts as nonzero
    # 0 stays 0; 1e-9 and 2^-25 (a tie, to even) round to zero
    assert row["zeros"] == 3 and row["underflow"] == 2
    assert row["underflow_share"] == pytest.approx(2 / 9)
    assert row["subnormal"] == 1              # -2^-20; 2^-14 is the smallest normal
    assert row["overflow"] == 1               # 1e5 -> inf
    assert row["nan"] == 1 and row["inf"] == 2
    assert row["max_abs"] == 3.0
    assert row["min_abs"] == 2.0 ** -20
    h = rec.histogram("cast")
    assert h.sum() == 10
    assert h[BIN_ZERO] == 1 and h[BIN_NONFINITE] == 2
    assert h[_col(-30)] == 1                  # 1e-9 = 1.07 * 2^-30
    assert h[_col(-20)] == 1 and h[_col(16)] == 1 and h[_col(0)] == 1 and h[_col(1)] == 1
    assert h[_col(-25)] == 1 and h[_col(-14)] == 1
    assert np.isnan(y.numpy()[6]) and np.isinf(y.numpy()[3])


@pytest.mark.parametrize("in_step", [False, True])   # counted at once, or batched at end_step
@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16, sp.fp8_e5m2])
def test_counts_match_a_direct_computation(fmt, in_step):
    rng = np.random.default_rng(7)
    n = 4000
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-40, 20, n))).astype(np.float32)
    x[rng.integers(0, n, 200)] = 0.0
    x[rng.integers(0, n, 20)] = np.inf
    x[rng.integers(0, n, 20)] = -np.inf
    x[rng.integers(0, n, 10)] = np.nan
    x[rng.integers(0, n, 10)] = -0.0
    x[rng.integers(0, n, 10)] = np.float32(1e-40)            # fp32 subnormals
    extra = np.float32([1.0, 2.0])                           # a second event of the same row
    with Recorder() as rec:
        if in_step:
            rec.start_step(0)
            sp.tensor(extra).to(fmt)
            sp.tensor(x).to(fmt)
            sp.tensor(np.float32([3.0])).to(sp.bf16 if fmt != sp.bf16 else sp.fp16)
            rec.end_step()
        else:
            sp.tensor(x).to(fmt)
    (row,) = rec.rows(fmt=fmt)
    k = 2 if in_step else 0
    r = sp.round(x, fmt)
    a = np.abs(r)
    assert row["count"] == n + k and row["events"] == (2 if in_step else 1)
    assert row["zeros"] == np.sum(r == 0)
    assert row["nonzero_wide"] == np.sum(x != 0) + k         # NaN != 0
    assert row["underflow"] == np.sum((r == 0) & (x != 0))
    assert row["subnormal"] == np.sum((a > 0) & (a < fmt.smallest_normal))
    assert row["overflow"] == np.sum(np.isinf(r) & np.isfinite(x))
    assert row["nan"] == np.sum(np.isnan(r)) and row["inf"] == np.sum(np.isinf(r))
    finite = a[np.isfinite(a)]
    assert row["max_abs"] == finite.max()
    assert row["min_abs"] == finite[finite > 0].min()
    h = rec.histogram(fmt=fmt)
    if in_step:
        h[_col(0)] -= 1
        h[_col(1)] -= 1
    ok = np.isfinite(x) & (x != 0)
    e = np.floor(np.log2(np.abs(x[ok].astype(np.float64)))).astype(int)
    for b in (-30, -20, -10, 0, 10):
        assert h[_col(b)] == np.sum(e == b)
    assert h[BIN_ZERO] == np.sum(x == 0) and h[BIN_NONFINITE] == np.sum(~np.isfinite(x))
    assert h[BIN_BELOW] == np.sum(e < E_MIN) and h.sum() == n
    if in_step:  # the second event of the step was the first with a non-finite result
        first = rec.steps()[0]["first_nonfinite"]
        assert first["op"] == "Cast" and first["fmt"] == fmt.name
        assert first["overflow"] is (row["overflow"] > 0)      # bf16 has fp32's range


def test_histogram_range_bins():
    x = sp.tensor(np.array([2.0 ** -100, 2.0 ** 40, 1.5], dtype=np.float32))
    with Recorder() as rec:
        x.to(sp.bf16)
    h = rec.histogram("cast", fmt="bf16")
    assert h[BIN_BELOW] == 1 and h[BIN_ABOVE] == 1 and h[_col(0)] == 1
    assert rec.rows()[0]["step"] is None     # outside start_step/end_step


def test_rows_keyed_by_step_module_kind_and_gradients_named():
    from simprec import amp, nn

    model = nn.Sequential(nn.Linear(4, 8, generator=np.random.default_rng(0)), nn.ReLU(),
                          nn.Linear(8, 3, generator=np.random.default_rng(1)))
    x = sp.tensor(np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32))
    with Recorder(model) as rec:
        for step in range(2):
            rec.start_step(step)
            with amp.autocast(sp.fp16):
                out = model(x)
            out.float().sum().backward()
            model.zero_grad()
            rec.end_step(loss=1.0)
    assert [s["step"] for s in rec.steps()] == [0, 1]
    keys = {(r["step"], r["kind"], r["module"], r["fmt"]) for r in rec.rows()}
    for step in (0, 1):
        assert (step, "activation", "0", "fp16") in keys
        assert (step, "activation_grad", "2", "fp16") in keys   # the gradient of 2's input
        assert (step, "activation", "1", "fp16") not in keys      # ReLU rounds nothing
        assert (step, "weight", "0", "fp16") in keys      # the autocast copy of 0.weight
    names = {r["name"] for r in rec.rows("weight_grad")}
    assert {"0.weight", "0.bias", "2.weight", "2.bias"} <= names
    weights = {r["name"] for r in rec.rows("weight")}
    assert {"0.weight", "2.weight"} <= weights
    assert not hooks.observers


def test_recording_off_registers_nothing_and_exits_cleanly():
    assert hooks.observers == []
    rec = Recorder()
    x = sp.tensor(np.ones(3, dtype=np.float32))
    x.to(sp.fp16)                              # not entered: nothing recorded
    assert rec.rows() == []
    with pytest.raises(RuntimeError):
        with rec:
            assert hooks.observers == [rec]
            raise RuntimeError("boom")
    assert hooks.observers == []


def test_every_and_paused():
    x = sp.tensor(np.full(4, 1e-9, dtype=np.float32))
    with Recorder(every=2) as rec:
        for step in range(4):
            rec.start_step(step)
            x.to(sp.fp16)
            with rec.paused():
                x.to(sp.fp16)
            rec.end_step()
    assert sorted(r["step"] for r in rec.rows()) == [0, 2]
    assert all(r["events"] == 1 and r["underflow"] == 4 for r in rec.rows())
    assert [s["recorded"] for s in rec.steps()] == [True, False, True, False]


def test_update_events_lost_share_and_weight_rows():
    old = np.array([1.0, 1.0, 1.0, 0.5], dtype=np.float32)
    update = np.array([2.0 ** -12, 2.0 ** -9, 0.0, 2.0 ** -13], dtype=np.float32)
    new = sp.round(old + update, sp.fp16)
    with Recorder() as rec:
        rec.start_step(3)
        hooks.notify({"kind": "update", "name": "fc.weight", "fmt": sp.fp16, "old": old,
                      "new": new, "update": update})
        rec.end_step()
    (u,) = rec.rows("update")
    assert u["name"] == "fc.weight" and u["module"] == "fc" and u["fmt"] == "fp16"
    assert u["nonzero_update"] == 3 and u["lost"] == 2 and u["lost_share"] == pytest.approx(2 / 3)
    ratio = rec.histogram("update")          # of |update| / |weight|; the zero update is a zero
    assert ratio[_col(-12)] == 2 and ratio[_col(-9)] == 1 and ratio[BIN_ZERO] == 1
    (w,) = rec.rows("weight")
    assert w["count"] == 4 and w["max_abs"] == pytest.approx(1.0 + 2.0 ** -9)


def test_real_optimizer_pure_fp16_loses_small_updates():
    from simprec import optim

    p = sp.nn.Parameter(np.full(8, 1.0, dtype=np.float32), fmt=sp.fp16)
    p.name = "w"
    opt = optim.SGD([p], lr=1.0)
    with Recorder() as rec:
        rec.start_step(0)
        p.grad = sp.tensor(np.full(8, 2.0 ** -13, dtype=np.float32), fmt=sp.fp16)
        opt.step()
        rec.end_step()
    (u,) = rec.rows("update", name="w")
    assert u["lost_share"] == 1.0
    assert np.all(p.numpy() == 1.0)


def test_scaler_event_fills_step_row():
    with Recorder() as rec:
        rec.start_step(0)
        hooks.notify({"kind": "scaler", "scale": 65536.0, "found_inf": True, "skipped": True})
        row = rec.end_step(loss=2.5)
    assert row["scale"] == 65536.0 and row["skipped"] is True and row["loss"] == 2.5
    assert rec.steps()[0]["found_inf"] is True


# ----------------------------------------------------------------------------- overflow


def test_injected_overflow_names_the_first_nonfinite_layer():
    from simprec import amp, optim
    from simprec.models import MLP
    from simprec.nn import functional as F

    model = MLP(64, (32, 32), 10, generator=np.random.default_rng(0))
    recipe = amp.get_recipe("amp-fp16")
    model, opt, scaler = recipe.prepare(model, lambda ps: optim.SGD(ps, lr=0.1))
    rng = np.random.default_rng(1)
    batch = (rng.random((16, 64), dtype=np.float32), rng.integers(0, 10, 16))

    def loss_fn(m, b):
        return F.cross_entropy(m(sp.tensor(b[0])), sp.tensor(b[1]))

    target = "2"  # the second Linear layer of the Sequential
    with Recorder(model) as rec:
        rec.start_step(0)
        _, facts = recipe.step(model, opt, loss_fn, batch)
        rec.end_step(**facts)
        assert not rec.steps()[0]["skipped"]
        assert rec.steps()[0]["first_nonfinite"] is None
        layer = model.get_submodule(target)
        # inject: every weight of layer "2" is 30000 (exact in fp16), so its fp16 output, a sum
        # of 32 ReLU outputs times 30000, overflows, while every earlier op stays finite
        layer.weight.data = np.full_like(layer.weight.data, 30000.0)
        rec.start_step(1)
        _, facts = recipe.step(model, opt, loss_fn, batch)
        rec.end_step(**facts)
    step = rec.steps()[1]
    assert step["skipped"] is True
    first = step["first_nonfinite"]
    assert first["module"] == target
    assert first["kind"] == "activation" and first["overflow"] is True
    assert rec.summary("activation", module=target, step=1)["overflow"] > 0


# ----------------------------------------------------------------------------- files


def _small_run(tmp_path, steps=6, recipe="amp-fp16"):
    from simprec import amp, optim
    from simprec.models import MLP
    from simprec.nn import functional as F

    run = tmp_path / "run"
    run.mkdir()
    model = MLP(64, (16,), 10, generator=np.random.default_rng(0))
    rec_ = amp.get_recipe(recipe)
    model, opt, _ = rec_.prepare(model, lambda ps: optim.SGD(ps, lr=0.1))
    rng = np.random.default_rng(0)

    def loss_fn(m, b):
        return F.cross_entropy(m(sp.tensor(b[0])), sp.tensor(b[1])) * 2.0 ** -20

    lines = []
    with Recorder(model) as rec:
        for step in range(steps):
            batch = (rng.random((8, 64), dtype=np.float32), rng.integers(0, 10, 8))
            rec.start_step(step)
            _, facts = rec_.step(model, opt, loss_fn, batch)
            rec.end_step(**facts)
            lines.append({"kind": "train", "step": step, "loss": facts["loss"]})
        lines.append({"kind": "eval", "step": steps - 1, "accuracy": 0.25})
    (run / "config.json").write_text(json.dumps({"model": "mlp", "recipe": recipe, "steps": steps}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "summary.json").write_text(json.dumps({"test_accuracy": 0.25}))
    rec.save(run)
    return run, rec


def test_save_load_roundtrip_without_pickle(tmp_path):
    run, rec = _small_run(tmp_path)
    folder = run / "analysis"
    assert sorted(os.listdir(folder)) == ["histograms.npz", "meta.json", "steps.jsonl",
                                          "tensors.jsonl"]
    with np.load(folder / "histograms.npz", allow_pickle=False) as z:
        assert z["counts"].shape == (len(rec.rows()), len(EXPONENTS) + 4)
    back = load(run)
    assert back.rows() == rec.rows()
    assert back.steps() == json.loads(json.dumps(rec.steps()))
    np.testing.assert_array_equal(back.histogram("activation_grad"),
                                  rec.histogram("activation_grad"))
    np.testing.assert_array_equal(back.histogram("update"),
                                  rec.histogram("update"))
    assert load(folder).rows() == rec.rows()


def test_save_after_resume_keeps_earlier_steps(tmp_path):
    run, rec = _small_run(tmp_path, steps=4)
    x = sp.tensor(np.full(3, 1e-9, dtype=np.float32))
    with Recorder() as later:                  # a resumed run: steps 2.. again
        for step in (2, 3, 4):
            later.start_step(step)
            x.to(sp.fp16)
            later.end_step(loss=0.0)
    later.save(run)
    merged = load(run)
    assert [s["step"] for s in merged.steps()] == [0, 1, 2, 3, 4]
    assert {r["step"] for r in merged.rows()} == {0, 1, 2, 3, 4}
    assert {r["kind"] for r in merged.rows(step=3)} == {"cast"}
    assert [r["id"] for r in merged.rows()] == list(range(len(merged.rows())))


def test_report_with_figures(tmp_path):
    pytest.importorskip("matplotlib")
    run, _ = _small_run(tmp_path)
    path = write_report(run)
    text = open(path).read()
    for name in ("loss.png", "loss_scale.png", "gradient_exponents.png", "underflow_per_layer.png",
                 "lost_updates.png"):
        assert (run / "figures" / name).stat().st_size > 5000, name
        assert f"figures/{name}" in text
    assert "| activation_grad | fp16 |" in text
    assert "Underflow per layer" in text and "Lost updates" in text


def test_report_without_matplotlib_still_writes_markdown(tmp_path, monkeypatch):
    run, _ = _small_run(tmp_path)
    monkeypatch.setattr(figs, "have_matplotlib", lambda: False)
    text = open(write_report(run)).read()
    assert "matplotlib is not installed" in text and "pip install" in text
    assert not (run / "figures").exists()
    assert "| activation_grad | fp16 |" in text


def test_report_of_an_unrecorded_run(tmp_path):
    run = tmp_path / "plain"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "mlp"}))
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 0, "loss": 2.3}) + "\n")
    text = open(write_report(run, figures_on=False)).read()
    assert "--record" in text


def test_cli_report(tmp_path, capsys):
    from simprec.cli import main

    run, _ = _small_run(tmp_path)
    assert main(["report", str(run), "--no-figures"]) == 0
    assert (run / "report.md").exists()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_format_ranges_fp16():
    r = figs.format_ranges(sp.fp16)
    assert r["normal"] == (-14, 15) and r["subnormal"] == (-25, -15) and r["lost"] == (None, -26)
    assert r["overflow"] == (16, None)
    # the edges agree with the rounding itself
    assert sp.round(np.float32([2.0 ** -26 * 1.99]), sp.fp16)[0] == 0
    assert sp.round(np.float32([2.0 ** -25 * 1.01]), sp.fp16)[0] == 2.0 ** -24
    assert np.isinf(sp.round(np.float32([2.0 ** 16]), sp.fp16)[0])


def test_recording_is_a_recording():
    assert issubclass(Recorder, Recording)
