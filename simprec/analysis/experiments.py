"""`simprec experiment NAME`: small, fixed experiments that show what fp16 does to training.

All three train an MLP (ReLU) on the 8x8 handwritten digits (simprec.data: 1,438 training and
359 test images) with plain SGD (no momentum), through the recipes of `simprec.amp` (the
trainer's), recording every tensor the simulator rounds (simprec.analysis.Recorder). Each arm is a
run directory that `simprec report` reads; the experiment writes its own report.md and figures/
comparing the arms, and experiment.json with the numbers.

- ``underflow`` (Micikevicius et al. 2018, §3.2): the same network and data in fp32, in fp16
  (autocast, fp32 master weights) without loss scaling, and in fp16 with dynamic loss scaling.
  The loss is multiplied by ``LOSS_WEIGHT`` = 2^-16 and the learning rate divided by it. In fp32
  that is the same training run (both factors are powers of two, so every update is the same
  number), but it moves every gradient 16 binades down, to where the activation gradients of
  large networks lie: in the paper's Multibox SSD most of them were below fp16's smallest
  subnormal, 2^-24. A loss that small is what a loss averaged over very many terms, or a small
  loss weight, gives. Without scaling most activation gradients round to zero in fp16; the scaler
  moves them back into range.
- ``stagnation`` (§3.1): pure fp16 (weights stored in fp16 and updated in fp16, Apex O3) against
  fp16 compute with fp32 master weights; same data, same learning rate (a small one, 0.005), no
  loss scaling in either, so they differ only in where the weights live. An update smaller than
  half an fp16 ulp of its weight (about 2^-11 of it) vanishes in fp16; the master copy keeps it.
- ``scaling``: the ``underflow`` network with static loss scales 1, 2^4, ..., 2^16 against
  dynamic scaling.

`run_experiment(name, out_dir, quick=False)`: `quick` is the smaller version the tests run.

`variant` runs the same arms on another backend or network (`simprec experiment NAME --backend
cupy --model gpt --model-opt n_layer=8 ...`): "backend", "model" ("mlp" on the digits or "gpt",
`simprec.models.TinyGPT` on the text corpus of `simprec train --model gpt`), "model_options" (the
MLP's hidden widths, or TinyGPT's arguments with block_size), "steps", "batch_size",
"record_every", "eval_every" and "lr" (the underflow and scaling arms' learning rate before the
loss-weight division, the stagnation arms' learning rate). Without it, the fixed CPU experiments.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import formats
from ..train.checkpoint import atomic_write_text
from . import figures
from .recorder import Recorder, Recording, _jsonable
from .report import (
    gradient_histogram,
    lost_by_param,
    lost_by_param_over_time,
    pct,
    underflow_by_layer,
    write_report,
)

__all__ = ["EXPERIMENTS", "LOSS_WEIGHT", "Arm", "run_experiment", "rewrite_report", "train_arm"]

EXPERIMENTS = ("underflow", "stagnation", "scaling")

# The loss multiplier of the underflow and scaling experiments (see the module docstring).
LOSS_WEIGHT = 2.0 ** -16


@dataclass
class Arm:
    """One training run of an experiment: a recipe of simprec.amp (the trainer's recipes)."""

    slug: str                      # directory name
    label: str                     # legend text
    recipe: str                    # a name of simprec.amp.RECIPES
    lr: float
    options: dict = field(default_factory=dict)   # the recipe's options (init_scale, scale, ...)
    loss_weight: float = 1.0       # the loss is multiplied by this (a power of two)
    momentum: float = 0.0
    schedule: str = "constant"     # "cosine": lr·(1 + cos(pi·step/steps))/2; "step": lr ÷ 10
                                   # after each third of the run (ResNet-style step decay)


@dataclass
class Setup:
    """What every arm of one experiment shares."""

    steps: int
    hidden: tuple = (128, 128)
    batch_size: int = 64
    eval_every: int = 100
    record_every: int = 1
    seed: int = 0
    notes: dict = field(default_factory=dict)
    backend: str = "numpy"
    model: str = "mlp"             # "mlp" (hidden) on the digits, or "gpt" on the text corpus
    model_options: dict = field(default_factory=dict)   # the GPT's (TinyGPT's arguments)


# The GPT's options where the variant names none (TinyGPT's defaults, a short block)
GPT_DEFAULTS = {"block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 64}
VARIANT_KEYS = ("backend", "model", "model_options", "steps", "batch_size", "record_every",
                "eval_every", "lr")


# ------------------------------------------------------------------------------ training

def _batches(x, y, batch_size, seed):
    from ..data import BatchIterator

    it = BatchIterator((x, y), batch_size, seed=seed, drop_last=True)
    while True:
        yield it.next_batch()


def _loss_fn(weight, lm: bool = False):
    from ..nn import functional as F
    from ..tensor import Tensor

    def loss_fn(model, batch):
        x, y = batch
        x = x if isinstance(x, Tensor) else Tensor._from_data(x)
        y = y if isinstance(y, Tensor) else Tensor._from_data(y)
        logits = model(x)
        if lm:  # next-token cross-entropy over every position
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        loss = F.cross_entropy(logits, y)
        return loss * weight if weight != 1.0 else loss

    return loss_fn


def _evaluate(model, recipe, task):
    """Test accuracy (the GPT's: of the next token) and mean loss, in the recipe's forward
    precision, no graph."""
    import simprec as sp

    from ..nn import functional as F
    from ..tensor import Tensor

    x, y = task.on_backend(task.test)
    with sp.no_grad(), recipe.forward_context():
        xb, _ = recipe.cast_batch((x, y))
        xb = xb if isinstance(xb, Tensor) else Tensor._from_data(xb)
        yt = y if isinstance(y, Tensor) else Tensor._from_data(y)
        logits = model(xb)
        if task.lm:
            logits, yt = logits.reshape(-1, logits.shape[-1]), yt.reshape(-1)
        loss = F.cross_entropy(logits, yt)
    pred = np.argmax(logits.numpy(), axis=-1)
    return float((pred == np.asarray(task.test[1]).reshape(-1)).mean()), float(loss.item())


def _lr_at(arm: Arm, step: int, steps: int) -> float:
    if arm.schedule == "cosine":
        return arm.lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    if arm.schedule == "step":
        return arm.lr * 0.1 ** min(2, (3 * step) // steps)
    return arm.lr


class _Task:
    """The network and data of an experiment: the MLP on the digits, or a GPT on the text
    corpus; batches as tensors on the setup's backend."""

    def __init__(self, setup: Setup):
        from ..data import load_digits, load_text
        from ..models import MLP, TinyGPT

        self.setup, self.lm = setup, setup.model == "gpt"
        gen = np.random.default_rng(setup.seed)
        if self.lm:
            opts = {**GPT_DEFAULTS, **setup.model_options}
            self.data = load_text(block_size=int(opts["block_size"]), seed=setup.seed)
            # vocab_size: the corpus's, unless asked larger (issue 12's GPT has 256)
            vocab = max(int(opts.pop("vocab_size", 0)), self.data.tokenizer.vocab_size)
            self.model = TinyGPT(vocab, **opts, generator=gen)
            sampler = self.data.sampler(setup.batch_size)
            self._next = sampler.next_batch
            x_val, y_val = next(iter(self.data.eval_batches(setup.batch_size)))
            self.test = (x_val, y_val)
        else:
            self.data = load_digits(seed=setup.seed)
            self.model = MLP(64, tuple(setup.hidden), 10, generator=gen)
            batches = _batches(self.data.x_train, self.data.y_train, setup.batch_size,
                               setup.seed)
            self._next = lambda: next(batches)
            self.test = (self.data.x_test, self.data.y_test)
        if setup.backend != "numpy":
            self.model.to(setup.backend)

    def on_backend(self, batch):
        """Host arrays as tensors on the backend (on numpy: the arrays, as the CPU experiments
        have always passed them)."""
        from ..tensor import tensor

        if self.setup.backend == "numpy":
            return batch
        return tuple(tensor(a, backend=self.setup.backend) for a in batch)

    def next_batch(self):
        return self.on_backend(self._next())


def train_arm(arm: Arm, setup: Setup, run_dir, *, progress=None) -> dict:
    """Train one arm, recording every step; write RUN (config.json, metrics.jsonl,
    summary.json, analysis/, report.md), the layout of `simprec train`'s run directories."""
    from .. import amp, optim

    os.makedirs(run_dir, exist_ok=True)
    task = _Task(setup)
    model = task.model
    recipe = amp.get_recipe(arm.recipe, **arm.options)
    model, opt, scaler = recipe.prepare(
        model, lambda params: optim.SGD(params, lr=arm.lr, momentum=arm.momentum))
    weight = float(arm.loss_weight)
    loss_fn = _loss_fn(weight, task.lm)
    model_options = ({**GPT_DEFAULTS, **setup.model_options} if task.lm
                     else {"hidden": list(setup.hidden)})
    config = {"experiment_arm": arm.slug, "label": arm.label, "model": setup.model,
              "model_options": model_options, "data": "text" if task.lm else "digits",
              "backend": setup.backend, "recipe": arm.recipe,
              "recipe_options": dict(arm.options), "optimizer": "sgd",
              "lr": arm.lr, "schedule": arm.schedule, "momentum": arm.momentum,
              "batch_size": setup.batch_size,
              "steps": setup.steps, "seed": setup.seed, "loss_weight": weight,
              "record": True, "record_every": setup.record_every}
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(_jsonable(config), f, indent=2)
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "w")
    t0 = time.perf_counter()
    evals = []
    with Recorder(model, every=setup.record_every) as rec:
        for step in range(setup.steps):
            batch = task.next_batch()
            if arm.schedule != "constant":
                for group in opt.param_groups:
                    group["lr"] = _lr_at(arm, step, setup.steps)
            rec.start_step(step)
            _, facts = recipe.step(model, opt, loss_fn, batch)
            loss_value = facts["loss"] / weight  # the cross-entropy itself (weight: a power of 2)
            scale = facts.get("scale") if scaler is not None else None
            rec.end_step(loss=loss_value, scale=scale, skipped=bool(facts.get("skipped")))
            metrics.write(json.dumps(_jsonable({"kind": "train", "step": step, "loss": loss_value,
                                                "scale": scale,
                                                "skipped": bool(facts.get("skipped"))}),
                                     allow_nan=False) + "\n")
            if (step + 1) % setup.eval_every == 0 or step + 1 == setup.steps:
                with rec.paused():
                    acc, test_loss = _evaluate(model, recipe, task)
                evals.append((step, acc, test_loss))
                metrics.write(json.dumps(_jsonable({"kind": "eval", "step": step, "accuracy": acc,
                                                    "loss": test_loss}), allow_nan=False) + "\n")
                if progress:
                    progress(f"  {arm.slug}: step {step + 1}/{setup.steps}  loss {loss_value:.4g}  "
                             f"test accuracy {100 * acc:.1f}%"
                             + (f"  scale 2^{math.log2(scale):g}" if scale else ""))
    metrics.close()
    seconds = time.perf_counter() - t0
    rec.save(run_dir)
    summary = _arm_summary(rec, evals, seconds)
    write_json(os.path.join(run_dir, "summary.json"), summary)  # last, atomically: "finished"
    return summary


def _arm_summary(rec: Recording, evals, seconds) -> dict:
    steps = rec.steps()
    ag = rec.summary("activation_grad", fmt="fp16")
    wg = rec.summary("weight_grad", fmt="fp16")
    upd = rec.summary("update")
    losses = [s["loss"] for s in steps if isinstance(s.get("loss"), float)]
    k = max(1, len(losses) // 10)
    scales = [s.get("scale") for s in steps if isinstance(s.get("scale"), float)]
    return {
        "test_accuracy": evals[-1][1] if evals else None,
        "test_loss": evals[-1][2] if evals else None,
        "best_test_accuracy": max(e[1] for e in evals) if evals else None,
        "train_loss_last": float(np.mean(losses[-k:])) if losses else None,
        "steps": len(steps),
        "skipped_steps": sum(1 for s in steps if s.get("skipped")),
        "activation_grad_fp16_values": ag["nonzero_wide"],
        "activation_grad_underflow_share": ag["underflow_share"] if ag["nonzero_wide"] else None,
        "weight_grad_fp16_underflow_share": wg["underflow_share"] if wg["nonzero_wide"] else None,
        "lost_update_share": upd["lost_share"] if upd["nonzero_update"] else None,
        "lost_update_share_per_param": dict(lost_by_param(rec)),
        "final_scale": scales[-1] if scales else None,
        "seconds": seconds,
    }


# ------------------------------------------------------------------------------ the experiments

def _underflow_arms(setup: Setup) -> list[Arm]:
    lr = setup.notes.get("lr", 0.1) / LOSS_WEIGHT
    dyn = {"init_scale": 2.0 ** 16, "growth_interval": setup.notes["growth_interval"]}
    return [
        Arm("fp32", "fp32", "fp32", lr, loss_weight=LOSS_WEIGHT),
        Arm("fp16-no-scaling", "fp16, no loss scaling", "amp-fp16-noscale", lr,
            loss_weight=LOSS_WEIGHT),
        Arm("fp16-dynamic", "fp16, dynamic loss scaling", "amp-fp16", lr, dyn,
            loss_weight=LOSS_WEIGHT),
    ]


def _stagnation_arms(setup: Setup) -> list[Arm]:
    lr = setup.notes["lr"]
    # O2 with a scale of 1 that never grows: no loss scaling, as in the pure fp16 arm, so the two
    # arms differ only in the fp32 master copy of the weights
    return [
        Arm("fp16-master", "fp16 + fp32 master weights (O2)", "o2-fp16", lr,
            {"init_scale": 1.0, "growth_interval": 10 ** 9}),
        Arm("pure-fp16", "pure fp16 (O3: fp16 weights and updates)", "pure-fp16", lr),
    ]


def _scaling_arms(setup: Setup) -> list[Arm]:
    lr = setup.notes.get("lr", 0.1) / LOSS_WEIGHT
    arms = [Arm(f"static-2e{k}", f"static 2^{k}", "amp-fp16-static", lr, {"scale": 2.0 ** k},
                loss_weight=LOSS_WEIGHT) for k in setup.notes["static_exponents"]]
    arms.append(Arm("dynamic", "dynamic", "amp-fp16", lr,
                    {"init_scale": 2.0 ** 16, "growth_interval": setup.notes["growth_interval"]},
                    loss_weight=LOSS_WEIGHT))
    return arms


def _setup(name: str, quick: bool, seed: int) -> Setup:
    # growth_interval 20 instead of torch's 2000: these runs are a few hundred steps long, and
    # with 2000 the scale would never move; torch's interval is sized for runs of 10^5 steps.
    if name == "underflow":
        if quick:
            return Setup(steps=150, hidden=(32, 32), eval_every=75, seed=seed,
                         notes={"growth_interval": 20})
        return Setup(steps=800, hidden=(64, 64), eval_every=50, seed=seed,
                     notes={"growth_interval": 20})
    if name == "stagnation":
        if quick:
            return Setup(steps=300, hidden=(32, 32), eval_every=150, seed=seed, notes={"lr": 0.01})
        return Setup(steps=2500, hidden=(64, 64), eval_every=250, seed=seed, notes={"lr": 0.005})
    if name == "scaling":
        if quick:
            return Setup(steps=100, hidden=(32, 32), eval_every=50, seed=seed,
                         notes={"static_exponents": [0, 16], "growth_interval": 20})
        return Setup(steps=600, hidden=(64, 64), eval_every=100, seed=seed,
                     notes={"static_exponents": [0, 4, 8, 12, 16, 40], "growth_interval": 20})
    raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")


def check_variant(variant: dict | None) -> dict:
    """The variant with its keys checked (ValueError names a bad one); {} for None."""
    variant = {k: v for k, v in (variant or {}).items() if v not in (None, {})}
    bad = sorted(set(variant) - set(VARIANT_KEYS))
    if bad:
        raise ValueError(f"unknown experiment option(s) {', '.join(bad)}; valid: "
                         f"{', '.join(VARIANT_KEYS)}")
    if variant.get("model", "mlp") not in ("mlp", "gpt"):
        raise ValueError(f"--model must be mlp or gpt, got {variant['model']!r}")
    for key in ("steps", "batch_size", "record_every", "eval_every"):
        v = variant.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--{key.replace('_', '-')} must be an integer >= 1, got {v!r}")
    lr = variant.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"--lr must be a number > 0, got {lr!r}")
    opts = variant.get("model_options") or {}
    if variant.get("model", "mlp") == "mlp" and set(opts) - {"hidden"}:
        raise ValueError(f"the MLP takes --model-opt hidden=[...] only, got {sorted(opts)}")
    return variant


def _with_variant(setup: Setup, variant: dict) -> Setup:
    """`setup` with the variant's choices (see the module docstring)."""
    from dataclasses import replace

    changes = {k: variant[k] for k in ("backend", "model", "steps", "batch_size",
                                       "record_every", "eval_every") if k in variant}
    opts = dict(variant.get("model_options") or {})
    if "hidden" in opts:
        changes["hidden"] = tuple(opts.pop("hidden"))
    if opts:
        changes["model_options"] = opts
    if "lr" in variant:
        changes["notes"] = {**setup.notes, "lr": float(variant["lr"])}
    if "steps" in variant and "eval_every" not in variant:
        changes["eval_every"] = max(1, min(setup.eval_every, variant["steps"]))
    return replace(setup, **changes)


_ARMS = {"underflow": _underflow_arms, "stagnation": _stagnation_arms, "scaling": _scaling_arms}


PLAN = ".experiment-plan.json"  # in OUT while the experiment runs: what it is running


def experiment_command(name: str, quick: bool = False, seed: int = 0,
                       variant: dict | None = None) -> str:
    """The command line that runs (or continues) experiment `name`."""
    flags = ""
    for key, value in (variant or {}).items():
        if key == "model_options":
            flags += "".join(f" --model-opt {k}={json.dumps(v, separators=(',', ':'))}"
                             for k, v in value.items())
        else:
            flags += f" --{key.replace('_', '-')} {value}"
    return (f"simprec experiment {name}" + (" --quick" if quick else "")
            + (f" --seed {seed}" if seed else "") + flags)


def check_out_dir(out_dir, name: str, *, quick: bool = False, seed: int = 0,
                  variant: dict | None = None) -> str:
    """What `run_experiment` would do in `out_dir`: "new" (absent or empty) or "continue" (an
    interrupted run of the same experiment, the same --quick and --seed). Anything else raises
    ValueError with a one-line reason: a finished experiment, another experiment's unfinished
    run, or a folder that is not an experiment."""
    out_dir = os.fspath(out_dir)
    if not os.path.exists(out_dir):
        return "new"
    if not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} exists and is not a directory")
    entries = os.listdir(out_dir)
    if not entries:
        return "new"
    plan_path = os.path.join(out_dir, PLAN)
    if os.path.exists(plan_path):
        try:
            with open(plan_path) as f:
                plan = json.load(f)
            theirs = experiment_command(plan["name"], bool(plan["quick"]), int(plan["seed"]),
                                        plan.get("variant"))
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"--out {out_dir} holds an unreadable {PLAN}; choose another --out "
                             "or remove the folder") from None
        if theirs != experiment_command(name, quick, seed, variant):
            raise ValueError(f"--out {out_dir} holds an unfinished run of '{theirs}'; run that "
                             "command to continue it, or choose another --out")
        return "continue"
    if os.path.exists(os.path.join(out_dir, "experiment.json")):
        raise ValueError(f"--out {out_dir} holds a finished experiment (its report: "
                         f"{os.path.join(out_dir, 'report.md')}); choose another --out, or "
                         "remove the folder to run it again")
    raise ValueError(f"--out {out_dir} already exists, is not empty and is not an experiment; "
                     "choose another --out")


