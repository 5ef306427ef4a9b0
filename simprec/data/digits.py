"""The 8x8 handwritten digits, shipped with simprec (no network, no scikit-learn at run time).

Source: the test set (``optdigits.tes``, 1,797 images, 10 classes) of "Optical Recognition of
Handwritten Digits", E. Alpaydin and C. Kaynak (1998), UCI Machine Learning Repository,
https://doi.org/10.24432/C50P49 , licensed CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/). The copy bundled with scikit-learn was exported
once to ``digits.npz`` by ``scripts/export_digits.py``: ``images`` uint8 (1797, 8, 8) with
values 0..16 (counts of "on" pixels in 4x4 blocks of a 32x32 bitmap), ``labels`` uint8 0..9.

Inputs are scaled by 1/16, so every pixel is k/16: exact in fp32, fp16 and bf16 alike, and a
cast of the input to a half format loses nothing.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

__all__ = ["Dataset", "load_digits", "stratified_split"]

CITATION = (
    "E. Alpaydin and C. Kaynak (1998). Optical Recognition of Handwritten Digits. "
    "UCI Machine Learning Repository. https://doi.org/10.24432/C50P49"
)
LICENSE = "CC BY 4.0"


@dataclass(eq=False)
class Dataset:
    """A supervised dataset split into train and test arrays, with a ``meta`` dict.

    ``meta`` holds what a run should record: name, source, licence, seed, split indices into the
    original order, the number of classes and a sha256 fingerprint of the raw data.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """The shipped arrays (read-only): images uint8 (1797, 8, 8), labels uint8 (1797,)."""
    with resources.files(__package__).joinpath("digits.npz").open("rb") as f, np.load(f) as z:
        images, labels = z["images"], z["labels"]
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: ``(train_index, test_index)``, each sorted ascending.

    For each class ``c`` in increasing order, its indices are shuffled by one shared generator
    (``np.random.default_rng(seed)``) and the first ``floor(n_c * test_fraction + 0.5)`` go to
    the test set. Every class is represented in both splits in proportion.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:int(np.floor(len(idx) * test_fraction + 0.5))])
    test_index = np.sort(np.concatenate(test)).astype(np.int64)
    train_index = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test_index)
    return train_index, test_index


def load_digits(*, flat: bool = True, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """The 1,797 digits as float32 in [0, 1] (pixel / 16), split by :func:`stratified_split`.

    ``x`` is ``(N, 64)`` when ``flat`` (for an MLP), else ``(N, 1, 8, 8)`` (NCHW, for a CNN);
    ``y`` is int64 in 0..9. Train and test keep the original order of the file: shuffling is
    the batch iterator's job. With the defaults: 1,438 train and 359 test examples.
    """
    images, labels = _raw()
    train_index, test_index = stratified_split(labels, test_fraction, seed)
    x = images.astype(np.float32) / np.float32(16)
    x = x.reshape(len(x), 64) if flat else x.reshape(len(x), 1, 8, 8)
    y = labels.astype(np.int64)
    meta = {
        "name": "digits",
        "source": "UCI Optical Recognition of Handwritten Digits, test set (optdigits.tes), "
                  "via scikit-learn",
        "citation": CITATION,
        "license": LICENSE,
        "n_classes": 10,
        "input_shape": tuple(x.shape[1:]),
        "split": "stratified",
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "train_index": train_index,
        "test_index": test_index,
        "sha256": hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest(),
    }
    return Dataset(x[train_index], y[train_index], x[test_index], y[test_index], meta)
