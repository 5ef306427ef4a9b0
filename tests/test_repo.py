"""Repository rules: the README's set-up commands, CI, and the core's independence from GPU
libraries."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    assert "simprec train" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


def test_ci_runs_the_suite_on_the_specification_too():
    """The compiled fast paths (simprec._fast) are held to the NumPy specification: CI runs the
    whole suite a second time with them off, after the README's command."""
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    readme = ci_lines.index(_readme_commands()[1])
    assert "SIMPREC_FAST=0 python -m pytest -q" in ci_lines[readme + 1:]


def test_core_imports_no_gpu_library():
    code = ("import sys, simprec, simprec.nn, simprec.amp, simprec.optim;"
            "bad = [m for m in ('torch', 'cupy') if m in sys.modules];"
            "print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_source_never_imports_a_gpu_library():
    """Also the lazily run parts (capture tools belong in scripts/, GPU code in backends/)."""
    pattern = re.compile(r"^\s*(import|from)\s+(torch|cupy)\b", re.M)
    offenders = [str(p) for p in (ROOT / "simprec").rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders


def test_no_pickle_loading_in_the_package():
    for path in (ROOT / "simprec").rglob("*.py"):
        text = path.read_text()
        assert "allow_pickle=True" not in text, path
        assert "pickle.load" not in text, path


MAX_TRACKED_BYTES = 32 * 2**20


def _tracked_files() -> list[pathlib.Path]:
    """The files git tracks (a checkout), else every file of the source tree but caches."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".hypothesis", ".pytest_cache", ".ruff_cache", "runs"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_tracked_repository_stays_small():
    """The shipped H200 captures (about 18 MB) included, a clone stays under 32 MiB."""
    files = [p for p in _tracked_files() if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < MAX_TRACKED_BYTES, f"{total / 2**20:.1f} MiB tracked"
    assert any(p.name == "matmul_dev.npz" for p in files)  # the data is counted, not missed


def test_every_capture_the_tests_use_ships_with_the_repository():
    """No test and no `simprec parity` group reads data from outside the checkout."""
    from simprec.parity import GROUPS, locate_data

    tracked = {p.relative_to(ROOT).as_posix() for p in _tracked_files()}
    paths = locate_data(None, GROUPS)
    assert paths.h200 == ROOT / "tests" / "data" / "h200"
    for name in ("matmul_dev.npz", "elementwise_dev.npz", "amp_trace_dev.npz", "capture.py",
                 "pack.py", "README.md"):
        assert f"tests/data/h200/{name}" in tracked, name
    for path in (ROOT / "tests" / "data").glob("h200_*.npz"):  # each beside its capture script
        assert path.relative_to(ROOT).as_posix() in tracked
        assert (path.parent / f"capture_{path.stem}.py").is_file(), path
    sources = [*(ROOT / "simprec").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    old_variable = "SIMPREC_" + "SHARED"  # the environment variable that pointed outside
    assert not [p for p in sources if old_variable in p.read_text()]


SKIP_RULE_TESTS = '''
import sys
import pytest

def test_a_plain_skip_fails():
    pytest.skip("data not found")

@pytest.mark.gpu
def test_a_gpu_test_may_skip():
    pytest.skip("no CUDA GPU")

def test_a_missing_optional_import_may_skip(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    pytest.importorskip("sklearn.datasets")

def test_a_missing_other_import_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn_like", None)
    pytest.importorskip("sklearn_like")

def test_an_xfail_is_not_a_skip():
    pytest.xfail("known")
'''


def _pytest_in(folder: pathlib.Path, *files: str) -> subprocess.CompletedProcess:
    (folder / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "-o",
         "markers=gpu: needs a GPU", *files],
        cwd=folder, capture_output=True, text=True, timeout=120)


def test_conftest_turns_skips_into_failures_except_the_allowed_ones(tmp_path):
    """tests/conftest.py's rule (docs/testing.md): a skip fails the run unless the test is a gpu
    test or its reason is a missing optional import."""
    (tmp_path / "test_rule.py").write_text(SKIP_RULE_TESTS)
    result = _pytest_in(tmp_path, "test_rule.py")
    out = result.stdout
    assert result.returncode == 1, out
    assert re.search(r"\b2 failed, 2 skipped, 1 xfailed\b", out), out
    failed = set(re.findall(r"^FAILED test_rule.py::(\w+) - skip not allowed", out, re.M))
    assert failed == {"test_a_plain_skip_fails", "test_a_missing_other_import_fails"}, out


def test_a_module_skipped_at_collection_fails_the_run(tmp_path):
    (tmp_path / "test_module_skip.py").write_text(
        "import pytest\npytest.skip('shared data not found', allow_module_level=True)\n")
    result = _pytest_in(tmp_path, "test_module_skip.py")
    assert result.returncode != 0 and "skip not allowed: 'shared data not found'" in result.stdout
