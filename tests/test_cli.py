"""The `simprec` command: help, a tiny real run, bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simprec.cli import main
from simprec.train import load_checkpoint

# A small, fast run: a 64-32-10 MLP, 12 steps.
TINY = ["--model-opt", "hidden=[32]", "--steps", "12", "--batch-size", "32", "--eval-every", "6",
        "--checkpoint-every", "4", "-q"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0] and "Traceback" not in err


# ---------------------------------------------------------------------------- help


def test_top_level_help_lists_working_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "simprec train --help" in out
    for missing in ("parity", "bench"):  # listed only when implemented
        try:
            __import__(f"simprec.{missing}_cli")
        except ModuleNotFoundError:
            assert f"    {missing} " not in out


def test_no_command_prints_help(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "COMMAND" in out


def test_train_help_is_self_explanatory(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--data", "--recipe", "--backend", "--accumulate", "--steps",
                   "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--out",
                   "--resume", "--eval-every", "--checkpoint-every", "--record"):
        assert option in out
    assert "amp-fp16" in out and "mlp" in out and "digits" in out  # the choices are listed


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "simprec" in capsys.readouterr().out


# ---------------------------------------------------------------------------- a run


def test_train_writes_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", *TINY[:-1], "--out", str(out))
    assert code == 0, err
    assert "test accuracy" in stdout and str(out) in stdout  # the table and the path
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 12 and config["recipe"] == "amp-fp16"
    assert config["run_info"]["parameters"] == 64 * 32 + 32 + 32 * 10 + 10
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    assert [x["step"] for x in train] == list(range(1, 13))
    assert set(train[0]) >= {"step", "loss", "scale", "skipped", "lr", "seconds", "samples_per_s"}
    assert [x["step"] for x in lines if x["kind"] == "eval"] == [0, 6, 12]
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["test_accuracy"] <= 1 and summary["steps_done"] == 12
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-00000008.npz", "step-00000012.npz"]  # the newest two


def test_quiet_run_prints_nothing(tmp_path, capsys):
    code, stdout, err = run_cli(capsys, "train", *TINY, "--out", str(tmp_path / "q"))
    assert code == 0 and stdout == "" and err == ""


def test_resume_of_a_finished_run_is_a_no_op(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--out", str(out))[0] == 0
    before = (out / "checkpoints" / "step-00000012.npz").read_bytes()
    code, _, err = run_cli(capsys, "train", "--resume", str(out), "-q")
    assert code == 0, err
    assert (out / "checkpoints" / "step-00000012.npz").read_bytes() == before


def test_console_script_and_python_m(tmp_path):
    exe = Path(sys.executable).with_name("simprec")
    cmds = [[sys.executable, "-m", "simprec", "--help"]]
    if exe.exists():
        cmds.append([str(exe), "--help"])
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "train" in proc.stdout


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("option,value,valid", [
    ("--model", "resnet", "mlp"),
    ("--data", "mnist", "digits"),
    ("--recipe", "fp4", "amp-fp16"),
    ("--backend", "tpu", "numpy"),
    ("--accumulate", "sm100", "sm90"),
    ("--optimizer", "lbfgs", "adamw"),
])
def test_unknown_names_list_the_choices(tmp_path, capsys, option, value, valid):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", option, value, "--out", str(out))
    assert_usage_error(code, err)
    assert repr(value) in err and valid in err
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("args", [
    ["--steps", "-5"], ["--steps", "0"], ["--batch-size", "-1"], ["--batch-size", "0"],
    ["--lr", "-0.1"], ["--lr", "nan"], ["--eval-every", "-1"], ["--epochs", "0"],
    ["--steps", "abc"], ["--steps", "3", "--epochs", "2"], ["--model", "gpt", "--data", "digits"],
    ["--model", "mlp", "--data", "text"], ["--data", "text", "--epochs", "1"],
    ["--model-opt", "hidden"], ["--model-opt", "nonsense=3"], ["--recipe-opt", "bogus=1"],
    ["--frobnicate"],
])
def test_bad_numbers_and_combinations(tmp_path, capsys, args):
    out = tmp_path / "run"
    try:
        code = main(["train", *args, "--out", str(out)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    _, err = capsys.readouterr()
    assert_usage_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "train", *TINY, "--out", str(blocker / "run"))
    assert_usage_error(code, err)
    assert blocker.read_text() == "x"
    if os.path.isdir("/proc"):
        code, _, err = run_cli(capsys, "train", *TINY, "--out", "/proc/simprec-run")
        assert_usage_error(code, err)
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            code, _, err = run_cli(capsys, "train", *TINY, "--out", str(locked / "run"))
            assert_usage_error(code, err)
        finally:
            locked.chmod(0o700)


def test_out_that_exists(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, "train", *TINY, "--out", str(out))
    assert_usage_error(code, err)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


@pytest.fixture
def finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", *TINY, "--out", str(out))[0] == 0
    return out


def test_resume_missing(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert_usage_error(code, err)
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "empty"))
    assert_usage_error(code, err)


def test_resume_without_checkpoints(finished_run, capsys):
    for p in (finished_run / "checkpoints").iterdir():
        p.unlink()
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run))
    assert_usage_error(code, err)
    assert "no checkpoint" in err


def test_resume_corrupt_checkpoint(finished_run, capsys):
    newest = finished_run / "checkpoints" / "step-00000012.npz"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    metrics_before = (finished_run / "metrics.jsonl").read_bytes()
    # named explicitly, a corrupt checkpoint is an error that points to the run's others
    # (--resume RUN falls back to the newest valid one: tests/test_runs.py)
    code, _, err = run_cli(capsys, "train", "--resume", str(newest))
    assert_usage_error(code, err)
    assert "corrupt" in err and "step-00000008.npz" in err
    assert (finished_run / "metrics.jsonl").read_bytes() == metrics_before  # nothing touched
    # the older checkpoint can still be named explicitly
    older = finished_run / "checkpoints" / "step-00000008.npz"
    code, _, err = run_cli(capsys, "train", "--resume", str(older), "-q")
    assert code == 0, err
    state, meta = load_checkpoint(newest)
    assert meta["step"] == 12


def test_resume_corrupt_config(finished_run, capsys):
    (finished_run / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run))
    assert_usage_error(code, err)


def test_resume_with_a_different_config(finished_run, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run), "--lr", "0.5")
    assert_usage_error(code, err)
    assert "--lr" in err
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run), "--recipe", "fp32")
    assert_usage_error(code, err)
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run), "--out", "x")
    assert_usage_error(code, err)
    # the same values, given again, are fine
    code, _, err = run_cli(capsys, "train", "--resume", str(finished_run), "--steps", "12",
                           "--recipe", "amp-fp16", "-q")
    assert code == 0, err


def test_checkpoint_of_another_run_is_refused(tmp_path, capsys, finished_run):
    other = tmp_path / "other"
    assert run_cli(capsys, "train", *TINY, "--seed", "1", "--out", str(other))[0] == 0
    victim = finished_run / "checkpoints" / "step-00000008.npz"
    victim.write_bytes((other / "checkpoints" / "step-00000008.npz").read_bytes())
    code, _, err = run_cli(capsys, "train", "--resume", str(victim))
    assert_usage_error(code, err)


def test_state_is_plain_npz(finished_run):
    with np.load(finished_run / "checkpoints" / "step-00000012.npz", allow_pickle=False) as z:
        assert any(k.startswith("model/") for k in z.files)
        assert any(k.startswith("optimizer/") for k in z.files)


def test_a_run_is_trained_by_one_process_at_a_time(finished_run, capsys):
    fcntl = pytest.importorskip("fcntl")
    with open(finished_run / ".lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another process"
        code, _, err = run_cli(capsys, "train", "--resume", str(finished_run))
    assert_usage_error(code, err)
    assert "another process" in err
    assert run_cli(capsys, "train", "--resume", str(finished_run), "-q")[0] == 0
