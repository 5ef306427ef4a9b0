"""amp.autocast: torch's CUDA op table, the parameter-cast cache, nesting, errors.

Tested against the table (amp.policy.TABLE, from aten's autocast_mode.h/.cpp), not against
torch's CPU autocast, whose lists differ from CUDA's."""

from __future__ import annotations

import numpy as np
import pytest

import simprec as sp
from simprec import _state, amp, ops
from simprec.amp import policy

RNG = np.random.default_rng(0)


def _w(shape=(4, 3), name="w"):
    w = sp.tensor(RNG.standard_normal(shape).astype(np.float32), requires_grad=True)
    w.name = name
    return w


def _x(shape=(2, 3), fmt=sp.fp32):
    return sp.tensor(RNG.standard_normal(shape).astype(np.float32), fmt=fmt)


# ---- the table ----

def test_table_is_one_policy_per_op_and_holds_torchs_key_entries():
    seen = {}
    for pol, names in policy.TABLE.items():
        for name in names:
            assert name not in seen, f"{name} in {seen.get(name)} and {pol}"
            seen[name] = pol
    for name in ("matmul", "mm", "bmm", "linear", "conv2d", "addmm", "baddbmm", "einsum",
                 "scaled_dot_product_attention"):
        assert policy.policy_of(name) == policy.LOWER
    for name in ("exp", "log", "pow", "softplus", "layer_norm", "group_norm", "nll_loss",
                 "mse_loss", "logsumexp", "rsqrt", "binary_cross_entropy_with_logits"):
        assert policy.policy_of(name) == policy.FP32
    for name in ("softmax", "log_softmax", "sum", "prod", "cumsum"):
        assert policy.policy_of(name) == policy.FP32_OUT
    for name in ("cat", "stack", "where", "addcmul", "index_put"):
        assert policy.policy_of(name) == policy.PROMOTE
    for name in ("relu", "gelu", "add", "mul", "mean", "batch_norm", "cross_entropy", "tanh"):
        assert policy.policy_of(name) is None  # runs in its inputs' format


@pytest.mark.parametrize("fmt", [sp.fp16, sp.bf16])
def test_lower_precision_ops_give_the_autocast_format(fmt):
    w, x = _w(), _x()
    with amp.autocast(fmt):
        assert ops.linear(x, w).fmt == fmt
        assert ops.matmul(x, w.T).fmt == fmt
        assert (x @ w.T).fmt == fmt


def test_fp32_ops_and_fp32_output_ops():
    x16 = _x((2, 5), sp.fp16)
    with amp.autocast(sp.fp16):
        assert ops.layer_norm(x16, (5,)).fmt == sp.fp32
        assert ops.layer_norm(x16, (5,), _w((5,)), _w((5,))).fmt == sp.fp32
        assert ops.exp(x16).fmt == sp.fp32
        assert ops.log(ops.abs(x16)).fmt == sp.fp32
        assert ops.softmax(x16, dim=1).fmt == sp.fp32
        assert ops.log_softmax(x16, dim=1).fmt == sp.fp32
        assert ops.sum(x16).fmt == sp.fp32
        assert ops.mse_loss(x16, x16).fmt == sp.fp32
        # not listed: the input's format (binary ops promote by themselves)
        assert ops.relu(x16).fmt == sp.fp16
        assert ops.gelu(x16).fmt == sp.fp16
        assert ops.mean(x16).fmt == sp.fp16
        assert (x16 + x16).fmt == sp.fp16
        assert (x16 + _x((2, 5))).fmt == sp.fp32


def test_softmax_fp32_result_has_the_numbers_of_an_fp32_kernel_on_half_input():
    x16 = _x((3, 7), sp.fp16)
    with amp.autocast(sp.fp16):
        y = ops.softmax(x16, dim=1)
    np.testing.assert_array_equal(y.numpy(), ops.softmax(x16.float(), dim=1).numpy())


def test_cross_entropy_keeps_log_probabilities_in_fp16_like_aten():
    """aten: nll_loss(log_softmax(x, 1, dtype=x.dtype)): the explicit dtype makes log_softmax
    ineligible for its fp32 output, so the log-probabilities are rounded to fp16 and only
    nll_loss runs in fp32 (this reproduces the H200 trace's losses bit for bit)."""
    logits = _x((6, 10))
    target = sp.tensor(np.array([1, 0, 9, 3, 3, 2]))
    w = _w((10, 10))
    with amp.autocast(sp.fp16):
        out = ops.linear(logits, w)
        loss = ops.cross_entropy(out, target)
    assert out.fmt == sp.fp16 and loss.fmt == sp.fp32
    logp16 = ops.log_softmax(out.detach(), dim=1)  # fp16 in, fp32 opmath, fp16 out
    expected = ops.nll_loss(logp16.float(), target)
    assert loss.item() == expected.item()


def test_only_floating_non_fp64_tensors_are_cast():
    region = amp.autocast(sp.fp16)
    x64 = sp.tensor(np.ones((2, 2)), fmt=sp.fp64)
    idx = sp.tensor(np.array([1, 2]))
    out = region.cast_inputs("matmul", (x64, idx, "not a tensor"))
    assert out[0] is x64 and out[1] is idx and out[2] == "not a tensor"


