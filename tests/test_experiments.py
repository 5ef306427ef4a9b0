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


TINY_GPT = ["--model", "gpt", "--model-opt", "n_layer=1", "--model-opt", "n_embd=16",
            "--model-opt", "n_head=2", "--model-opt", "block_size=16", "--steps", "3",
            "--batch-size", "2", "--record-every", "2"]


def test_experiment_on_a_gpt_with_its_own_sizes(tmp_path, capsys):
    """--model gpt and the size options (how `--backend cupy` runs the issue-12 GPT): the arms
    train the GPT on the text corpus, record every 2nd step, and the report, the arms' configs
    and the continuation command say so."""
    from simprec.cli import main

    out = tmp_path / "exp"
    assert main(["experiment", "underflow", "--quick", "--no-figures", "--out", str(out),
                 *TINY_GPT]) == 0
    info = json.loads((out / "experiment.json").read_text())
    assert info["setup"]["model"] == "gpt" and info["setup"]["steps"] == 3
    assert info["command"] == ("simprec experiment underflow --quick --model gpt --model-opt "
                               "n_layer=1 --model-opt n_embd=16 --model-opt n_head=2 "
                               "--model-opt block_size=16 --steps 3 --batch-size 2 "
                               "--record-every 2")
    for arm in info["arms"]:
        config = json.loads((out / arm / "config.json").read_text())
        assert (config["model"], config["data"], config["backend"]) == ("gpt", "text", "numpy")
        assert config["model_options"]["n_embd"] == 16 and config["batch_size"] == 2
        assert [s["step"] for s in load(out / arm).steps() if s["recorded"]] == [0, 2]
        assert 0 <= info["results"][arm]["summary"]["test_accuracy"] <= 1
    report = (out / "report.md").read_text()
    assert "GPT (1 blocks, width 16, 2 heads, context 16)" in report
    # the same command continues nothing (finished); another size is another experiment
    assert main(["experiment", "underflow", "--quick", "--out", str(out), *TINY_GPT]) == 2
    assert "finished experiment" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--model", "cnn"], "invalid choice"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--model-opt", "n_layer=2"], "the MLP takes --model-opt hidden"),
    (["--backend", "nonsense"], "nonsense"),
])
def test_experiment_variant_errors_are_one_line(tmp_path, capsys, args, message):
    from simprec.cli import main

    with pytest.raises(SystemExit) if "choice" in message else _nothing():
        assert main(["experiment", "underflow", "--out", str(tmp_path / "x"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
