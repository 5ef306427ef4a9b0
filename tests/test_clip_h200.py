"""clip_grad_norm_ against H200 captures of torch 2.11 (tests/data/h200_capture/capture_clip.py):
fp32 and fp16 gradient lists of six shapes (1 to 128×256), magnitudes unit/big/tiny, norm 2 and
inf, max_norm hit and missed, foreach default and off. Inputs regenerate from the script's seeds;
the expected values are the captured bits (norms) and SHA-256 digests (clipped gradients) in
h200_clip_digests.npz (made by pack_clip.py)."""

from __future__ import annotations

import hashlib
import math
import os
import sys

import numpy as np
import pytest

import simprec as sp
from simprec import optim
from simprec.optim.clip import _vector_norm

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "h200_capture")
sys.path.insert(0, HERE)
import capture_clip as CC  # noqa: E402

DATA = np.load(os.path.join(HERE, "h200_clip_digests.npz"))
NORMS = (("l2", 2.0), ("inf", math.inf))



def _cases():
    return [(dt, mag, nn, nt, hit) for dt in ("f32", "f16") for mag in CC.MAGNITUDES
            for nn, nt in NORMS for hit in ("hit", "miss")]


def _fmt(dt):
    return (sp.fp16, np.float16, np.uint16) if dt == "f16" else (sp.fp32, np.float32, np.uint32)


def _sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("dt, mag, nn, nt, hit", _cases(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_clip_grad_norm_bit_identical_to_h200(dt, mag, nn, nt, hit):
    fmt, hd, ut = _fmt(dt)
    case = f"{dt}_{mag}_{nn}_{hit}"
    host = CC.case_grads(mag, dt)
    for i, h in enumerate(host):
        assert _sha(h.astype(hd).view(ut)) == str(DATA[f"{dt}_{mag}__grad{i}"])
    # per-tensor norms: torch._foreach_norm's block reduction (simprec.optim.clip)
    for i, h in enumerate(host):
        g = sp.tensor(h, fmt=fmt)
        ours = np.asarray(g.backend.to_numpy(_vector_norm(g.backend, g.data, nt, fmt)))
        ours = ours.astype(hd).reshape(1).view(ut)[0]
        theirs = DATA[f"{case}__fnorm{i}"].reshape(1)[0]
        assert ours == theirs, (i, ours, theirs)
    for fe in ("default", "off"):
        params = [sp.tensor(np.zeros(h.shape, np.float32), fmt=fmt, requires_grad=True)
                  for h in host]
        for p, h in zip(params, host, strict=True):
            p.grad = sp.tensor(h, fmt=fmt)
        total = optim.clip_grad_norm_(params, float(DATA[f"{case}__max_norm"]), nt)
        total_bits = np.asarray(total, dtype=hd).view(ut)
        clipped = [_sha(p.grad.numpy().astype(hd).view(ut)) for p in params]
        expected = [str(DATA[f"{case}__{fe}__clipped{i}"]) for i in range(len(params))]
        assert total_bits == DATA[f"{case}__{fe}__total"], (fe, total_bits)
        assert clipped == expected, (fe, [a == b for a, b in zip(clipped, expected, strict=True)])


def test_mlp_run_step0_gradient_norm_bit_identical_to_h200():
    """The captured MLP run (fp16 autocast, Adam, GradScaler, unscale_, clip_grad_norm_(0.5)):
    its step-0 scaled gradients unscaled (times the fp32 reciprocal of the scale) and clipped
    give the H200's gradient norm and clipped gradients, bit for bit."""
    names = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    scale = DATA["mlp_scale0"].view(np.float32)[0]
    inv = np.float32(1.0) / scale
    params = []
    for n in names:
        g = DATA[f"mlp_grad0__{n}"].view(np.float32)
        p = sp.tensor(np.zeros_like(g), requires_grad=True)
        p.grad = sp.tensor(g * inv)
        params.append(p)
    total = optim.clip_grad_norm_(params, 0.5)
    assert np.float32(total).view(np.uint32) == DATA["mlp_grad_norm0"][0]
    for p, n in zip(params, names, strict=True):
        assert _sha(p.grad.numpy().view(np.uint32)) == str(DATA[f"mlp_grad0_unscaled__{n}"]), n
