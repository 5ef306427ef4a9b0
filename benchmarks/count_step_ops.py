"""How many torch ops one AMP training step launches, counted on the CPU (no GPU needed).

    python benchmarks/count_step_ops.py [--only gpt,mlp] [--backend plan|torch:cpu|native]
                                        [--top 25] [--sites OP,OP] [--json FILE]

Each torch op that computes (views and allocations left out) is one kernel launch on CUDA, so
the count of a step measures its launches and, with simprec's Python layers in front of each,
its host time. `--backend plan` (the default) runs simprec's step on
`TorchBackend.cuda_plan()`: the kernels "torch:cuda" runs, on CPU tensors (where torch has no
fp32-output half GEMM, a GEMM counts one op more than on CUDA). `native` counts the hand-written
torch AMP step of the same network (bench_gpu.native_step, on the CPU: AdamW's for-loop path,
where CUDA runs foreach kernels). `--sites` names the simprec call sites of the given ops.

The networks are bench_gpu.py's GPT (8 blocks, narrow: width 64, 4 heads, 32 tokens, batch 2)
and its quick MLP; docs/benchmarks.md keeps the counts before and after the speed work of
issue 12, tests/test_torch_op_count.py bounds them.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "backends", ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_gpu  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

# ops that launch no kernel: views, metadata and allocations
NO_KERNEL = frozenset({
    "view", "detach", "expand", "permute", "_unsafe_view", "select", "slice", "as_strided",
    "lift_fresh", "alias", "t", "transpose", "unsqueeze", "squeeze", "empty", "empty_like",
    "empty_strided", "unbind", "split", "split_with_sizes", "_reshape_alias", "resize_",
    "unfold", "diagonal", "_local_scalar_dense"})
SIZES = {
    "gpt": dict(vocab_size=256, block_size=32, n_layer=8, n_head=4, n_embd=64, batch=2),
    "mlp": bench_gpu.QUICK["mlp"],
}


class OpCounter(TorchDispatchMode):
    """Counts the torch ops run inside it: `ops` (name -> count of ops that compute), `syncs`
    (reads of a tensor's value by the host), `float64` (ops on float64 tensors: none belong in a
    GPU step), `sites` (op <- simprec call site, for `sites`)."""

    def __init__(self, sites=()):
        super().__init__()
        self.ops = collections.Counter()
        self.syncs = 0
        self.float64 = 0
        self.sites = collections.Counter()
        self._watch = set(sites)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense":
            self.syncs += 1
        if name in NO_KERNEL:
            return out
        self.ops[name] += 1
        self.float64 += any(getattr(a, "dtype", None) == torch.float64 for a in args)
        if name in self._watch:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "simprec" in f.filename and "count_step_ops" not in f.filename][-4:]
            self.sites[name + " <- " + " | ".join(
                f"{Path(f.filename).name}:{f.lineno}" for f in frames)] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def make_step(name: str, backend: str):
    """One AMP step of the case (after two warm-up steps: lazy state is created)."""
    model, batch = bench_gpu.build(name, SIZES[name])
    lm = name == "gpt"
    if backend == "native":
        step = bench_gpu.native_step(model, batch, "amp-fp16", "cpu", "explicit", lm)
    else:
        if backend == "plan":
            from simprec_torch import TorchBackend

            backend = TorchBackend.cuda_plan().name
        step = bench_gpu.simprec_step(model, batch, "amp-fp16", backend, lm)
    step()
    step()
    return step


def count(name: str, backend: str = "plan", sites=()) -> OpCounter:
    step = make_step(name, backend)
    counter = OpCounter(sites)
    with counter:
        step()
    return counter


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="gpt,mlp")
    p.add_argument("--backend", default="plan")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sites", default="")
    p.add_argument("--json")
    args = p.parse_args(argv)
    summary = {}
    for name in args.only.split(","):
        c = count(name, args.backend, [s for s in args.sites.split(",") if s])
        summary[name] = {"ops": c.total, "host_syncs": c.syncs, "float64_ops": c.float64,
                         "by_op": dict(c.ops)}
        print(f"{name} ({args.backend}): {c.total} ops, {c.syncs} host syncs, {c.float64} "
              f"float64 ops per AMP step")
        for op, n in c.ops.most_common(args.top):
            print(f"  {n:6d} {op}")
        for site, n in c.sites.most_common(args.top):
            print(f"  {n:6d} {site}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
