"""Bad input and a refusing machine: one line on stderr, exit status 2, no traceback, nothing
left behind that blocks the next try. Each case here once ended in a traceback (exit 1)."""

from __future__ import annotations

import errno
import json
import sys

import pytest

from simprec.cli import main
from simprec.train import checkpoint as checkpoint_module

TINY = ["--model-opt", "hidden=[16]", "--steps", "8", "--batch-size", "16", "--eval-every", "0",
        "--checkpoint-every", "4", "-q"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err) -> str:
    """The single error line of a usage error (exit status 2)."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert ": error: " in lines[0]
    return lines[0]


def test_block_size_longer_than_the_corpus(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--model", "gpt", "--block-size", "100000",
                           "--steps", "2", "--out", out)
    line = one_line_error(code, err)
    assert "--block-size 100000" in line and "at most" in line
    assert not out.exists()


def test_model_option_given_as_text_is_not_read_letter_by_letter(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--model-opt", "hidden=abc", "--steps", "2",
                           "--out", tmp_path / "run")
    line = one_line_error(code, err)
    assert "hidden='abc'" in line and "[256,256]" in line  # the default shows the form
    assert "got 'a'" not in line


def test_unknown_model_option_lists_the_valid_ones(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--model-opt", "hiden=3", "--out", tmp_path / "r")
    line = one_line_error(code, err)
    assert "'hiden'" in line and "hidden" in line.split("options:")[1]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    return run


@pytest.mark.parametrize("key, value", [("model_options", "hello"), ("recipe_options", [1, 2]),
                                        ("model_options", {"hidden": "abc"}),
                                        ("batch_size", 0), ("recipe", 7), ("seed", "x")])
def test_an_edited_config_json_is_named_by_file_and_key(finished_run, tmp_path, capsys, key,
                                                        value):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(finished_run, run)
    config = json.loads((run / "config.json").read_text())
    config[key] = value
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "train", "--resume", run)
    line = one_line_error(code, err)
    assert str(run / "config.json") in line and f'key "{key}"' in line
    assert " --" not in line  # no command-line flag the user never typed


def test_disk_full_during_a_checkpoint(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the step-4 checkpoint: one line that says what to do; the run stays
    resumable and, once there is room, ends as if nothing had happened."""
    real = checkpoint_module.atomic_write_bytes

    def full_disk(path, data, **kwargs):
        if path.name == "step-00000004.npz":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, **kwargs)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", full_disk)
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *TINY, "--out", run)
    line = one_line_error(code, err)
    assert "No space left on device" in line and str(run / "checkpoints" / "step-00000004.npz") \
        in line
    assert f"simprec train --resume {run}" in line and "step 0" in line
    assert not (run / ".lock").exists()
    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", real)
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 8


def test_read_only_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """A write the machine refuses in any command (here: experiment) is one line, exit 2."""
    from simprec.analysis import experiments

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(experiments, "write_json", refuse)
    code, _, err = run_cli(capsys, "experiment", "scaling", "--quick", "--out", tmp_path / "e")
    line = one_line_error(code, err)
    assert "Permission denied" in line and "x.json" in line


def test_negative_experiment_seed_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "experiment"
    code, _, err = run_cli(capsys, "experiment", "scaling", "--quick", "--seed", "-3",
                           "--out", out)
    line = one_line_error(code, err)
    assert "--seed" in line
    assert not out.exists()  # a folder here would block the next, correct, command


def test_missing_gpu_backend_is_one_plain_line(tmp_path, capsys, monkeypatch):
    from simprec import backend

    monkeypatch.delitem(backend._instances, "cupy", raising=False)
    monkeypatch.setitem(sys.modules, "simprec_cupy", None)  # as if it were not installed
    code, _, err = run_cli(capsys, "train", "--backend", "cupy", "--out", tmp_path / "run")
    line = one_line_error(code, err)
    assert line.count("not usable") == 0 and line.count("'cupy'") == 1
    assert "not installed or not importable" in line and "simprec_cupy" in line
    assert "pip install 'simprec[cupy]'" in line


def test_parity_help_describes_every_group(capsys):
    from simprec.parity import GROUPS

    with pytest.raises(SystemExit):
        main(["parity", "--help"])
    text = capsys.readouterr().out
    described = [line.split()[0] for line in text.splitlines()
                 if line.startswith("  ") and not line.startswith("   ") and line.split()]
    for group in GROUPS:
        assert group in described, group
