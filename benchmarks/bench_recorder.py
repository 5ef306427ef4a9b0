"""Cost of recording (simprec.analysis.Recorder) on a training step.

Times the default job of `simprec train` (MLP 64-256-256-10 on the digits, batch 64, amp-fp16:
fp16 autocast, fp32 master weights, dynamic loss scaling, SGD with momentum) with recording off
and on, interleaving the two so that machine noise hits both alike, and prints the median step
times and their ratio. The issue's budget: recording on costs at most 1.5x the step time.

    python benchmarks/bench_recorder.py [--steps 60] [--recipe amp-fp16] [--hidden 256,256]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def build(recipe_name, hidden, seed=0):
    import simprec as sp
    from simprec import amp, optim
    from simprec.data import load_digits
    from simprec.models import MLP
    from simprec.nn import functional as F

    ds = load_digits(seed=seed)
    model = MLP(64, hidden, 10, generator=np.random.default_rng(seed))
    recipe = amp.get_recipe(recipe_name)
    model, opt, _ = recipe.prepare(model, lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))

    def loss_fn(m, b):
        x, y = b
        x = x if isinstance(x, sp.Tensor) else sp.tensor(x)
        return F.cross_entropy(m(x), sp.tensor(y))

    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(8):
        idx = rng.choice(len(ds.x_train), 64, replace=False)
        batches.append((ds.x_train[idx], ds.y_train[idx]))
    return model, opt, recipe, loss_fn, batches


def main(argv=None):
    from simprec.analysis import Recorder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per mode (default 60)")
    ap.add_argument("--recipe", default="amp-fp16")
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    model, opt, recipe, loss_fn, batches = build(args.recipe, hidden)
    rec = Recorder(model)

    def step(i, recording):
        batch = batches[i % len(batches)]
        t, c = time.perf_counter(), time.process_time()
        if recording:
            with rec:
                rec.start_step(i)
                _, facts = recipe.step(model, opt, loss_fn, batch)
                rec.end_step(**facts)
        else:
            recipe.step(model, opt, loss_fn, batch)
        return time.perf_counter() - t, time.process_time() - c

    for i in range(5):  # warm-up (imports, caches, BLAS threads)
        step(i, False)
        step(i, True)
    off, on = [], []
    for i in range(args.steps):
        off.append(step(i, False))
        on.append(step(i, True))
    t_off, t_on = statistics.median(t for t, _ in off), statistics.median(t for t, _ in on)
    c_off, c_on = statistics.median(c for _, c in off), statistics.median(c for _, c in on)
    result = {"recipe": args.recipe, "hidden": list(hidden), "batch": 64, "steps": args.steps,
              "off_ms": 1e3 * t_off, "on_ms": 1e3 * t_on, "ratio": t_on / t_off,
              "off_cpu_ms": 1e3 * c_off, "on_cpu_ms": 1e3 * c_on,
              "cpu_ratio": c_on / c_off if c_off else None,
              "rows_per_step": len(rec.rows()) / max(1, len(rec.steps())),
              "python": platform.python_version(), "numpy": np.__version__,
              "machine": platform.machine()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"MLP 64-{'-'.join(map(str, hidden))}-10, batch 64, {args.recipe}, "
              f"{args.steps} steps each, medians:")
        print(f"  recording off: {result['off_ms']:.2f} ms/step wall, "
              f"{result['off_cpu_ms']:.2f} ms CPU")
        print(f"  recording on:  {result['on_ms']:.2f} ms/step wall, {result['on_cpu_ms']:.2f} "
              "ms CPU"
              f"  ({result['rows_per_step']:.0f} rows/step)")
        print(f"  ratio on/off:  {result['ratio']:.3f} wall, {result['cpu_ratio']:.3f} CPU  "
              "(budget: 1.5)")
    return result


if __name__ == "__main__":
    main()
