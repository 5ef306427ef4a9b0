"""The precision experiments (simprec.analysis.experiments), in their small (--quick) versions.

The full versions and their numbers are in docs/experiments.md; these check the same effects on
smaller networks and shorter runs (a few seconds each).
"""

from __future__ import annotations

import json

import pytest

from simprec.analysis import load, run_experiment


@pytest.fixture(scope="module")
def underflow(tmp_path_factory):
    out = tmp_path_factory.mktemp("underflow")
    return out, run_experiment("underflow", out, quick=True, figures_on=False)


@pytest.fixture(scope="module")
def stagnation(tmp_path_factory):
    out = tmp_path_factory.mktemp("stagnation")
    return out, run_experiment("stagnation", out, quick=True, figures_on=False)


def test_underflow_without_scaling_loses_gradients_and_scaling_recovers_them(underflow):
    _, info = underflow
    res = {k: v["summary"] for k, v in info["results"].items()}
    none, dyn, fp32 = res["fp16-no-scaling"], res["fp16-dynamic"], res["fp32"]
    assert none["activation_grad_underflow_share"] >= 0.10
    assert dyn["activation_grad_underflow_share"] <= 0.001
    assert fp32["activation_grad_underflow_share"] is None     # nothing rounded to fp16
    # the lost gradients cost training: a higher loss than fp32 and than dynamic scaling
    assert none["train_loss_last"] > 1.05 * fp32["train_loss_last"]
    assert dyn["train_loss_last"] < none["train_loss_last"]


def test_underflow_rows_and_report(underflow):
    out, info = underflow
    rec = load(out / "fp16-no-scaling")
    s = rec.summary("activation_grad", fmt="fp16")
    assert s["underflow"] > 0 and s["underflow"] / s["nonzero_wide"] >= 0.10
    # the shares are recomputable from the rows
    rows = rec.rows("activation_grad", fmt="fp16")
    assert sum(r["underflow"] for r in rows) == s["underflow"]
    text = (out / "report.md").read_text()
    assert "activation-gradient underflow" in text
    assert "simprec experiment underflow --quick" in text
    saved = json.loads((out / "experiment.json").read_text())
    assert saved["arms"] == ["fp32", "fp16-no-scaling", "fp16-dynamic"]
    for arm in saved["arms"]:
        assert (out / arm / "report.md").exists() and (out / arm / "analysis").is_dir()


def test_stagnation_pure_fp16_loses_updates_and_falls_behind(stagnation):
    _, info = stagnation
    res = {k: v["summary"] for k, v in info["results"].items()}
    pure, master = res["pure-fp16"], res["fp16-master"]
    assert pure["lost_update_share"] >= 0.3
    assert master["lost_update_share"] <= 0.05
    per_param = pure["lost_update_share_per_param"]
    assert set(per_param) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    for name in ("0.weight", "2.weight", "4.weight"):       # measured per parameter
        assert per_param[name] > 5 * master["lost_update_share_per_param"][name] + 0.1
    assert pure["train_loss_last"] > master["train_loss_last"]


def test_stagnation_lost_updates_are_update_rows(stagnation):
    out, _ = stagnation
    rec = load(out / "pure-fp16")
    rows = rec.rows("update", name="2.weight")
    assert rows and all(r["fmt"] == "fp16" for r in rows)
    lost = sum(r["lost"] for r in rows) / sum(r["nonzero_update"] for r in rows)
    assert lost > 0.3
    # the updates that vanished are the small ones: below 2^-11 of their weight
    ratio = rec.histogram("update", name="2.weight")
    from simprec.analysis import EXPONENTS
    from simprec.analysis.recorder import BIN_ZERO

    small = ratio[:len(EXPONENTS)][EXPONENTS < -11].sum()
    nonzero = ratio.sum() - ratio[BIN_ZERO]
    assert small / nonzero >= lost - 0.05


def test_cli_experiment_rejects_unknown_names(capsys):
    from simprec.cli import main

    assert main(["experiment", "nonsense"]) == 2
    assert "valid names: underflow, stagnation, scaling" in capsys.readouterr().err
