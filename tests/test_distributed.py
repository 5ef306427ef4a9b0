"""Data parallelism in one process: sharding, DDP's averaging, the bucketed reducer, rank
fingerprints, ``--simulate-ranks`` and its distance from a one-process run of the whole batch.

The multi-process runs (gloo, torchrun, SIGKILL) are in test_distributed_gloo.py.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from conftest import assert_bit_identical, checkpoint_state

import simprec as sp
from simprec import nn
from simprec.backend import get_backend
from simprec.distributed import GradientReducer, SimulatedRanks, assign_buckets, attach, shard
from simprec.distributed.collectives import Collectives, Work
from simprec.distributed.consistency import InconsistentRanksError, check_ranks_agree
from simprec.distributed.simulate import combine_gradients
from simprec.nn import functional as F
from simprec.train import TrainConfig, Trainer, read_metrics

# The backends every test here runs on; a backend joins with its name (e.g. "torch:cpu").
BACKENDS = ["numpy", "torch:cpu"]

GPT = dict(model="gpt", model_options={"n_layer": 1, "n_embd": 32, "n_head": 2},
           block_size=16, batch_size=8)
MLP = dict(model="mlp", model_options={"hidden": [64, 64]}, batch_size=32)


def f16_bits(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).view(np.uint16)


# ---------------------------------------------------------------- sharding


def test_shard_deals_every_nth_example_like_distributed_sampler():
    x = sp.tensor(np.arange(12, dtype=np.float32).reshape(6, 2))
    y = sp.tensor(np.arange(6))
    (x1, y1) = shard((x, y), 1, 3)
    assert y1.numpy().tolist() == [1, 4]
    assert x1.numpy().tolist() == [[2, 3], [8, 9]]
    assert shard((x, y), 0, 1) == (x, y)
    with pytest.raises(ValueError, match="leaves rank 2"):
        shard((sp.tensor(np.zeros((2, 1))),), 2, 3)


# ---------------------------------------------------------------- averaging


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_rank_average_scales_first_then_adds_once_in_the_gradient_format(backend):
    """DDP multiplies each gradient by float32(1/N) in its dtype before the sum: the smallest
    fp16 subnormal halves to a tie and rounds to 0, even when both ranks hold it; the sum of
    the halves is the correctly rounded fp16 sum."""
    be = get_backend(backend)
    tiny = 2.0 ** -24
    g0 = np.array([tiny, 3 * tiny, 1.0, 65504.0, 0.1], np.float32).astype(np.float16)
    g1 = np.array([tiny, 3 * tiny, 2.0 ** -11, 65504.0, 0.2], np.float32).astype(np.float16)
    out = combine_gradients(be, sp.fp16, [be.asarray(g0.astype(np.float32), sp.fp16),
                                          be.asarray(g1.astype(np.float32), sp.fp16)])
    got = be.to_numpy(out)
    halves = [(g.astype(np.float32) * np.float32(0.5)).astype(np.float16) for g in (g0, g1)]
    want = (halves[0].astype(np.float32) + halves[1].astype(np.float32)).astype(np.float16)
    assert np.array_equal(f16_bits(got), want.view(np.uint16))
    assert got[0] == 0.0  # 2^-25 + 2^-25 after the pre-division: both underflowed
    assert got[1] == 4 * tiny  # 1.5 * 2^-24 rounds to even (2^-23) on each rank
    assert got[3] == 65504.0  # no overflow: divided before the sum


def test_combine_of_n_ranks_is_a_rank_order_fold():
    be = get_backend("numpy")
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(64).astype(np.float32) for _ in range(4)]
    got = be.to_numpy(combine_gradients(be, sp.fp32, gs))
    want = np.float32(0.25) * gs[0]
    for g in gs[1:]:
        want = want + np.float32(0.25) * g
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


# ---------------------------------------------------------------- buckets and the reducer


def _model(fmt, seed=0):
    gen = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(8, 32, generator=gen), nn.ReLU(),
                          nn.Linear(32, 32, generator=gen), nn.ReLU(),
                          nn.Linear(32, 4, generator=gen))
    return model.to(fmt) if fmt != sp.fp32 else model


def test_buckets_take_parameters_in_reverse_order_and_close_at_the_caps():
    model = _model(sp.fp32)
    params = list(model.parameters())  # sizes 256, 32, 1024, 32, 128, 4 (fp32: x4 bytes)
    buckets = assign_buckets(params, first_bytes=512, cap_bytes=4096)
    assert [[params.index(p) for p in b.params] for b in buckets] == [[5, 4], [3, 2], [1, 0]]
    assert [b.nbytes for b in buckets] == [528, 4224, 1152]
    one = assign_buckets(params)  # DDP's defaults: 1 MiB first bucket
    assert len(one) == 1 and one[0].params == params[::-1]


class _FakeGroup:
    """N ranks of one process: each rank's reducer posts its buckets; a bucket's sum (in rank
    order, fp32, as gloo adds fp16) is computed when a rank waits for it."""

    def __init__(self, n):
        self.n = n
        self.posted = defaultdict(dict)
        self.events = []

    def member(self, rank, params):
        return _FakeMember(self, rank, params)


class _FakeWork(Work):
    def __init__(self, group, seq, backend):
        self.group, self.seq, self.backend = group, seq, backend

    def wait(self):
        contributions = [self.group.posted[self.seq][r] for r in range(self.group.n)]
        sums = [np.sum(np.stack(arrays), axis=0, dtype=np.float32) if self.group.n > 2
                else arrays[0] + arrays[1] for arrays in zip(*contributions, strict=True)]
        return [self.backend.asarray(s, sp.fp32) for s in sums]


class _FakeMember(Collectives):
    def __init__(self, group, rank, params):
        self.group, self.rank, self.world_size = group, rank, group.n
        self.params, self.count = params, 0

    def all_reduce_async(self, backend, fmt, arrays):
        pending = sum(p.grad is None for p in self.params)
        self.group.events.append((self.rank, self.count, pending))
        self.group.posted[self.count][self.rank] = [backend.to_numpy(a).copy() for a in arrays]
        self.count += 1
        return _FakeWork(self.group, self.count - 1, backend)

    def all_reduce_host(self, values):
        raise NotImplementedError

    def all_gather_host(self, array):
        raise NotImplementedError

    def close(self):
        pass


@pytest.mark.parametrize("fmt", [sp.fp32, sp.fp16], ids=["fp32", "fp16"])
def test_reducer_averages_like_the_simulation_and_starts_buckets_during_backward(fmt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 8)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    batch = (sp.tensor(x, fmt), sp.tensor(y))

    def loss_of(model, part):
        return F.cross_entropy(model(part[0]), part[1])

    # two "processes": two replicas, each with a reducer on a fake 2-rank group
    group = _FakeGroup(2)
    replicas = [_model(fmt) for _ in range(2)]
    reducers = []
    for rank, model in enumerate(replicas):
        params = list(model.parameters())
        reducers.append(GradientReducer(params, group.member(rank, params),
                                        first_bucket_bytes=64, bucket_bytes=256))
    for rank, model in enumerate(replicas):
        loss_of(model, shard(batch, rank, 2)).backward()
    for reducer in reducers:
        reducer.finish()
    # the simulation: one model, the shards one after the other, combined
    model = _model(fmt)
    params = list(model.parameters())
    per_rank = []
    for rank in range(2):
        loss_of(model, shard(batch, rank, 2)).backward()
        per_rank.append([p.grad.data for p in params])
        for p in params:
            p.grad = None
    be = get_backend("numpy")
    for i in range(len(params)):
        want = be.to_numpy(combine_gradients(be, fmt, [g[i] for g in per_rank]))
        for replica in replicas:
            got = list(replica.parameters())[i].grad
            assert got.fmt == fmt
            assert np.array_equal(got.numpy().view(np.uint32), want.view(np.uint32))
    # bucket 0 (the last layer's gradients) left while earlier layers still had none
    assert len(reducers[0].buckets) >= 3
    first = [e for e in group.events if e[0] == 0][0]
    assert first[1] == 0 and first[2] > 0


def test_reducer_names_parameters_that_got_no_gradient():
    model = _model(sp.fp32)
    params = list(model.parameters())
    group = _FakeGroup(2)
    reducer = GradientReducer(params, group.member(0, params),
                              names={id(p): n for n, p in model.named_parameters()})
    with pytest.raises(RuntimeError, match="received no gradient.*0.weight"):
        reducer.finish()
    reducer.remove()
    loss = F.cross_entropy(model(sp.tensor(np.ones((2, 8)))), sp.tensor(np.array([0, 1])))
    loss.backward()  # the hooks are gone: nothing is posted
    assert group.events == []


# ---------------------------------------------------------------- rank fingerprints


class _Mirror(Collectives):
    """A 2-rank group whose other rank shows the fingerprint of another trainer."""

    def __init__(self, other_trainer):
        self.rank, self.world_size, self.other = 0, 2, other_trainer

    def all_gather_host(self, array):
        from simprec.distributed.consistency import fingerprint

        return [array, fingerprint(self.other, 2)]

    def all_reduce_async(self, backend, fmt, arrays):
        raise NotImplementedError

    def all_reduce_host(self, values):
        raise NotImplementedError

    def close(self):
        pass


def test_ranks_with_other_options_or_data_are_refused_naming_what_differs(tmp_path):
    cfg = TrainConfig(steps=3, ranks=2, **MLP)
    me = Trainer(cfg, out=tmp_path / "run", quiet=True)
    check_ranks_agree(me, _Mirror(Trainer(cfg, out=tmp_path / "run", quiet=True)))
    other_lr = Trainer(cfg.replace(lr=0.05), out=tmp_path / "run", quiet=True)
    with pytest.raises(InconsistentRanksError, match=r"rank 1 \(configuration, starting state"):
        check_ranks_agree(me, _Mirror(other_lr))
    other_data = Trainer(cfg, out=tmp_path / "run", quiet=True)
    other_data.dataset.meta["sha256"] = "0" * 64
    with pytest.raises(InconsistentRanksError, match=r"rank 1 \(dataset\)"):
        check_ranks_agree(me, _Mirror(other_data))
    elsewhere = Trainer(cfg, out=tmp_path / "other", quiet=True)
    with pytest.raises(InconsistentRanksError, match=r"rank 1 \(run directory\)"):
        check_ranks_agree(me, _Mirror(elsewhere))


# ---------------------------------------------------------------- --simulate-ranks


def _simulated(out, ranks, **options):
    trainer = Trainer(TrainConfig(ranks=ranks, eval_every=0, **options), out=out, quiet=True)
    if ranks > 1:
        attach(trainer, SimulatedRanks(ranks))
    return trainer.run()


def _losses(run_dir):
    return np.array([m["loss"] for m in read_metrics(run_dir, "train")])


# Losses of a 2-rank run against one process on the whole batch (same global batch of B). The
# forward of an example does not depend on its neighbours, so the ranks' per-example losses are
# the whole batch's; what differs is the order of two sums, each rounded to the loss's format:
# the mean over B examples (fp32 accumulation) against the mean of two means of B/2, and, in the
# gradients, sums over B/2 examples added after the pre-division by 2. At step 1 (equal
# weights) the loss therefore differs by at most 2 roundings of the loss format plus the
# reordering of B fp32 terms: |d| <= (2 u + B 2^-24) |loss| (u = 2^-11 for an fp16 loss,
# pure-fp16; 2^-24 for fp32). Later steps start from weights that differ in the last bits and
# the difference grows with training's sensitivity; over 50 steps we allow 4 units of the loss
# format's roundoff (fp16-level for the half recipes, whose activations round to 2^-11).
WHOLE_BATCH_CASES = [
    (MLP, "pure-fp16", 2.0 ** -11, 4 * 2.0 ** -11),
    (MLP, "fp32", 2.0 ** -24, 2.0 ** -19),
    (GPT, "amp-fp16", 2.0 ** -24, 4 * 2.0 ** -11),
]


@pytest.mark.parametrize("options,recipe,u_loss,tol_50", WHOLE_BATCH_CASES,
                         ids=["mlp-pure-fp16", "mlp-fp32", "gpt-amp-fp16"])
def test_two_ranks_stay_within_the_summation_bound_of_the_whole_batch(
        tmp_path, options, recipe, u_loss, tol_50):
    kw = dict(steps=50, checkpoint_every=0, recipe=recipe, **options)
    whole = _losses(_simulated(tmp_path / "one", 1, **kw).run_dir)
    two = _losses(_simulated(tmp_path / "two", 2, **kw).run_dir)
    rel = np.abs(two - whole) / np.abs(whole)
    batch = options["batch_size"]
    assert rel[0] <= 2 * u_loss + batch * 2.0 ** -24
    assert rel.max() <= tol_50, rel.max()
    assert np.all(np.isfinite(two))


def test_simulated_ranks_resume_bit_identically(tmp_path):
    kw = dict(steps=12, checkpoint_every=4, recipe="amp-fp16", seed=2, **MLP)
    full = _simulated(tmp_path / "full", 2, **kw)
    part = Trainer(TrainConfig(ranks=2, eval_every=0, **kw), out=tmp_path / "part", quiet=True)
    attach(part, SimulatedRanks(2))
    # stop after step 6 by a stop request, as Ctrl-C does
    original = part._train_step

    def step_then_stop(loss_fn, batch):
        out = original(loss_fn, batch)
        if part.step + 1 == 6:
            part._stop_requested = True
        return out

    part._train_step = step_then_stop
    assert part.run().interrupted
    resumed = Trainer.resume(tmp_path / "part", quiet=True)
    attach(resumed, SimulatedRanks(2))
    resumed.run()
    assert_bit_identical(checkpoint_state(full.run_dir), checkpoint_state(tmp_path / "part"))


def test_the_command_line_keeps_the_number_of_ranks(tmp_path, capsys):
    from simprec.cli import main

    out = tmp_path / "run"
    args = ["train", "--model-opt", "hidden=[16]", "--steps", "3", "--batch-size", "8",
            "--eval-every", "0", "-q"]
    assert main([*args, "--simulate-ranks", "2", "--out", str(out)]) == 0
    assert (out / "summary.json").is_file()
    assert main(["train", "--resume", str(out), "-q"]) != 0
    assert "trained on 2 data-parallel ranks" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--simulate-ranks", "3", "-q"]) != 0
    assert "resume it on the same number" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--simulate-ranks", "2", "-q"]) == 0
    assert main([*args, "--simulate-ranks", "3", "--out", str(tmp_path / "b")]) != 0
    assert "not a multiple of the 3" in capsys.readouterr().err


def test_the_number_of_ranks_is_part_of_a_checkpoints_config_id():
    from simprec.train.loop import _config_id

    assert _config_id(TrainConfig().resolve()) != _config_id(TrainConfig(ranks=2).resolve())


def _namespace(**kw):
    import argparse

    base = dict(out=None, resume=None, simulate_ranks=None, dist_engine=None,
                dist_timeout=300.0, bucket_cap_mb=25.0)
    return argparse.Namespace(**{**base, **kw})


def test_plan_under_torchrun(tmp_path, monkeypatch):
    from simprec.distributed.command import plan
    from simprec.train import ConfigError

    for key, value in dict(WORLD_SIZE="2", RANK="1", LOCAL_RANK="1").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    with pytest.raises(ConfigError, match="give --out"):
        plan(_namespace(), {})
    with pytest.raises(ConfigError, match="leave --simulate-ranks out"):
        plan(_namespace(out="x", simulate_ranks=2), {})
    given = {}
    p = plan(_namespace(out=str(tmp_path / "run")), given)
    assert (p.ranks, p.rank, given) == (2, 1, {"ranks": 2})
    # a worker restarted by torchrun continues the run its --out names
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    args = _namespace(out=str(tmp_path / "run"))
    assert plan(args, {}).ranks == 2 and args.resume is None
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    given = {}
    plan(args, given)
    assert (args.resume, args.out, given) == (str(tmp_path / "run"), None, {})
