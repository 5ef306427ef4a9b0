"""Measure the numbers the documentation quotes, and write them into it.

The docs mark each measured number: inline as ``<!--n:KEY-->TEXT<!--/n-->`` (invisible when
the markdown is rendered), and a whole block (a fenced code block, or a table) by a line
``<!--n:KEY-->`` just above it. ``docs/numbers.json`` holds the text of every KEY and the
machine it was measured on. So a number in the docs is never typed by hand: it is measured
here, stored in numbers.json, and copied into the docs.

    python scripts/doc_numbers.py              # measure all (about 6 minutes on 2 CPU cores),
                                               # write docs/numbers.json, rewrite the docs
    python scripts/doc_numbers.py --only train,sm90      # measure some groups, keep the others
    python scripts/doc_numbers.py --apply      # rewrite the docs from docs/numbers.json only
    python scripts/doc_numbers.py --check      # exit 1 if a doc differs from numbers.json
    python scripts/doc_numbers.py --measure-only --only gpt     # numbers.json only

Groups: ``train`` (the three runs of the guide's first experiment: fp32, amp-fp16 with the
default options, pure-fp16), ``sm90`` (milliseconds per step of the default run with the sm90
tensor-core model), ``gpt`` (the default ``simprec train --model gpt``), ``parity``
(``simprec parity``'s total line), ``experiments`` (the three experiments: times, result
tables, and their figures copied to docs/figures/). Each command runs in a fresh interpreter
in a scratch folder, as a user would run it. Times are the CPU time of the whole command with
BLAS on one thread (see :func:`simprec`): what an idle machine's clock shows, measurable on a
busy one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUMBERS = REPO / "docs" / "numbers.json"
DOCS = ("README.md", "docs/guide.md", "docs/cli.md", "docs/experiments.md")
GROUPS = ("train", "sm90", "gpt", "parity", "experiments")
EXPERIMENTS = ("underflow", "stagnation", "scaling")

INLINE = re.compile(r"<!--n:([\w.-]+)-->([^\n]*?)<!--/n-->")  # on one line
BLOCK = re.compile(r"^<!--n:([\w.-]+)-->$")


# ---------------------------------------------------------------------------- measuring


def simprec(args: list[str], cwd: Path) -> tuple[float, str]:
    """Run ``python -m simprec ARGS`` in ``cwd``; (CPU seconds, stdout). Fails loudly.

    The time is the command's CPU time (user + system), with BLAS on one thread: on an idle
    machine that is its wall time, and unlike the wall time it does not grow when other work
    shares the machine, so the docs' numbers can be measured on a busy one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO), str(REPO / "backends"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        COLUMNS="100", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "simprec", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"simprec {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done.stdout


def _seconds(s: float) -> str:
    """A wall time as the docs give it: '6 s', '40 s', '2.3 minutes'."""
    return f"{s:.0f} s" if s < 100 else f"{s / 60:.1f} minutes"


def warm_up(tmp: Path, *args: str) -> None:
    """A short run first, not measured: compiled kernels (SIMPREC_FAST) are compiled and cached
    on their first use, a cost paid once per machine, not by every run."""
    simprec(["train", "--steps", "2", "--eval-every", "0", "--checkpoint-every", "0", "--out",
             f"warm-up-{len(list(tmp.glob('warm-up-*')))}", "-q", *args], tmp)


