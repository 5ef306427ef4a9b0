"""`simprec parity`: the real H200 data (shipped in tests/data/h200) gives 0 differing elements,
out of the box; a difference gives exit 1, missing data exit 2 with one line, and the JSON output
has a fixed structure."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import H200

from simprec import fp16
from simprec.accumulate import tensor_core_matmul
from simprec.cli import main
from simprec.parity import GROUPS

CASE_KEYS = {"group", "name", "source", "compared", "differing", "known", "status"}


def run_cli(capsys, *argv):
    code = main(["parity", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simprec parity: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def h200():
    return H200


# ---------------------------------------------------------------------------- the real data


def test_matmul_and_elementwise_match_the_h200(capsys, h200, tmp_path):
    report = tmp_path / "parity.json"
    code, out, _ = run_cli(capsys, "--data", h200, "--only", "matmul,elementwise",
                           "--json", report)
    assert code == 0, out
    data = json.loads(report.read_text())
    assert data["total"]["differing"] == 0
    assert all(c["differing"] == 0 and c["status"] == "ok" for c in data["cases"])
    # every fp16/bf16 matmul case of matmul_dev, with its three outputs
    matmul = [c for c in data["cases"] if c["group"] == "matmul"]
    assert len(matmul) == 30 and sum(c["compared"] for c in matmul) > 100_000
    assert {c["name"].split()[1] for c in matmul} == {"D32", "D", "linear"}
    assert sum(c["group"] == "elementwise" for c in data["cases"]) >= 27
    # the table: one row per case and a total line with the same counts
    total = out.strip().splitlines()[-1].split()
    assert total[0] == "total" and "bit-identical" in out
    assert f"{data['total']['compared']:,}" in total
    assert sum(line.startswith(("matmul ", "elementwise ")) for line in out.splitlines()) \
        == len(data["cases"])


def test_json_structure(capsys, h200):
    code, out, err = run_cli(capsys, "--data", h200, "--only", "rows", "--json", "-")
    data = json.loads(out)  # with --json -, stdout is the JSON alone (the table goes to stderr)
    assert "total" in err
    assert set(data) == {"simprec", "data", "groups", "strict", "cases", "total", "seconds",
                         "exit_status"}
    assert data["groups"] == ["rows"] and data["exit_status"] == code == 0
    assert set(data["data"]) == {"h200", "found_by", "h200_ops", "reductions"} \
        and data["data"]["found_by"] == "--data"
    assert data["cases"] and all(set(c) == CASE_KEYS for c in data["cases"])
    assert set(data["total"]) == {"cases", "compared", "differing", "failed_cases",
                                  "known_cases"}
    assert data["total"]["cases"] == len(data["cases"])
    assert data["total"]["compared"] == sum(c["compared"] for c in data["cases"])
    assert data["total"]["differing"] == sum(c["differing"] for c in data["cases"])
    assert data["total"]["failed_cases"] == 0


def test_known_differences_pass_unless_strict(capsys, tmp_path, monkeypatch):
    """A case within its documented known count (none today: the fp32 column sums were the last)
    exits 0 and says so; with --strict it exits 1; past its count it exits 1."""
    import simprec.parity as parity

    fake_matmul_capture(tmp_path, flip=True)
    real = parity.run_cases

    def with_known(paths, groups, allowed):
        for case in real(paths, groups):
            flipped = case.name.startswith("0_fp16 D ")
            yield dataclasses.replace(case, known=allowed if flipped else 0)

    for allowed, strict, want in ((1, False, 0), (1, True, 1), (0, False, 1)):
        monkeypatch.setattr(parity, "run_cases", lambda p, g, a=allowed: with_known(p, g, a))
        flags = ("--strict",) if strict else ()
        code, out, _ = run_cli(capsys, "--data", tmp_path, "--only", "matmul", *flags,
                               "--json", "-")
        data = json.loads(out)
        assert code == want, (allowed, strict)
        assert data["total"]["known_cases"] == (1 if allowed and not strict else 0)
        assert [c["status"] for c in data["cases"] if c["differing"]] == (
            ["known"] if allowed else ["differs"])


# ---------------------------------------------------------------------------- a difference


def fake_matmul_capture(folder, flip: bool):
    """A one-case matmul_dev.npz made with simprec itself, one bit of D flipped if `flip`."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 32)).astype(np.float16)
    b = rng.standard_normal((32, 3)).astype(np.float16)
    bias = rng.standard_normal(3).astype(np.float16)
    d = tensor_core_matmul(a, b, arch="sm90", out=fp16).view(np.uint16).copy()
    if flip:
        d[1, 2] ^= 1
    meta = [{"key": "0_fp16", "M": 4, "K": 32, "N": 3, "wide": False, "dtype": "fp16"}]
    np.savez(folder / "matmul_dev.npz", meta=json.dumps(meta),
             **{"0_fp16_A": a.view(np.uint16), "0_fp16_B": b.view(np.uint16),
                "0_fp16_bias": bias.view(np.uint16),
                "0_fp16_D32": tensor_core_matmul(a, b, arch="sm90").view(np.uint32),
                "0_fp16_D": d,
                "0_fp16_linear": tensor_core_matmul(a, b, arch="sm90", out=fp16,
                                                    bias=bias).view(np.uint16)})


