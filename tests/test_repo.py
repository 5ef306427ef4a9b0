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