def measure_train(tmp: Path) -> dict:
    warm_up(tmp)
    values, rows = {}, []
    for recipe in ("fp32", "amp-fp16", "pure-fp16"):
        args = ["train"] if recipe == "amp-fp16" else ["train", "--recipe", recipe]
        seconds, out = simprec(args, tmp)  # the default run directory, as in the docs
        run = Path(re.search(r"run directory: (\S+)", out).group(1))
        s = json.loads((tmp / run / "summary.json").read_text())
        values[f"train.{recipe}.seconds"] = seconds
        rows.append(f"{recipe:10} accuracy {s['test_accuracy']:.2%}  test loss "
                    f"{s['test_loss']:.4f}  train loss {s['train_loss']:.5f}  skipped "
                    f"{s['skipped_steps']}  {seconds:.0f} s")
        if recipe == "amp-fp16":
            # the wall-time line as an idle machine shows it (CPU time, see simprec())
            steps = s["steps_done"]
            out = re.sub(r"wall time .*", f"wall time      {seconds:.1f} s  "
                                          f"({steps / seconds:.1f} steps/s)", out)
            values["train.output"] = "$ simprec train\n" + out.rstrip("\n")
            values["train.accuracy"] = f"{100 * s['test_accuracy']:.2f} %"
            values["train.test_loss"] = f"{s['test_loss']:.4f}"
            values["train.final_scale"] = _power_of_two(s["final_scale"])
            values["train.skipped"] = str(s["skipped_steps"])
    values["train.default_seconds"] = _seconds(values.pop("train.amp-fp16.seconds"))
    total = values.pop("train.fp32.seconds") + values.pop("train.pure-fp16.seconds")
    values["train.three_runs_seconds"] = _seconds(total + _parse_s(
        values["train.default_seconds"]))
    values["train.first_table"] = "\n".join(rows)
    return values


def _power_of_two(x: float) -> str:
    import math

    e = math.log2(x)
    return f"2^{e:g}"


def _parse_s(text: str) -> float:
    number, unit = text.split()
    return float(number) * (60 if unit.startswith("minute") else 1)


def measure_sm90(tmp: Path) -> dict:
    """Milliseconds per step of the default run with the sm90 model: the CPU time of a long run
    less that of a short one, over the difference in steps (startup and data loading cancel)."""
    warm_up(tmp, "--accumulate", "sm90")
    times = {}
    for steps in (20, 120):
        times[steps], _ = simprec(["train", "--accumulate", "sm90", "--steps", str(steps),
                                   "--eval-every", "0", "--checkpoint-every", "0", "--out",
                                   f"sm90-{steps}", "-q"], tmp)
    return {"sm90.ms_per_step": f"{1000 * (times[120] - times[20]) / 100:.0f} ms"}


def measure_gpt(tmp: Path) -> dict:
    seconds, _ = simprec(["train", "--model", "gpt", "--out", "gpt", "-q"], tmp)
    s = json.loads((tmp / "gpt" / "summary.json").read_text())
    val = {e["step"]: e["loss"] for e in s["evals"]}
    return {"gpt.seconds": _seconds(seconds), "gpt.val_loss_0": f"{val[0]:.1f}",
            "gpt.val_loss_100": f"{val[100]:.2f}", "gpt.val_loss_300": f"{val[300]:.2f}",
            "gpt.unigram_entropy": f"{s['unigram_entropy']:.2f}",
            "gpt.parameters": f"{round(s['parameters'], -3) // 1000}k"}


def measure_parity(tmp: Path) -> dict:
    """``simprec parity``'s output, shortened: the header, the first case of each group, the
    total line (the checkout's path written as ~/simprec)."""
    seconds, out = simprec(["parity"], tmp)
    return {"parity.output": shorten_parity(out, seconds).replace(str(REPO), "~/simprec"),
            "parity.seconds": _seconds(seconds)}


def shorten_parity(out: str, seconds: float) -> str:
    """The header, the first row of each group, the total line (its time: ``seconds``)."""
    lines = out.rstrip("\n").split("\n")
    rules = [i for i, line in enumerate(lines) if line.startswith("-----")]
    start, end = rules[0] + 1, rules[1] if len(rules) > 1 else len(lines) - 1
    def cpu_time(m):  # the same width, so that the columns stay aligned
        text = f"{m.group(1)}{seconds:.1f} s"
        return text + " " * max(0, len(m.group(0)) - len(text))

    total = [re.sub(r"(\d+ cases, )[\d.]+ s", cpu_time, line) for line in lines[end:]]
    shown, last_group = ["$ simprec parity", *lines[:start]], None
    for line in lines[start:end]:
        group = line.split(" ", 1)[0]
        if group != last_group:
            if last_group is not None:
                shown.append("...")
            shown.append(line)
            last_group = group
    return "\n".join([*shown, "...", *total])


