"""`simprec bench`: help, a missing benchmarks folder (exit 2, one line), the runner on stand-in
scripts (output, failures, the same simprec in the child), and the real rounding benchmark at
its --quick size. The slow benchmarks are not run here."""

from __future__ import annotations

import textwrap

import pytest

import simprec.bench_cli as bench_cli
from simprec.cli import main


def run_cli(capsys, *argv):
    code = main(["bench", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("simprec bench: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_help_lists_the_benchmarks(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--only" in out
    for name in ("round", "matmul", "step", "recorder"):
        assert name in out


def test_no_benchmarks_folder_beside_the_package(capsys, tmp_path, monkeypatch):
    """An installed wheel has no benchmarks/: exit 2 and say why."""
    monkeypatch.setattr(bench_cli, "_package_parent", lambda: tmp_path)
    code, out, err = run_cli(capsys, "--quick")
    assert_one_line_error(code, err, "no benchmarks/ folder", "source checkout", "--dir")
    assert out == ""


def test_missing_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--dir", tmp_path / "nowhere")
    assert_one_line_error(code, err, "nowhere", "no such directory")


def test_missing_script(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--dir", tmp_path, "--only", "matmul")
    assert_one_line_error(code, err, "bench_matmul.py")


def test_unknown_benchmark(capsys):
    code, _, err = run_cli(capsys, "--only", "round,nope")
    assert_one_line_error(code, err, "nope", "round,matmul,step,recorder")


def write_script(folder, name, body):
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))


def test_runner_prints_tables_and_reports_failures(capsys, tmp_path):
    bench = tmp_path / "benchmarks"
    write_script(bench, "bench_round.py", """\
        import sys
        import simprec
        print("args", " ".join(sys.argv[1:]))
        print("| case | ms |")
        print("|---|---:|")
        print("| fp16 |", simprec.__file__, "|")
        """)
    write_script(bench, "bench_recorder.py", """\
        import sys
        print("partial output")
        sys.exit("recorder broke")
        """)
    code, out, _ = run_cli(capsys, "--dir", bench, "--only", "recorder,round", "--quick")
    assert code == 1
    assert out.startswith("machine: ") and "cores" in out.splitlines()[0]
    assert out.index("## round") < out.index("## recorder")  # the order of BENCHMARKS
    assert f"args {' '.join(bench_cli.BENCHMARKS['round'].quick)}" in out
    assert "$ python benchmarks/bench_round.py --n" in out
    assert f"| fp16 | {bench_cli.__file__.replace('bench_cli.py', '__init__.py')} |" in out
    assert "partial output" in out and "(failed, exit status 1: recorder broke)" in out
    assert out.strip().endswith("1 of 2 benchmarks ran; FAILED: recorder")


def test_benchmarks_needing_a_missing_module_are_skipped(capsys, tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks"
    write_script(bench, "bench_step.py", "raise SystemExit('must not run')\n")
    monkeypatch.setitem(bench_cli.BENCHMARKS, "step",
                        bench_cli.BENCHMARKS["step"]._replace(needs=("no_such_module_xyz",)))
    code, out, _ = run_cli(capsys, "--dir", bench, "--only", "step")
    assert code == 0
    assert "skipped: needs no_such_module_xyz" in out and "must not run" not in out


def test_real_round_benchmark_quick(capsys):
    """The real script accepts the --quick options and prints its markdown table (~3 s)."""
    code, out, _ = run_cli(capsys, "--only", "round", "--quick")
    assert code == 0, out
    assert "| case | mode | sp.round ms |" in out and "| fp16 | nearest |" in out
    assert out.strip().endswith("1 of 1 benchmarks ran")