@pytest.mark.parametrize("flip", [False, True])
def test_exit_status_says_whether_something_differs(capsys, tmp_path, flip):
    fake_matmul_capture(tmp_path, flip)
    code, out, _ = run_cli(capsys, "--data", tmp_path, "--only", "matmul")
    assert code == (1 if flip else 0)
    rows = {line.split()[1] + " " + line.split()[2]: line.split() for line in out.splitlines()
            if line.startswith("matmul ")}
    assert rows["0_fp16 D"][-2 if flip else -1] == ("1" if flip else "0")
    assert ("DIFFERS" in rows["0_fp16 D"]) == flip
    assert rows["0_fp16 D32"][-1] == rows["0_fp16 linear"][-1] == "0"


# ---------------------------------------------------------------------------- missing data


def test_missing_data_dir_is_one_line_exit_2(capsys, tmp_path):
    code, out, err = run_cli(capsys, "--data", tmp_path / "nowhere")
    assert_one_line_error(code, err, "no H200 data", "nowhere", "--data")
    assert out == ""


def test_missing_capture_file_is_named(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--data", tmp_path, "--only", "trace")
    assert_one_line_error(code, err, "amp_trace_dev.npz not found")


def test_default_data_is_the_checkouts_tests_data(capsys):
    """No --data, no environment: the captures shipped in the checkout, every group found."""
    import simprec.parity as parity

    paths = parity.locate_data(None, GROUPS)
    assert paths.h200 == H200 and paths.how == "the checkout's tests/data/h200"
    assert paths.extra == H200.parent / "h200_ops.npz" and paths.own == H200.parent
    code, out, _ = run_cli(capsys, "--only", "matmul")
    assert code == 0 and f"data: {H200}" in out


def test_a_group_without_its_capture_is_exit_2(capsys, tmp_path, monkeypatch):
    """A checkout that lost its data: exit 2 naming the missing file, never a silent empty group."""
    import simprec.parity as parity

    monkeypatch.setattr(parity, "checkout_root", lambda: tmp_path)
    (tmp_path / "tests" / "data" / "h200").mkdir(parents=True)
    code, _, err = run_cli(capsys, "--only", "matmul")
    assert_one_line_error(code, err, "matmul_dev.npz not found", "tests/data/h200")
    code, _, err = run_cli(capsys, "--only", "reductions")
    assert_one_line_error(code, err, "reduction captures", "not found")
    (tmp_path / "tests" / "data" / "h200" / "elementwise_dev.npz").symlink_to(
        H200 / "elementwise_dev.npz")
    code, _, err = run_cli(capsys, "--only", "elementwise")
    assert_one_line_error(code, err, "h200_ops.npz not found")


def test_packed_capture_reads_back_as_captured(tmp_path):
    """The repository's elementwise_dev.npz is packed (tests/data/h200/pack.py); load_capture
    rebuilds the left-out arrays and refuses one whose digest does not match."""
    import simprec.parity as parity

    ew = parity.load_capture(H200 / "elementwise_dev.npz")
    assert "packing" not in ew and "f32_to_bf16_residual" not in ew
    assert np.array_equal(ew["x_all"], np.arange(65536, dtype=np.uint16))
    assert np.array_equal(ew["xb_all"], ew["x_all"])
    assert ew["f32_to_bf16"].dtype == np.uint16 and ew["f32_to_bf16"].shape == (1_000_000,)
    with np.load(H200 / "elementwise_dev.npz") as npz:
        packed = {k: npz[k] for k in npz.files}
    packed["f32_to_bf16_residual"] = packed["f32_to_bf16_residual"].copy()
    packed["f32_to_bf16_residual"][7] ^= 1
    np.savez(tmp_path / "elementwise_dev.npz", **packed)
    with pytest.raises(parity.MissingData, match="f32_to_bf16.*SHA-256"):
        parity.load_capture(tmp_path / "elementwise_dev.npz")


def test_unreadable_capture_is_one_line_exit_2(capsys, tmp_path):
    (tmp_path / "matmul_dev.npz").write_text("not an npz")
    code, _, err = run_cli(capsys, "--data", tmp_path, "--only", "matmul")
    assert_one_line_error(code, err, "matmul_dev.npz", "not a readable")


def test_unknown_group(capsys):
    code, _, err = run_cli(capsys, "--only", "matmul,bogus")
    assert_one_line_error(code, err, "bogus", ",".join(GROUPS))


def test_top_level_help_lists_parity_and_bench(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("train", "report", "experiment", "parity", "bench"):
        assert f"    {name}" in out, name