def measure_experiments(tmp: Path) -> dict:
    values = {}
    for name in EXPERIMENTS:
        out = tmp / f"experiment-{name}"
        seconds, _ = simprec(["experiment", name, "--out", str(out)], tmp)
        values[f"experiment.{name}.seconds"] = _seconds(seconds)
        report = (out / "report.md").read_text()
        tables = _tables(report)
        for i, table in enumerate(tables):
            values[f"experiment.{name}.table{i + 1}"] = table
        for png in sorted((out / "figures").glob("*.png")):
            shutil.copyfile(png, REPO / "docs" / "figures" / f"{name}_{png.name}")
    return values


def _tables(markdown: str) -> list[str]:
    """The markdown tables of a report, in order."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    return tables


MEASURE = {"train": measure_train, "sm90": measure_sm90, "gpt": measure_gpt,
           "parity": measure_parity, "experiments": measure_experiments}


def machine() -> str:
    import numpy as np

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, NumPy "
            f"{np.__version__}; {time.strftime('%Y-%m-%d', time.gmtime())}")


# ---------------------------------------------------------------------------- the docs


def render(text: str, values: dict) -> tuple[str, list[str]]:
    """``text`` with every marked number replaced by its value; (new text, unknown keys)."""
    unknown = []

    def inline(m):
        if m.group(1) not in values:
            unknown.append(m.group(1))
            return m.group(0)
        return f"<!--n:{m.group(1)}-->{values[m.group(1)]}<!--/n-->"

    text = INLINE.sub(inline, text)
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        out.append(lines[i])
        m = BLOCK.match(lines[i])
        i += 1
        if not m:
            continue
        key = m.group(1)
        if key not in values:
            unknown.append(key)
            continue
        if i < len(lines) and lines[i].startswith("```"):  # a fenced block: keep the fences
            end = i + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            out += [lines[i], *values[key].split("\n"), lines[end] if end < len(lines) else "```"]
            i = end + 1
        else:  # a table (or a paragraph): up to the next blank line
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            out += values[key].split("\n")
            i = end
    return "\n".join(out), unknown


def load_numbers() -> dict:
    return json.loads(NUMBERS.read_text()) if NUMBERS.exists() else {"machine": {}, "values": {}}


def differences(numbers: dict | None = None) -> list[str]:
    """Where the docs differ from docs/numbers.json (empty: they agree)."""
    numbers = numbers or load_numbers()
    problems = []
    for doc in DOCS:
        text = (REPO / doc).read_text()
        new, unknown = render(text, numbers["values"])
        problems += [f"{doc}: no value for {key!r} in docs/numbers.json" for key in unknown]
        if new != text:
            problems.append(f"{doc}: its numbers differ from docs/numbers.json (run python "
                            "scripts/doc_numbers.py --apply)")
    return problems


def apply(numbers: dict) -> list[str]:
    changed = []
    for doc in DOCS:
        path = REPO / doc
        text = path.read_text()
        new, unknown = render(text, numbers["values"])
        if unknown:
            sys.exit(f"{doc}: no value for {', '.join(unknown)} (measure its group first)")
        if new != text:
            path.write_text(new)
            changed.append(doc)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(GROUPS), help=f"groups: {','.join(GROUPS)}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--apply", action="store_true", help="only rewrite the docs")
    mode.add_argument("--check", action="store_true", help="exit 1 if a doc differs")
    mode.add_argument("--measure-only", action="store_true",
                      help="write docs/numbers.json (and the figures), leave the docs alone")
    args = p.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(line)
        return 1 if problems else 0
    numbers = load_numbers()
    if not args.apply:
        groups = [g.strip() for g in args.only.split(",") if g.strip()]
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            p.error(f"unknown group(s) {', '.join(unknown)}; valid: {','.join(GROUPS)}")
        with tempfile.TemporaryDirectory(prefix="doc_numbers-") as tmp:
            for group in groups:
                print(f"measuring {group} ...", flush=True)
                numbers["values"].update(MEASURE[group](Path(tmp)))
                numbers["machine"][group] = machine()
        NUMBERS.write_text(json.dumps(numbers, indent=2, sort_keys=True) + "\n")
        print(f"wrote {NUMBERS.relative_to(REPO)}")
    if args.measure_only:
        return 0
    for doc in apply(numbers):
        print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
