"""simprec's torch backend against hand-written torch AMP on a GPU: step time and peak memory.

    python benchmarks/bench_gpu.py [--native-only] [--only gpt,mlp] [--repeats 10]
                                   [--backend torch:cuda|cupy] [--recipes fp32,amp-fp16]
                                   [--json FILE] [--quick]

Cases (issue 12's acceptance): a GPT of 8 blocks, width 1024, 16 heads, vocabulary 256, batch
32 x 512 tokens, and an MLP 784-4096-4096-10 at batch 4096; AdamW (lr 3e-4, weight decay 0.01),
under `amp-fp16` and `fp32`. For each: the simprec step (`simprec.models` on the backend,
`amp.get_recipe(...).step`: autocast, GradScaler with unscale_, AdamW) and the hand-written
native step of the same network (`simprec_torch.to_torch`, then `torch.autocast` +
`torch.amp.GradScaler` + `torch.optim.AdamW` with torch's defaults, the loop of torch's AMP
examples), the GPT with explicit attention on both sides and again with SDPA.

Both sides run under the GEMM settings the reference models (`pin_cuda_gemm_settings`: no
reduced-precision split-K reductions, no TF32), which the torch backend sets process-wide.

Reported per case: the median step time (after warm-up; each step ends with a device
synchronisation), the peak memory of the timed steps (`torch.cuda.max_memory_allocated`), the
amp-fp16 speed-up over fp32 of each side, and the ratios simprec / native of time and memory.
Targets (issue 12): time ratio <= 1.15, memory ratio <= 1.2, speed-ups within 10 %.

simprec's attention is its own op (`ops.scaled_dot_product_attention`, the math composite the
reference models); in the SDPA case its step is the same as in the explicit case unless the
backend runs a fused kernel for that op, and the table says which native kernel it is held
against. `--native-only` times the native half alone (numbers exist even if the simprec step is
slow). `--quick` is a dry run of the whole script on tiny sizes on the CPU (torch:cpu where the
backend is installed, else numpy); its times mean nothing.

`--recipes` chooses simprec's side (issue 14: `--backend cupy --recipes amp-fp16,fp8-sm70`):
recipe names, each optionally with its accumulation model (`fp8-sm70`, `pure-fp16-sm80`;
default sm90 on a GPU). Every simprec recipe is also held against the native AMP step (a second
table: time ratio simprec recipe / native amp-fp16; issue 14's targets: <= 1.5 for amp-fp16/sm90,
<= 5 for an emulated fp8 or sm70 recipe). On `cupy` the peak memory is CuPy's memory pool after
the timed steps (the pool keeps what it once held: its high-water mark), not torch's counter.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "backends"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import torch  # noqa: E402
from simprec_torch.interop import to_torch  # noqa: E402
from simprec_torch.native import pin_cuda_gemm_settings  # noqa: E402

import simprec as sp  # noqa: E402
from simprec import amp, models, optim  # noqa: E402
from simprec.backend import get_backend  # noqa: E402
from simprec.nn import functional as F  # noqa: E402

FULL = {
    "gpt": dict(vocab_size=256, block_size=512, n_layer=8, n_head=16, n_embd=1024, batch=32),
    "mlp": dict(in_features=784, hidden=(4096, 4096), classes=10, batch=4096),
}
QUICK = {
    "gpt": dict(vocab_size=256, block_size=16, n_layer=2, n_head=2, n_embd=32, batch=2),
    "mlp": dict(in_features=784, hidden=(64, 64), classes=10, batch=32),
}
LR, WEIGHT_DECAY = 3e-4, 0.01


# ---------------------------------------------------------------------------- the networks


def build(name: str, size: dict, seed: int = 0):
    """The simprec model and a fixed batch (host arrays) of the case."""
    rng = np.random.default_rng(seed)
    kw = {k: v for k, v in size.items() if k != "batch"}
    batch = size["batch"]
    if name == "gpt":
        model = models.TinyGPT(**kw, generator=np.random.default_rng(seed))
        shape = (batch, size["block_size"])
        x = rng.integers(0, size["vocab_size"], shape)
        y = rng.integers(0, size["vocab_size"], shape)
    else:
        model = models.MLP(**kw, generator=np.random.default_rng(seed))
        x = rng.standard_normal((batch, size["in_features"])).astype(np.float32)
        y = rng.integers(0, size["classes"], batch)
    return model, (x, y)


def _loss(lm: bool, logits, y, cross_entropy):
    if lm:
        return cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return cross_entropy(logits, y)


# ---------------------------------------------------------------------------- the two steps


def native_step(model, batch, recipe: str, device: str, attention: str, lm: bool):
    """The hand-written torch loop (torch's AMP examples): autocast, scaler.scale(loss).backward,
    scaler.step, scaler.update, zero_grad; fp32 without autocast and scaler. AdamW with torch's
    defaults for the device (foreach on CUDA)."""
    module = to_torch(model, attention=attention, device=device)
    opt = torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x, y = (torch.as_tensor(a).to(device) for a in batch)
    use_amp = recipe == "amp-fp16"
    scaler = torch.amp.GradScaler(device, enabled=use_amp)

    def step():
        with torch.autocast(device, dtype=torch.float16, enabled=use_amp):
            loss = _loss(lm, module(x), y, torch.nn.functional.cross_entropy)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    return step


def simprec_step(model, batch, recipe: str, backend: str, lm: bool, accumulate=None):
    """simprec's step of the same network: the recipe's own `step` (autocast with the
    `accumulate` model, by default sm90 on CUDA, GradScaler with unscale_, AdamW), on
    `backend`."""
    model.to(backend)
    if accumulate is None and _on_gpu(backend):
        accumulate = "sm90"
    rec = amp.get_recipe(recipe, accumulate=accumulate)
    model, opt, _ = rec.prepare(model, lambda ps: optim.AdamW(ps, lr=LR,
                                                              weight_decay=WEIGHT_DECAY))
    x, y = (sp.tensor(a, backend=backend) for a in batch)

    def loss_fn(m, b):
        return _loss(lm, m(b[0]), b[1], F.cross_entropy)

    def step():
        rec.step(model, opt, loss_fn, (x, y))

    return step


def _on_gpu(backend: str) -> bool:
    return backend.startswith(("torch:cuda", "cupy"))


MODELS = ("sm70", "sm80", "sm90")


def parse_recipe(label: str) -> tuple[str, str | None]:
    """'fp8-sm70' -> ('fp8', 'sm70'); 'amp-fp16' -> ('amp-fp16', None)."""
    name, _, model = label.rpartition("-")
    return (name, model) if name and model in MODELS else (label, None)


# ---------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(make_step, device: str, repeats: int, warmup: int, budget: float,
            cupy_pool: bool = False) -> dict:
    """Median and minimum step time (seconds) and peak memory (bytes, CUDA only; with
    `cupy_pool`, CuPy's pool) of the timed steps. Slow steps warm up and repeat less, so that
    one measurement takes about `budget` seconds (at least one warm-up step and two timed
    steps)."""
    cuda = device.startswith("cuda")
    pool = _cupy_pool() if cuda and cupy_pool else None
    gc.collect()
    if pool is not None:
        pool.free_all_blocks()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    step = make_step()
    times = []
    for _ in range(warmup):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        if sum(times) > budget / 4:
            break
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    n = repeats
    if times and min(times) * repeats > budget:
        n = max(2, int(budget / min(times)))
    timed = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        _sync(device)
        timed.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() if cuda else None
    if pool is not None:
        peak = pool.total_bytes()
    del step
    gc.collect()
    if pool is not None:
        pool.free_all_blocks()
    if cuda:
        torch.cuda.empty_cache()
    return {"median_s": statistics.median(timed), "min_s": min(timed), "steps": n,
            "warmup": len(times), "peak_bytes": peak}


def _cupy_pool():
    import cupy

    return cupy.get_default_memory_pool()


def run_case(name, size, attention, args, simprec_cache) -> dict:
    lm = name == "gpt"
    row = {"case": name, "attention": attention if lm else None}
    for recipe in ("fp32", "amp-fp16"):
        model, batch = build(name, size)  # the native step copies it
        row[f"native {recipe}"] = measure(
            lambda m=model, b=batch, r=recipe: native_step(m, b, r, args.device, attention, lm),
            args.device, args.repeats, args.warmup, args.budget)
        del model, batch
    for label in ([] if args.native_only else args.recipes):
        key = (name, label)
        if key not in simprec_cache:  # simprec runs its own attention op in both cases
            recipe, accumulate = parse_recipe(label)
            model, batch = build(name, size)  # simprec's step trains it
            simprec_cache[key] = measure(
                lambda m=model, b=batch, r=recipe, a=accumulate: simprec_step(
                    m, b, r, args.backend, lm, a),
                args.device, args.repeats, args.warmup, args.budget,
                cupy_pool=args.backend.startswith("cupy"))
            del model, batch
        row[f"simprec {label}"] = simprec_cache[key]
    _ratios(row)
    return row


def _ratios(row: dict) -> None:
    def ratio(a, b):
        return a / b if a is not None and b else None

    for side in ("native", "simprec"):
        if f"{side} amp-fp16" in row and f"{side} fp32" in row:
            row[f"{side} speed-up"] = ratio(row[f"{side} fp32"]["median_s"],
                                            row[f"{side} amp-fp16"]["median_s"])
    if "simprec amp-fp16" in row:
        s, n = row["simprec amp-fp16"], row["native amp-fp16"]
        row["time ratio"] = ratio(s["median_s"], n["median_s"])
        row["memory ratio"] = ratio(s["peak_bytes"], n["peak_bytes"])
        row["speed-up ratio"] = ratio(row.get("simprec speed-up"), row["native speed-up"])
    native = row["native amp-fp16"]
    for key in [k for k in row if k.startswith("simprec ")
                and k not in ("simprec speed-up", "simprec fp32")]:
        label = key.removeprefix("simprec ")
        row[f"time ratio {label}"] = ratio(row[key]["median_s"], native["median_s"])


# ---------------------------------------------------------------------------- the table


def _ms(m):
    return f"{m['median_s'] * 1e3:.1f}" if m else "-"


def _gib(m):
    return f"{m['peak_bytes'] / 2**30:.2f}" if m and m.get("peak_bytes") else "n/a"


def _x(v, digits=2):
    return f"{v:.{digits}f}" if v is not None else "-"


def table(rows) -> str:
    head = ("| case | attention (native) | native fp32 ms | native amp ms | native x | "
            "native amp GiB | simprec fp32 ms | simprec amp ms | simprec x | simprec amp GiB | "
            "time ratio | memory ratio | speed-up ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["case"], r["attention"] or "-",
            _ms(r.get("native fp32")), _ms(r.get("native amp-fp16")),
            _x(r.get("native speed-up"), 1), _gib(r.get("native amp-fp16")),
            _ms(r.get("simprec fp32")), _ms(r.get("simprec amp-fp16")),
            _x(r.get("simprec speed-up"), 1), _gib(r.get("simprec amp-fp16")),
            _x(r.get("time ratio")), _x(r.get("memory ratio")), _x(r.get("speed-up ratio")),
        ]) + " |")
    return "\n".join(lines)


def recipe_table(rows) -> str:
    """Every simprec recipe against the native AMP step of its case."""
    head = ("| case | attention (native) | simprec recipe | simprec ms | simprec GiB | "
            "native amp ms | time ratio |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        for key in [k for k in r if k.startswith("time ratio ")]:
            label = key.removeprefix("time ratio ")
            lines.append(f"| {r['case']} | {r['attention'] or '-'} | {label} | "
                         f"{_ms(r[f'simprec {label}'])} | {_gib(r[f'simprec {label}'])} | "
                         f"{_ms(r['native amp-fp16'])} | {_x(r[key])} |")
    return "\n".join(lines)


def machine() -> str:
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
    else:
        gpu = "no CUDA GPU"
    return (f"{gpu}; torch {torch.__version__}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, simprec {sp.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="gpt,mlp", help="cases: gpt, mlp (default: both)")
    p.add_argument("--attention", default="explicit,sdpa",
                   help="the GPT's native attention kernels (default: explicit,sdpa)")
    p.add_argument("--native-only", action="store_true", help="time the native steps alone")
    p.add_argument("--backend", default=None,
                   help="simprec's backend (default: torch:cuda; --quick: torch:cpu or numpy)")
    p.add_argument("--recipes", default="fp32,amp-fp16",
                   help="simprec's recipes, each optionally -sm70/-sm80/-sm90 (its accumulation "
                        "model; default sm90 on a GPU), e.g. amp-fp16,fp8-sm70 "
                        "(default: fp32,amp-fp16)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--budget", type=float, default=20.0,
                   help="seconds per measurement at most (slow steps run fewer repeats, >= 3)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    p.add_argument("--quick", action="store_true",
                   help="a CPU dry run on tiny sizes (tests the script; times mean nothing)")
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    attentions = [a.strip() for a in args.attention.split(",") if a.strip()]
    bad = [c for c in cases if c not in FULL] + [a for a in attentions
                                                 if a not in ("explicit", "sdpa")]
    if bad or not cases or not attentions:
        p.error(f"unknown case or attention: {', '.join(bad) or '(none)'}")
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in args.recipes if parse_recipe(r)[0] not in amp.RECIPES]
    if unknown or not args.recipes:
        p.error(f"unknown recipe: {', '.join(unknown) or '(none)'}; valid: "
                f"{', '.join(amp.RECIPES)} (each optionally -sm70, -sm80, -sm90)")
    sizes = QUICK if args.quick else FULL
    if args.quick:
        args.device = "cpu"
        args.repeats, args.warmup = min(args.repeats, 2), min(args.warmup, 1)
        if args.backend is None:
            args.backend = _quick_backend()
    else:
        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA GPU here (torch sees none); --quick runs a CPU dry run",
                  file=sys.stderr)
            return 2
        args.device = "cuda"
        args.backend = args.backend or "torch:cuda"
        # Both sides under the GEMM settings the reference models (the torch backend sets them
        # process-wide anyway): no reduced-precision split-K reductions, no TF32.
        pin_cuda_gemm_settings()
    if not args.native_only:
        try:
            get_backend(args.backend)
        except (ValueError, ImportError) as err:
            print(f"bench_gpu: simprec backend {args.backend!r} is not usable: {err}; "
                  "--native-only times the native half alone", file=sys.stderr)
            return 2
    print(f"machine: {machine()}")
    print(f"simprec backend: {'(native only)' if args.native_only else args.backend}; "
          f"{args.repeats} timed steps after {args.warmup} (median)\n", flush=True)
    rows, cache = [], {}
    for name in cases:
        for attention in (attentions if name == "gpt" else ["explicit"]):
            row = run_case(name, sizes[name], attention, args, cache)
            row["size"] = sizes[name]
            rows.append(row)
            if name == "mlp":
                row["attention"] = None
    print(table(rows))
    if not args.native_only and args.recipes != ["fp32", "amp-fp16"]:
        print()
        print(recipe_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "backend": args.backend,
                                               "native_only": args.native_only,
                                               "quick": args.quick, "rows": rows}, indent=1))
    return 0


def _quick_backend() -> str:
    try:
        get_backend("torch:cpu")
        return "torch:cpu"
    except (ValueError, ImportError, AttributeError):
        return "numpy"


if __name__ == "__main__":
    sys.exit(main())