def write_json(path, obj) -> None:
    """Write `obj` as JSON atomically: a reader sees the whole file or none."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2))


def _finished_arm(run_dir, arm: Arm, setup: Setup) -> dict | None:
    """The summary of an arm that an interrupted run of the same experiment finished (its
    summary.json is written last and atomically), else None."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    same = (config.get("experiment_arm") == arm.slug and config.get("steps") == setup.steps
            and config.get("seed") == setup.seed
            and config.get("model", "mlp") == setup.model
            and config.get("backend", "numpy") == setup.backend
            and config.get("batch_size") == setup.batch_size
            and config.get("model_options") == (
                {**GPT_DEFAULTS, **setup.model_options} if setup.model == "gpt"
                else {"hidden": list(setup.hidden)}))
    return summary if same and isinstance(summary, dict) else None


def run_experiment(name: str, out_dir=None, *, quick: bool = False, seed: int = 0, progress=None,
                   figures_on: bool | None = None, variant: dict | None = None) -> dict:
    """Run experiment `name` into `out_dir` (default runs/experiment-NAME); returns its results
    (also written to OUT/experiment.json) with "report": the path of OUT/report.md.

    An interrupted run (Ctrl-C, a kill, an error) continues where it stopped when it is run
    again with the same arguments: the arms it finished are kept, the others are trained anew
    (every arm is deterministic, so the result is that of an uninterrupted run).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")
    variant = check_variant(variant)
    out_dir = os.fspath(out_dir or os.path.join("runs", f"experiment-{name}"))
    state = check_out_dir(out_dir, name, quick=quick, seed=seed, variant=variant)
    say = (print if progress is True else progress) or (lambda *_: None)
    setup = _with_variant(_setup(name, quick, seed), variant)
    arms = _ARMS[name](setup)
    command = experiment_command(name, quick, seed, variant)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, PLAN), {"name": name, "quick": quick, "seed": seed,
                                             "variant": variant, "command": command})
    t0 = time.perf_counter()
    results = {}
    for arm in arms:
        run_dir = os.path.join(out_dir, arm.slug)
        done = _finished_arm(run_dir, arm, setup) if state == "continue" else None
        if done is not None:
            say(f"{name}: {arm.label} (finished before, kept)")
        else:
            say(f"{name}: {arm.label}")
            shutil.rmtree(run_dir, ignore_errors=True)  # what an interrupted arm left
            done = train_arm(arm, setup, run_dir, progress=say)
        results[arm.slug] = {"arm": asdict(arm), "summary": done}
    info = {"name": name, "quick": quick, "setup": asdict(setup), "command": command,
            "seconds": time.perf_counter() - t0, "loss_weight": LOSS_WEIGHT,
            "arms": [a.slug for a in arms], "results": results}
    write_json(os.path.join(out_dir, "experiment.json"), info)
    info["report"] = rewrite_report(out_dir, figures_on=figures_on)
    os.remove(os.path.join(out_dir, PLAN))
    return info


def finished_arms(out_dir) -> tuple[int, int]:
    """(arms finished, arms in all) of the experiment in `out_dir` (0, 0 if there is none)."""
    try:
        with open(os.path.join(out_dir, PLAN)) as f:
            plan = json.load(f)
        setup = _with_variant(_setup(plan["name"], bool(plan["quick"]), int(plan["seed"])),
                              check_variant(plan.get("variant")))
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0
    arms = _ARMS[plan["name"]](setup)
    done = sum(_finished_arm(os.path.join(out_dir, a.slug), a, setup) is not None for a in arms)
    return done, len(arms)


# ------------------------------------------------------------------------------ reports

def rewrite_report(out_dir, *, figures_on: bool | None = None) -> str:
    """(Re)write OUT/report.md and OUT/figures/ from OUT/experiment.json and the arms' runs;
    also the report of every arm."""
    with open(os.path.join(out_dir, "experiment.json")) as f:
        info = json.load(f)
    plots = figures.have_matplotlib() if figures_on is None else figures_on
    for slug in info["arms"]:
        write_report(os.path.join(out_dir, slug), figures_on=plots)
    recs = {slug: Recording.load(os.path.join(out_dir, slug)) for slug in info["arms"]}
    writer = {"underflow": _report_underflow, "stagnation": _report_stagnation,
              "scaling": _report_scaling}[info["name"]]
    fig_dir = os.path.join(out_dir, "figures")
    made = []

    def figure(fname, fn, *args, **kwargs):
        if not plots:
            return None
        os.makedirs(fig_dir, exist_ok=True)
        fn(os.path.join(fig_dir, fname), *args, **kwargs)
        made.append(fname)
        return f"figures/{fname}"

    lines = writer(info, recs, figure, out_dir)
    if not plots:
        lines[1:1] = ["", "> **Figures were not drawn**: matplotlib is not installed. Install it "
                      f"with `{figures.INSTALL_HINT}` and run `simprec report {out_dir}`.", ""]
    lines += ["", "---", f"Made by `{info['command']}` in {info['seconds']:.0f} s. Each arm is "
                         "a run "
              "directory with its own report (`simprec report "
              "" + os.path.join(out_dir, "ARM") + "`): "
              + ", ".join(f"[{s}]({s}/report.md)" for s in info["arms"]) + ".", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _label(info, slug):
    return info["results"][slug]["arm"]["label"]


def _curves(out_dir, slugs, info):
    from .report import read_run

    return {_label(info, s): read_run(os.path.join(out_dir, s)).loss_series() for s in slugs}


def _acc(summary):
    a = summary.get("test_accuracy")
    return "n/a" if a is None else f"{100 * a:.1f}%"


def _setup_text(info) -> str:
    s = info["setup"]
    if s.get("model", "mlp") == "gpt":
        o = {**GPT_DEFAULTS, **s["model_options"]}
        net = (f"GPT ({o['n_layer']} blocks, width {o['n_embd']}, {o['n_head']} heads, context "
               f"{o['block_size']}) on the text corpus of `simprec train --model gpt` (batch "
               f"{s['batch_size']} x {o['block_size']} tokens; test: next-token accuracy on the "
               f"first {s['batch_size']} validation windows), SGD")
    else:
        net = (f"MLP 64-{'-'.join(str(h) for h in s['hidden'])}-10 (ReLU) on the 8x8 digits "
               f"(1,438 training / 359 test images), SGD, batch {s['batch_size']}")
    where = f" on `{s['backend']}`" if s.get("backend", "numpy") != "numpy" else ""
    return (f"{net}, {s['steps']} steps, seed {s['seed']}{where}; every rounding recorded"
            + (f" on every {s['record_every']}th step" if s["record_every"] > 1 else "") + ".")


def _report_underflow(info, recs, figure, out_dir) -> list[str]:
    res = {k: v["summary"] for k, v in info["results"].items()}
    fp16 = formats.fp16
    w = info["loss_weight"]
    lines = ["# Experiment: activation-gradient underflow and loss scaling", "",
             _setup_text(info), "",
             f"**Why the loss is small.** The cross-entropy is multiplied by 2^{math.log2(w):g} "
             "and "
             f"the learning rate divided by it (lr = 0.1 × 2^{-math.log2(w):g}). In fp32 this is "
             "the same training run as plain cross-entropy with lr 0.1: both factors are powers of "
             "two, so every gradient is exactly 2^"
             f"{math.log2(w):g} times the plain one and every update the same number. What changes "
             f"is where the gradients lie: {-math.log2(w):g} binades lower, where the activation "
             "gradients of large networks lie (Micikevicius et al., 2018, found most activation "
             "gradients of their Multibox SSD below fp16's smallest subnormal, 2^-24; 67% became "
             "zero). A loss this small is what a loss averaged over very many terms, or a small "
             "weight on one loss among several, produces. The digits network itself is too small "
             "and shallow to push its gradients that low.", "",
             "**Arms.** fp32: the `fp32` recipe. fp16: the `amp-fp16-noscale` recipe (autocast: "
             "fp16 matmuls, fp32 master weights, no loss scaling) and the `amp-fp16` recipe "
             "(the same with torch's GradScaler: initial scale 2^16, ×2 after "
             f"{info['setup']['notes']['growth_interval']} steps without inf/NaN, ×½ and a skipped "
             "step on inf/NaN; the growth interval is 20 instead of torch's 2000 because this run "
             "is a few hundred steps long). Underflow share: activation-gradient values that were "
             "nonzero in fp32 and became zero when rounded to fp16, over all steps.", "",
             "| arm | activation-gradient underflow | weight-gradient underflow (fp16) | test "
             "accuracy "
             "| final train loss | skipped steps |", "|---|---:|---:|---:|---:|---:|"]
    for slug in info["arms"]:
        s = res[slug]
        lines.append(f"| {_label(info, slug)} | {pct(s['activation_grad_underflow_share'])} | "
                     f"{pct(s['weight_grad_fp16_underflow_share'])} | {_acc(s)} | "
                     f"{s['train_loss_last']:.4g} | {s['skipped_steps']} |")
    lines.append("")
    hists = {}
    for slug in info["arms"]:
        if slug == "fp32":
            h = gradient_histogram(recs[slug], formats.fp32)
            label = "fp32 (the values fp16 would have to hold)"
        else:
            h = gradient_histogram(recs[slug], fp16)
            label = _label(info, slug) + (" (values × scale)" if "dynamic" in slug else "")
        if h.sum():
            hists[label] = h
    ref = figure("gradient_exponents.png", figures.exponent_histogram, hists, fp16,
                 title="Activation gradients before rounding to fp16, all steps")
    if ref:
        lines += [f"![activation gradient exponents]({ref})", "",
                  "The histogram is of the fp32 values each backward op computed, before their "
                  "rounding to fp16: values in the red range become zero, in the orange range they "
                  "keep fewer significant bits. Dynamic scaling multiplies the loss, and so every "
                  "gradient, by the scale, moving the whole distribution right into fp16's "
                  "range.", ""]
    ref = figure("loss.png", figures.loss_curves, _curves(out_dir, info["arms"], info),
                 title="Training loss (unweighted cross-entropy)", unit="nats")
    if ref:
        lines += [f"![loss curves]({ref})", ""]
    nos = [s for s in info["arms"] if "no-scaling" in s]
    if nos:
        layers = underflow_by_layer(recs[nos[0]], fp16)
        ref = figure("underflow_per_layer.png", figures.underflow_per_layer, layers,
                     title="Activation-gradient underflow per layer, fp16 without loss scaling")
        if ref:
            lines += [f"![underflow per layer]({ref})", "",
                      "Layer names are the MLP's (a Sequential): 0, 2 and 4 are its Linear "
                      "layers, 1 "
                      "and 3 its ReLUs; \"outside the model\" is the loss, whose gradient with "
                      "respect to the fp16 logits is rounded to fp16 there. A layer's row counts "
                      "the gradients its backward ops rounded: layer 4's are those of its input "
                      "(the output of ReLU 3), and so on down the network.", ""]
    a32, anos, adyn = (res.get("fp32", {}), res.get("fp16-no-scaling", {}),
                       res.get("fp16-dynamic", {}))
    if a32 and anos and adyn and a32.get("test_accuracy") is not None:
        lines += [f"**Result.** Without loss scaling "
                  f"{pct(anos['activation_grad_underflow_share'])} of "
                  f"the activation-gradient values were lost to underflow and the test accuracy "
                  f"was {_acc(anos)}, against {_acc(a32)} in fp32 (a gap of "
                  f"{100 * (a32['test_accuracy'] - anos['test_accuracy']):.1f} points). Dynamic "
                  "loss "
                  f"scaling lost {pct(adyn['activation_grad_underflow_share'])} and reached "
                  f"{_acc(adyn)}.", ""]
    return lines


def _report_stagnation(info, recs, figure, out_dir) -> list[str]:
    res = {k: v["summary"] for k, v in info["results"].items()}
    lr = info["setup"]["notes"]["lr"]
    lines = ["# Experiment: weight-update stagnation without fp32 master weights", "",
             _setup_text(info), "",
             f"Learning rate {lr:g} (constant, no momentum), no loss scaling. Both arms keep the "
             "model in fp16 and run every op in fp16 (forward, loss, backward); they differ only "
             "in where the update is applied. *Pure fp16 (O3)*, the `pure-fp16` recipe: the fp16 "
             "parameters are updated in place, each new value rounded into fp16. *fp16 + fp32 "
             "master weights (O2)*, the `o2-fp16` recipe with its loss scale held at 1: the "
             "optimizer updates fp32 copies of the parameters and rounds them into the model "
             "after each step. Micikevicius et al. (2018, §3.1): an update smaller than 2^-11 of "
             "its weight can vanish in fp16 (fp16 keeps 10 fraction bits; an update below half a "
             "unit in the last place rounds away), while the fp32 master copy accumulates it. "
             "The learning rate is small, as late in a long run or when fine-tuning, so that "
             "most updates are that small. A lost update: an element whose nonzero update left "
             "the stored weight unchanged (for O2, the fp32 master).", "",
             "| arm | lost updates | test accuracy | final train loss |", "|---|---:|---:|---:|"]
    for slug in info["arms"]:
        s = res[slug]
        lines.append(f"| {_label(info, slug)} | {pct(s['lost_update_share'])} | {_acc(s)} | "
                     f"{s['train_loss_last']:.4g} |")
    lines.append("")
    groups = {_label(info, s): res[s]["lost_update_share_per_param"] for s in info["arms"]
              if s != "fp32"}
    ref = figure("lost_updates.png", figures.lost_updates, groups,
                 title="Lost updates per parameter (whole run)",
                 threshold_note="Lost: a nonzero update that left the stored weight unchanged.")
    if ref:
        lines += [f"![lost updates]({ref})", ""]
    lines += ["| parameter | " + " | ".join(groups) + " |", "|---|" + "---:|" * len(groups)]
    params = list(next(iter(groups.values())).keys()) if groups else []
    for p in params:
        lines.append(f"| {p} | " + " | ".join(pct(g.get(p)) for g in groups.values()) + " |")
    lines.append("")
    ref = figure("loss.png", figures.loss_curves, _curves(out_dir, info["arms"], info),
                 title="Training loss", unit="nats")
    if ref:
        lines += [f"![loss curves]({ref})", ""]
    if "pure-fp16" in recs:
        ratio = recs["pure-fp16"].histogram("update")
        ref = figure("update_ratio.png", figures.exponent_histogram,
                     {"pure fp16: |update| / |weight|": ratio}, None,
                     title="Size of each update relative to its weight (pure fp16 arm, all steps)",
                     xlabel="binary exponent of |update| / |weight|, floor(log2)",
                     spans=[(None, -13, "#d62728", "lost\n(< 2^-12)"),
                            (-12, -12, "#ff7f0e", "lost or\nkept"),
                            (-11, None, "#2ca02c", "kept (≥ 2^-11 of the weight)")],
                     xrange=(-34, 4))
        if ref:
            lines += [f"![update to weight ratio]({ref})", "",
                      "An fp16 weight w with 2^e ≤ |w| < 2^(e+1) has neighbours 2^(e-10) away; an "
                      "update smaller than half that, 2^(e-11), rounds back to w. Relative to |w| "
                      "that is below 2^-12 for every w, and below 2^-11 for some.", ""]
        overtime = lost_by_param_over_time(recs["pure-fp16"])
        ref = figure("lost_updates_over_time.png", figures.underflow_per_layer, overtime,
                     title="Lost updates per parameter over time (pure fp16)",
                     ylabel="nonzero updates that left the weight unchanged (%)",
                     legend_title="parameter")
        if ref:
            lines += [f"![lost updates over time]({ref})", ""]
    m, p = res.get("fp16-master", {}), res.get("pure-fp16", {})
    if m and p:
        lines += [f"**Result.** Pure fp16 lost {pct(p['lost_update_share'])} of its weight updates "
                  f"and reached {_acc(p)} test accuracy (train loss "
                  f"{p['train_loss_last']:.3g}); with "
                  f"fp32 master weights {pct(m['lost_update_share'])} were lost and it reached "
                  f"{_acc(m)} (train loss {m['train_loss_last']:.3g}).", ""]
    return lines


def _report_scaling(info, recs, figure, out_dir) -> list[str]:
    res = {k: v["summary"] for k, v in info["results"].items()}
    w = info["loss_weight"]
    gi = info["setup"]["notes"]["growth_interval"]
    lines = ["# Experiment: static loss scales against dynamic loss scaling", "",
             _setup_text(info), "",
             f"The network and loss of the underflow experiment (loss × 2^{math.log2(w):g}, lr "
             "0.1 × "
             f"2^{-math.log2(w):g}, fp16 autocast with fp32 master weights). Static: the "
             "`amp-fp16-static` recipe, the loss multiplied by a fixed scale and steps with "
             "inf/NaN "
             "gradients skipped (`amp.StaticLossScaler`). Dynamic: the `amp-fp16` recipe, torch's "
             f"GradScaler from 2^16, growth interval {gi} steps (shorter than torch's 2000 so that "
             "growth and back-off show within the run). A scale s multiplies every gradient by s, "
             "moving the histogram of their exponents log2(s) binades up: too small and they "
             "underflow, too large and the largest overflow to inf and every step is skipped.", "",
             "| scaling | activation-gradient underflow | test accuracy | final train loss | "
             "skipped "
             "steps | final scale |", "|---|---:|---:|---:|---:|---:|"]
    labels, accs, unders = [], [], []
    for slug in info["arms"]:
        s = res[slug]
        fs = s.get("final_scale")
        fs_txt = f"2^{math.log2(fs):g}" if isinstance(fs, (int, float)) and fs > 0 else "-"
        lines.append(f"| {_label(info, slug)} | {pct(s['activation_grad_underflow_share'])} | "
                     f"{_acc(s)} | {s['train_loss_last']:.4g} | {s['skipped_steps']} | {fs_txt} |")
        labels.append(_label(info, slug))
        accs.append(100 * (s["test_accuracy"] or 0.0))
        unders.append(100 * (s["activation_grad_underflow_share"] or 0.0))
    lines.append("")
    skipped = [res[slug]["skipped_steps"] for slug in info["arms"]]
    ref = figure("scale_sweep.png", figures.scale_sweep, labels, unders, accs, skipped,
                 title="Static loss scales against dynamic scaling (loss × 2^"
                       f"{math.log2(w):g})")
    if ref:
        lines += [f"![scale sweep]({ref})", ""]
    if "dynamic" in recs:
        from .report import read_run

        scale = read_run(os.path.join(out_dir, "dynamic")).scale_series()
        if scale:
            ref = figure("loss_scale.png", figures.scale_trace, {"dynamic": scale},
                         title="Dynamic loss scale (skipped steps marked)")
            if ref:
                lines += [f"![dynamic loss scale]({ref})", ""]
    hists = {}
    for slug in info["arms"]:
        h = gradient_histogram(recs[slug], formats.fp16)
        if h.sum():
            hists[_label(info, slug)] = h
    ref = figure("gradient_exponents.png", figures.exponent_histogram, hists, formats.fp16,
                 title="Activation gradients (× scale) before rounding to fp16")
    if ref:
        lines += [f"![gradient exponents by scale]({ref})", ""]
    return lines
