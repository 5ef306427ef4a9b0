"""Convert the whole-run captures of `capture_runs.py` into `simprec_capture.py`'s format (once).

    python tests/data/h200_capture/convert_runs.py SRC_DIR [--out tests/data/h200_capture]

`capture_runs.py` (H200, torch 2.11 CUDA 13) predates the capture tool; its runs are exactly what
the tool records for the same loop, so this script only renames and describes them: the tool's
`meta` (CAPTURE_FORMAT version 1: the network, recipe, optimizer with the path torch picked,
scaler, clip, versions), `grad0_unscaled__*` -> `grad__0__*`, `act0__*` -> `out__0__*` (batch
row 0, as `output_rows=1`), `lr` from the constant learning rate. Left out to keep the repository
small: `grad0__*` (the scaled step-0 gradients: `grad__0__*` times the scale, a power of two)
and `logits0` (batch row 0 of `out__0__head`). Bits are copied unchanged.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

# What capture_runs.py ran (its `train`): torch's defaults for what it does not set.
_ADAMW = dict(betas=[0.9, 0.999], eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
              capturable=False, foreach=None, fused=None, differentiable=False)
_ADAM = dict(_ADAMW, weight_decay=0.0)
_SCALER = dict(growth_factor=2.0, backoff_factor=0.5)
RUNS = {
    "h200_run_gpt_fp16": dict(
        autocast="fp16", optimizer=("AdamW", dict(_ADAMW, lr=3e-3), "foreach"),
        scaler=dict(_SCALER, init_scale=2.0**10, growth_interval=4), clip=None),
    "h200_run_gpt_bf16_fused": dict(
        autocast="bf16", optimizer=("AdamW", dict(_ADAMW, lr=3e-3, fused=True), "fused"),
        scaler=None, clip=None),
    "h200_run_mlp_fp16_clip": dict(
        autocast="fp16", optimizer=("Adam", dict(_ADAM, lr=1e-3), "foreach"),
        scaler=dict(_SCALER, init_scale=2.0**12, growth_interval=10),
        clip=dict(max_norm=0.5, norm_type=2.0, foreach=None)),
}


def _model(cfg: dict) -> dict:
    if "vocab" in cfg:
        return {"name": "gpt", "kwargs": dict(vocab_size=cfg["vocab"], block_size=cfg["block"],
                                               n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                                               n_embd=cfg["n_embd"], tied_head=False,
                                               attention="manual")}
    return {"name": "mlp", "kwargs": dict(in_features=cfg["din"], hidden=list(cfg["hidden"]),
                                           classes=cfg["classes"], activation="relu")}


def convert(src: str, name: str) -> tuple[dict, dict]:
    with np.load(src, allow_pickle=False) as data:
        old = {k: data[k] for k in data.files}
    old_meta = json.loads(str(old.pop("meta")))
    run = RUNS[name]
    cls, hyper, path = run["optimizer"]
    params = [k[len("init__"):] for k in old if k.startswith("init__")]
    steps = int(old["loss"].shape[0])
    out: dict = {}
    order = []
    for key, value in old.items():
        if key.startswith(("init__", "final__")) or key in (
                "batch_x", "batch_y", "loss", "scale", "scale_after", "grad_norm"):
            out[key] = value
        elif key.startswith("grad0_unscaled__"):
            out["grad__0__" + key[len("grad0_unscaled__"):]] = value
        elif key.startswith("act0__"):
            out["out__0__" + key[len("act0__"):]] = value
            order.append(key[len("act0__"):])
    out["lr"] = np.full((steps, 1), hyper["lr"], np.float64)
    env = {k: old_meta.get(k) for k in ("torch", "cuda", "gpu", "capability", "numpy",
                                         "device", "blas_library",
                                         "allow_fp16_reduced_precision_reduction",
                                         "allow_bf16_reduced_precision_reduction",
                                         "setting_errors")}
    meta = {
        "format": "simprec-capture", "version": 1, "converted_from": "capture_runs.py",
        "env": env, "steps": steps, "model": _model(old_meta["cfg"]),
        "params": [[p, list(old["init__" + p].shape), "float32"] for p in params],
        "recipe": {"autocast": run["autocast"], "param_dtype": "float32",
                   "accumulate": "sm90"},
        "optimizer": {"class": cls, "path": path,
                      "groups": [dict(hyper, params=params)]},
        "scaler": run["scaler"], "clip": run["clip"], "loss": "cross_entropy",
        "record": {"grad_raw": [], "grad": [0], "weight": [], "out": [0], "output_rows": 1,
                   "output_order": order},
        "repeat_identical": bool(old.get("repeat_identical", False)),
    }
    return out, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the folder of capture_runs.py's h200_run_*.npz")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    for name in RUNS:
        arrays, meta = convert(os.path.join(args.src, name + ".npz"), name)
        arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
        path = os.path.join(args.out, name + ".npz")
        np.savez_compressed(path, **arrays)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
