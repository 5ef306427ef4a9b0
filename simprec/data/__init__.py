"""Small real datasets that need no network at run time, and resumable batch streams.

* ``digits``: the UCI 8x8 handwritten digits (1,797 images, CC BY 4.0), shipped as
  ``digits.npz`` (see :mod:`simprec.data.digits`).
* ``text``: a character corpus built from CPython's bundled documentation
  (``pydoc_data.topics``), computed at run time (see :mod:`simprec.data.text`).

Everything here is plain NumPy (no simprec Tensor), so the package sits at the bottom of the
layering. See ``docs/data.md``.
"""

from __future__ import annotations

from .batching import BatchIterator, LMBatchSampler, batches, epoch_order, sequential_windows
from .digits import Dataset, load_digits, stratified_split
from .text import (
    VOCAB,
    CharTokenizer,
    TextDataset,
    corpus_sha256,
    corpus_text,
    load_text,
    unigram_entropy,
)

__all__ = [
    "DATASETS", "VOCAB", "BatchIterator", "CharTokenizer", "Dataset", "LMBatchSampler",
    "TextDataset", "batches", "corpus_sha256", "corpus_text", "epoch_order", "get_dataset",
    "load_digits", "load_text", "sequential_windows", "stratified_split", "unigram_entropy",
]

DATASETS = {"digits": load_digits, "text": load_text}


def get_dataset(name: str, **kwargs):
    """``DATASETS[name](**kwargs)``; ValueError listing the valid names on an unknown name."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}") from None
    return loader(**kwargs)