def test_promote_and_banned_ops():
    region = amp.autocast(sp.fp16)
    a16, b32, c16 = _x(fmt=sp.fp16), _x(), _x(fmt=sp.fp16)
    assert [t.fmt for t in region.cast_inputs("cat", (a16, b32))] == [sp.fp32, sp.fp32]
    assert [t.fmt for t in region.cast_inputs("stack", (a16, c16))] == [sp.fp16, sp.fp16]
    with pytest.raises(TypeError, match="unexpected floating format bf16"):
        region.cast_inputs("addcmul", (a16, _x(fmt=sp.bf16)))
    # cat promotes natively on CUDA: fp16 with bf16 gives fp32
    assert [t.fmt for t in region.cast_inputs("cat", (a16, _x(fmt=sp.bf16)))] == [sp.fp32] * 2
    with pytest.raises(RuntimeError, match="unsafe to autocast"):
        region.cast_inputs("binary_cross_entropy", (b32, b32))


# ---- backward ----

def test_cast_backward_rounds_the_weight_gradient_in_half_then_widens():
    w, x = _w(), _x()
    with amp.autocast(sp.fp16):
        y = ops.linear(x, w)
    (y * 1000.0).sum().backward()
    assert w.grad.fmt == sp.fp32
    # d(sum 1000*y)/dW = 1000 * ones(2,4)^T @ x16, computed in fp16 (one rounding), then widened
    x16 = sp.round(x.numpy(), sp.fp16)
    g = sp.round(np.full((2, 4), 1000.0, np.float32), sp.fp16)
    np.testing.assert_array_equal(w.grad.numpy(), sp.round((g.T @ x16).astype(np.float32), sp.fp16))


# ---- the cache ----

def _weight_copy(out):
    return out._ctx.inputs[1]


def test_a_parameter_used_twice_is_cast_once_and_recast_after_the_region():
    w, x = _w(), _x()
    with amp.autocast(sp.fp16):
        first, second = ops.linear(x, w), ops.linear(x, w)
        copy = _weight_copy(first)
        assert copy is _weight_copy(second)
        assert copy.is_parameter_copy and copy.name == "w" and copy.fmt == sp.fp16
        with amp.autocast(sp.fp16):  # a nested region shares the outermost cache
            assert _weight_copy(ops.linear(x, w)) is copy
        assert _weight_copy(ops.linear(x, w)) is copy
    with amp.autocast(sp.fp16):
        assert _weight_copy(ops.linear(x, w)) is not copy


def test_activations_and_uncached_regions_are_cast_every_time():
    w, x = _w(), _x()
    with amp.autocast(sp.fp16):
        assert first_input(ops.linear(x, w)) is not first_input(ops.linear(x, w))
    with amp.autocast(sp.fp16, cache_enabled=False):
        assert _weight_copy(ops.linear(x, w)) is not _weight_copy(ops.linear(x, w))


def first_input(out):
    return out._ctx.inputs[0]


def test_cache_entry_made_under_no_grad_still_carries_the_graph():
    w, x = _w(), _x()
    with amp.autocast(sp.fp16):
        with sp.no_grad():
            ops.linear(x, w)
        y = ops.linear(x, w)
    y.sum().backward()
    assert w.grad is not None


def test_gradients_of_two_uses_meet_at_the_copy_in_half():
    w, x = _w((3, 3)), _x((2, 3))
    with amp.autocast(sp.fp16):
        y = ops.linear(ops.linear(x, w), w)
    y.sum().backward()
    assert w.grad.fmt == sp.fp32 and np.all(w.grad.numpy() == sp.round(w.grad.numpy(), sp.fp16))


# ---- nesting, settings, errors ----

def test_nested_disabled_region_turns_casting_off():
    w, x = _w(), _x()
    with amp.autocast(sp.fp16):
        assert amp.is_autocast_enabled() and amp.get_autocast_format() == sp.fp16
        with amp.autocast(enabled=False):
            assert ops.linear(x, w).fmt == sp.fp32
            assert not amp.is_autocast_enabled()
        assert ops.linear(x, w).fmt == sp.fp16
        with amp.autocast(sp.bf16):
            assert ops.linear(x, w).fmt == sp.bf16
    assert ops.linear(x, w).fmt == sp.fp32 and _state.autocast.get() is None


def test_accumulate_is_set_inside_and_restored():
    assert _state.accumulate.get() == "fp32"
    with amp.autocast(sp.fp16, accumulate="sm90"):
        assert _state.accumulate.get() == "sm90"
        with amp.autocast(sp.fp16):  # None: keep the current model
            assert _state.accumulate.get() == "sm90"
    assert _state.accumulate.get() == "fp32"
    with pytest.raises(ValueError, match="accumulate must be one of"):
        amp.autocast(sp.fp16, accumulate="sm100")


def test_decorator_and_string_formats():
    w, x = _w(), _x()

    @amp.autocast("bf16")
    def forward():
        return ops.linear(x, w)

    assert forward().fmt == sp.bf16
    assert amp.autocast(dtype=sp.fp16).fmt == sp.fp16
    assert ops.linear(x, w).fmt == sp.fp32


@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp64, sp.fp8_e4m3, sp.Format(5, 10, subnormals=False),
                                 "cuda", None])
def test_non_half_formats_are_refused(fmt):
    with pytest.raises(ValueError, match="the format must be a half format, sp.fp16 or sp.bf16"):
        amp.autocast(fmt)
