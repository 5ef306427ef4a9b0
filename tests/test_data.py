"""Tests of simprec.data: shipped digits, the CPython-docs corpus, resumable batch streams."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from simprec.data import (
    DATASETS,
    VOCAB,
    BatchIterator,
    CharTokenizer,
    Dataset,
    LMBatchSampler,
    TextDataset,
    batches,
    corpus_sha256,
    corpus_text,
    get_dataset,
    load_digits,
    load_text,
    sequential_windows,
    unigram_entropy,
)

# ----------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_ranges():
    ds = load_digits()
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape[1:] == (64,) and ds.x_test.shape[1:] == (64,)
    assert len(ds.x_train) + len(ds.x_test) == 1797
    assert (len(ds.x_train), len(ds.x_test)) == (1438, 359)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert len(x) == len(y)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert np.array_equal(x * 16, np.round(x * 16))  # k/16: exact in fp16 too
        assert set(np.unique(y)) == set(range(10))
    assert ds.meta["n_classes"] == 10 and ds.meta["license"] == "CC BY 4.0"


def test_digits_images_option():
    flat, img = load_digits(seed=3), load_digits(seed=3, flat=False)
    assert img.x_train.shape == (len(flat.x_train), 1, 8, 8)
    assert np.array_equal(img.x_train.reshape(len(img.x_train), 64), flat.x_train)
    assert img.meta["input_shape"] == (1, 8, 8) and flat.meta["input_shape"] == (64,)


def test_digits_class_counts_match_uci():
    ds = load_digits()
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert counts.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_digits_file_matches_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    ref = sklearn_datasets.load_digits()
    ds = load_digits()
    x = np.empty((1797, 64), np.float32)
    y = np.empty(1797, np.int64)
    x[ds.meta["train_index"]], x[ds.meta["test_index"]] = ds.x_train, ds.x_test
    y[ds.meta["train_index"]], y[ds.meta["test_index"]] = ds.y_train, ds.y_test
    assert np.array_equal(x * 16, ref.data) and np.array_equal(y, ref.target)


def test_digits_split_deterministic_and_seeded():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.meta["test_index"], c.meta["test_index"])


def test_digits_split_disjoint_stratified():
    ds = load_digits(seed=7, test_fraction=0.25)
    tr, te = ds.meta["train_index"], ds.meta["test_index"]
    assert len(np.intersect1d(tr, te)) == 0
    assert np.array_equal(np.union1d(tr, te), np.arange(1797))
    full = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - 0.25 * full) <= 0.5)
    with pytest.raises(ValueError):
        load_digits(test_fraction=1.0)


# ----------------------------------------------------------------------------- text


def test_corpus_vocab_and_fingerprint():
    text = corpus_text()
    assert len(text) > 100_000
    assert set(text) <= set(VOCAB) and len(VOCAB) == 96
    assert corpus_text() is text  # computed once
    assert len(corpus_sha256()) == 64 and corpus_sha256() == corpus_sha256(text)
    assert corpus_sha256("a") != corpus_sha256("b")


def test_tokenizer_round_trip():
    tok = CharTokenizer()
    assert tok.vocab_size == 96 and tok.vocab[0] == "\n" and tok.vocab[1] == " "
    s = 'def f(x):\n    return {"a": x ~ 1}  # ok'
    ids = tok.encode(s)
    assert ids.dtype == np.int64 and ids.shape == (len(s),)
    assert tok.decode(ids) == s and tok.decode(list(ids)) == s
    assert tok.decode(tok.encode(corpus_text())) == corpus_text()
    assert tok.encode("").shape == (0,) and tok.decode([]) == ""
    with pytest.raises(ValueError, match="vocabulary"):
        tok.encode("caf\u00e9")
    with pytest.raises(ValueError):
        tok.decode([96])
    small = CharTokenizer("ba")
    assert small.encode("ab").tolist() == [1, 0] and small.decode([0, 1]) == "ba"


def test_load_text_split_by_position():
    ds = load_text(block_size=32, seed=0)
    assert isinstance(ds, TextDataset)
    assert ds.train.dtype == np.int64 and ds.val.dtype == np.int64
    whole = ds.tokenizer.encode(corpus_text())
    assert np.array_equal(np.concatenate([ds.train, ds.val]), whole)
    assert len(ds.train) == int(len(whole) * 0.9)
    assert ds.meta["sha256"] == corpus_sha256() and ds.meta["vocab_size"] == 96
    assert ds.train.min() >= 0 and ds.train.max() < 96


def test_unigram_entropy():
    assert unigram_entropy(np.array([3, 3, 3])) == 0.0
    assert unigram_entropy(np.arange(8)) == pytest.approx(np.log(8))
    h = load_text().meta["unigram_entropy_train"]
    # English + code over 96 symbols: well above 2 nats, below the uniform log(96) = 4.56.
    assert 2.8 < h < 3.7
    assert h == pytest.approx(unigram_entropy(load_text().train))


# ----------------------------------------------------------------------------- batching


def _collect(it: BatchIterator, k: int):
    return [it.next_batch() for _ in range(k)]


def _same(a, b):
    assert len(a) == len(b)
    for ba, bb in zip(a, b, strict=True):
        assert all(np.array_equal(u, v) for u, v in zip(ba, bb, strict=True))


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_iterator_epochs(drop_last):
    x, y = np.arange(10) * 10, np.arange(10)
    it = BatchIterator((x, y), 4, seed=5, drop_last=drop_last)
    assert len(it) == (2 if drop_last else 3)
    first = list(it)
    assert it.epoch == 1 and it.position == 0 and len(first) == len(it)
    seen = np.concatenate([yb for _, yb in first])
    assert len(np.unique(seen)) == len(seen) == (8 if drop_last else 10)
    assert all(np.array_equal(xb, yb * 10) for xb, yb in first)
    second = list(it)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    _same(first, list(batches((x, y), 4, seed=5, epoch=0, drop_last=drop_last)))
    _same(second, list(batches((x, y), 4, seed=5, epoch=1, drop_last=drop_last)))


def test_batch_iterator_seeds():
    y = np.arange(100)
    a = [b[0] for b in BatchIterator((y,), 10, seed=0)]
    b = [b[0] for b in BatchIterator((y,), 10, seed=0)]
    c = [b[0] for b in BatchIterator((y,), 10, seed=1)]
    _same([(u,) for u in a], [(u,) for u in b])
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    plain = np.concatenate([b[0] for b in BatchIterator((y,), 10, shuffle=False)])
    assert np.array_equal(plain, y)


@pytest.mark.parametrize("k", [0, 1, 3, 4, 5, 11])
def test_batch_iterator_resume_exact(k):
    ds = load_digits()
    arrays = (ds.x_train, ds.y_train)
    ref = BatchIterator(arrays, 400, seed=9)  # 4 batches per epoch, last one short
    expected = _collect(ref, k + 6)
    it = BatchIterator(arrays, 400, seed=9)
    _collect(it, k)
    state = json.loads(json.dumps(it.state_dict()))
    assert all(isinstance(v, int) for v in state.values())
    resumed = BatchIterator(arrays, 400, seed=9)
    resumed.load_state_dict(state)
    _same(_collect(resumed, 6), expected[k:])


def test_batch_iterator_resume_mid_epoch_for_loop():
    y = np.arange(23)
    it = BatchIterator((y,), 5, seed=2)
    gen = iter(it)
    next(gen), next(gen)
    resumed = BatchIterator((y,), 5, seed=2)
    resumed.load_state_dict(it.state_dict())
    rest = [b[0] for b in resumed]  # the rest of epoch 0, then stop
    assert len(rest) == 3 and resumed.epoch == 1
    _same([(b,) for b in rest], [(b[0],) for b in gen])


def test_batch_iterator_state_checks():
    it = BatchIterator((np.arange(10),), 3)
    with pytest.raises(ValueError, match="batch_size"):
        BatchIterator((np.arange(10),), 4).load_state_dict(it.state_dict())
    with pytest.raises(ValueError, match="n="):
        BatchIterator((np.arange(11),), 3).load_state_dict(it.state_dict())
    with pytest.raises(ValueError):
        BatchIterator((np.arange(10), np.arange(9)), 3)
    with pytest.raises(ValueError):
        BatchIterator((np.arange(3),), 4, drop_last=True)


def _npz_round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("k", [0, 1, 7])
@pytest.mark.parametrize("via", ["json", "npz"])
def test_lm_sampler_resume_exact(k, via):
    tokens = load_text().train
    ref = LMBatchSampler(tokens, 8, 16, seed=3)
    expected = [ref.next_batch() for _ in range(k + 5)]
    s = LMBatchSampler(tokens, 8, 16, seed=3)
    for _ in range(k):
        s.next_batch()
    state = s.state_dict()
    assert all(isinstance(v, (int, str)) for v in state.values())
    state = json.loads(json.dumps(state)) if via == "json" else _npz_round_trip(state)
    resumed = LMBatchSampler(tokens, 8, 16, seed=12345)
    resumed.load_state_dict(state)
    assert resumed.step == k and resumed.rng.bit_generator.state == s.rng.bit_generator.state
    _same([resumed.next_batch() for _ in range(5)], expected[k:])


def test_lm_sampler_batches():
    ds = load_text(block_size=16, seed=4)
    x, y = ds.sampler(6).next_batch()
    assert x.shape == y.shape == (6, 16) and x.dtype == y.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])
    x2, _ = ds.sampler(6).next_batch()
    x3, _ = ds.sampler(6, seed=5).next_batch()
    assert np.array_equal(x, x2) and not np.array_equal(x, x3)
    tokens = np.arange(11)  # only one window of 11 tokens fits block_size 10
    xb, yb = LMBatchSampler(tokens, 3, 10).next_batch()
    assert np.array_equal(xb, np.tile(np.arange(10), (3, 1))) and np.array_equal(yb, xb + 1)
    with pytest.raises(ValueError):
        LMBatchSampler(np.arange(10), 3, 10)


def test_sequential_windows():
    tokens = np.arange(23)
    out = list(sequential_windows(tokens, 5, 3))
    xs = np.concatenate([x for x, _ in out])
    ys = np.concatenate([y for _, y in out])
    assert [len(x) for x, _ in out] == [3, 1]
    assert np.array_equal(xs, np.arange(20).reshape(4, 5)) and np.array_equal(ys, xs + 1)
    ds = load_text(block_size=64)
    n = sum(len(x) for x, _ in ds.eval_batches(32))
    assert n == (len(ds.val) - 1) // 64


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(DATASETS) == {"digits", "text"}
    assert isinstance(get_dataset("digits", seed=1), Dataset)
    assert get_dataset("text", block_size=8, seed=0).block_size == 8
    with pytest.raises(ValueError, match="digits, text"):
        get_dataset("mnist")
