"""Run directories and experiments under the accidents of real use: runs started in the same
second, a corrupt checkpoint, a cut metrics.jsonl, a run that does not train, an interrupted
experiment, a log that is not a terminal."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
from conftest import assert_bit_identical, checkpoint_state

from simprec.cli import main
from simprec.train import TrainConfig, Trainer, read_metrics
from simprec.train import loop as loop_module
from simprec.train.errors import CheckpointError, RunWarning

TINY = ["--model-opt", "hidden=[16]", "--steps", "12", "--batch-size", "16", "--eval-every", "6",
        "--checkpoint-every", "4", "--keep-checkpoints", "3", "-q"]
TINY_CONFIG = TrainConfig(model_options={"hidden": [16]}, steps=6, batch_size=16, eval_every=0)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted TINY run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


def _interrupted_copy(reference, tmp_path, at_step=8):
    """The reference run as a kill just after the checkpoint of `at_step` would leave it."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "summary.json").unlink()
    for ckpt in (run / "checkpoints").iterdir():
        if int(ckpt.stem.split("-")[1]) > at_step:
            ckpt.unlink()
    return run


# ---------------------------------------------------------------------------- names and locks


def test_default_names_of_runs_started_in_the_same_second_differ(tmp_path, monkeypatch):
    """Two runs that both picked the same default name (they started in the same second): the
    second one takes NAME-2 instead of failing with a --resume hint about the first."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loop_module, "_default_out",
                        lambda cfg: tmp_path / "runs" / "mlp-amp-fp16-20260101-120000")
    first, second = Trainer(TINY_CONFIG, quiet=True), Trainer(TINY_CONFIG, quiet=True)
    a, b = first.run(), second.run()
    assert a.run_dir.name == "mlp-amp-fp16-20260101-120000"
    assert b.run_dir.name == "mlp-amp-fp16-20260101-120000-2"
    assert json.loads((b.run_dir / "summary.json").read_text())["run"] == str(b.run_dir)
    assert_bit_identical(checkpoint_state(a.run_dir), checkpoint_state(b.run_dir))


def test_no_lock_file_is_left_behind(reference):
    assert not (reference / ".lock").exists()


def test_a_held_run_is_refused_and_released(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lock = loop_module._RunLock.acquire(run)
    with pytest.raises(CheckpointError, match="another process"):
        loop_module._RunLock.acquire(run)
    lock.release()
    assert not (run / ".lock").exists()
    loop_module._RunLock.acquire(run).release()


# ---------------------------------------------------------------------------- checkpoints


def test_corrupt_newest_checkpoint_falls_back_to_the_older_one(reference, tmp_path, capsys):
    run = _interrupted_copy(reference, tmp_path, at_step=8)
    newest = run / "checkpoints" / "step-00000008.npz"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the arrays
    newest.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "train", "--resume", run, "-q")
    assert code == 0, err
    warnings_ = [line for line in err.splitlines() if "warning:" in line]
    assert len(warnings_) == 1 and "step-00000008.npz" in warnings_[0]
    assert "step-00000004.npz" in warnings_[0] and "(step 4)" in warnings_[0]
    assert (run / "checkpoints" / "step-00000008.npz.corrupt").exists()
    assert_bit_identical(checkpoint_state(run), checkpoint_state(reference))


def test_a_corrupt_checkpoint_given_by_name_points_to_the_others(reference, tmp_path, capsys):
    run = _interrupted_copy(reference, tmp_path, at_step=8)
    newest = run / "checkpoints" / "step-00000008.npz"
    newest.write_bytes(newest.read_bytes()[:100])
    code, _, err = run_cli(capsys, "train", "--resume", newest)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "step-00000004.npz" in err and f"--resume {run}" in err


def test_no_readable_checkpoint_is_an_error(reference, tmp_path, capsys):
    run = _interrupted_copy(reference, tmp_path, at_step=8)
    for ckpt in (run / "checkpoints").iterdir():
        ckpt.write_bytes(b"not a zip")
    code, _, err = run_cli(capsys, "train", "--resume", run)
    assert code == 2 and "no checkpoint of the run can be read" in err


# ---------------------------------------------------------------------------- metrics.jsonl


def test_a_cut_metrics_file_is_reported_and_the_counts_stay_right(reference, tmp_path, capsys):
    run = _interrupted_copy(reference, tmp_path, at_step=8)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:4]))  # eval 0 and steps 1-3
    code, _, err = run_cli(capsys, "train", "--resume", run, "-q")
    assert code == 0
    warned = [line for line in err.splitlines() if "warning:" in line]
    assert len(warned) == 1 and "steps 4-8" in warned[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metrics_missing_steps"] == "4-8"
    want = json.loads((reference / "summary.json").read_text())
    assert summary["skipped_steps"] == want["skipped_steps"]


def test_an_intact_metrics_file_gives_no_warning(reference, tmp_path):
    run = _interrupted_copy(reference, tmp_path, at_step=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RunWarning)
        Trainer.resume(run, quiet=True).run()
    assert "metrics_missing_steps" not in json.loads((run / "summary.json").read_text())
    assert read_metrics(run, "train")[-1]["step"] == 12


def test_report_notes_a_cut_metrics_file(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[:len(text) // 2])  # cut in the middle of a line
    code, _, err = run_cli(capsys, "report", run, "--no-figures")
    assert code == 0
    assert "warning:" in err and "1 unreadable line" in err and "steps" in err
    report = (run / "report.md").read_text()
    assert "metrics.jsonl is incomplete" in report


def test_report_of_an_intact_run_has_no_note(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    code, _, err = run_cli(capsys, "report", run, "--no-figures")
    assert code == 0 and "warning" not in err
    assert "incomplete" not in (run / "report.md").read_text()


# ------------------------------------------------------------------- a run that did not train


def test_a_run_that_skips_most_steps_warns_and_exits_3(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--lr", "1e6", "--out", run)
    assert code == 3
    assert "warning: the run did not train" in err and "steps were skipped" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_steps"] > summary["steps_done"] / 2
    assert "steps were skipped" in summary["diverged"]


def test_a_run_that_trains_is_not_called_diverged(reference):
    assert json.loads((reference / "summary.json").read_text())["diverged"] is None


# ---------------------------------------------------------------------------- progress


def test_progress_lines_reach_a_log_that_is_not_a_terminal(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", *TINY[:-1], "--out", tmp_path / "run")
    assert code == 0
    assert "step 12/12" in err and "step 6: test loss" in err  # stdout is captured: no tty
    assert "simprec train: done" in out


# ---------------------------------------------------------------------------- experiments


@pytest.fixture
def tiny_scaling(monkeypatch):
    """The scaling experiment, shrunk to a few steps of a tiny network."""
    from simprec.analysis import experiments

    def setup(name, quick, seed):
        return experiments.Setup(steps=6, hidden=(8,), eval_every=3, seed=seed,
                                 notes={"static_exponents": [0, 16], "growth_interval": 2})

    monkeypatch.setattr(experiments, "_setup", setup)
    return experiments


def _results(out):
    info = json.loads((out / "experiment.json").read_text())
    return {slug: {k: v for k, v in r["summary"].items() if k != "seconds"}
            for slug, r in info["results"].items()}


def test_an_interrupted_experiment_continues_when_run_again(tiny_scaling, tmp_path, capsys):
    whole = tmp_path / "whole"
    tiny_scaling.run_experiment("scaling", whole, quick=True, figures_on=False)

    out = tmp_path / "cut"

    def interrupt_at_second_arm(text):
        if text.startswith("scaling: static 2^16"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_scaling.run_experiment("scaling", out, quick=True, progress=interrupt_at_second_arm,
                                    figures_on=False)
    first_arm = (out / "static-2e0" / "metrics.jsonl").read_text()
    code, stdout, err = run_cli(capsys, "experiment", "scaling", "--quick", "--no-figures",
                                "--out", out)
    assert code == 0, err
    assert "1 of 3 arms done" in stdout and "finished before, kept" in stdout
    assert (out / "static-2e0" / "metrics.jsonl").read_text() == first_arm
    assert _results(out) == _results(whole)
    assert not (out / tiny_scaling.PLAN).exists()


def test_an_experiment_does_not_continue_another_ones_run(tiny_scaling, tmp_path, capsys):
    out = tmp_path / "e"

    def stop(text):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tiny_scaling.run_experiment("scaling", out, quick=True, progress=stop, figures_on=False)
    code, _, err = run_cli(capsys, "experiment", "scaling", "--quick", "--seed", "1",
                           "--out", out)
    assert code == 2 and "unfinished run of 'simprec experiment scaling --quick'" in err
