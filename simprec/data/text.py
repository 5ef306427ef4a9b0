"""A character-level text corpus built at run time from CPython's own documentation.

Every CPython installation ships ``pydoc_data.topics.topics``, the text of the reference
manual's topics that ``help()`` shows (79 topics, about 0.46 MB on 3.11): real English prose
interleaved with Python grammar and code, with no download and no file of ours. The text is
the Python documentation (Python Software Foundation License Version 2); simprec reads it from
the running interpreter and does not redistribute it.

The corpus (:func:`corpus_text`) is built by this exact rule:

1. join ``topics[k]`` for the keys ``k`` in sorted order, separated by ``"\\n"``;
2. normalise line ends (``"\\r\\n"`` and ``"\\r"`` to ``"\\n"``), expand tabs (``expandtabs(8)``);
3. map typographic punctuation to ASCII (:data:`ASCII_MAP`: curly quotes to straight quotes,
   ellipsis to ``...``, em dash to ``--``, en dash to ``-``);
4. drop every remaining character outside :data:`VOCAB` (on 3.10-3.13 that is 3 characters:
   two "ß" and one "°").

:data:`VOCAB` is fixed: ``"\\n"`` and the 95 printable ASCII characters (space to ``~``), 96
tokens in code-point order, so the vocabulary and the model's shapes do not depend on the Python
version. The text does: each CPython release edits its documentation, so the corpus differs
between versions (and may between patch releases). Record :func:`corpus_sha256` with a run.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .batching import LMBatchSampler, sequential_windows

__all__ = [
    "ASCII_MAP", "VOCAB", "CharTokenizer", "TextDataset", "corpus_sha256", "corpus_text",
    "load_text", "unigram_entropy",
]

VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
ASCII_MAP = {
    "\u2018": "'", "\u2019": "'",    # single curly quotes
    "\u201c": '"', "\u201d": '"',    # double curly quotes
    "\u2026": "...",                 # horizontal ellipsis
    "\u2014": "--", "\u2013": "-",   # em dash, en dash
}


@functools.lru_cache(maxsize=1)
def corpus_text() -> str:
    """The corpus of the running interpreter, built by the rule in the module docstring."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    text = text.replace("\r\n", "\n").replace("\r", "\n").expandtabs(8)
    text = text.translate(str.maketrans(ASCII_MAP))
    keep = set(VOCAB)
    return "".join(ch for ch in text if ch in keep)


def corpus_sha256(text: str | None = None) -> str:
    """Hex sha256 of the UTF-8 corpus text (of :func:`corpus_text` when ``text`` is None)."""
    return hashlib.sha256((corpus_text() if text is None else text).encode("utf-8")).hexdigest()


class CharTokenizer:
    """Characters to int64 ids and back; token ``i`` is ``vocab[i]``.

    ``encode`` raises ValueError on a character outside the vocabulary (it never drops text
    silently); ``decode`` accepts any integer sequence or array of ids.
    """

    def __init__(self, vocab: Iterable[str] = VOCAB):
        self.vocab = list(vocab)
        if any(len(ch) != 1 for ch in self.vocab) or len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab must be distinct single characters")
        self.stoi = {ch: i for i, ch in enumerate(self.vocab)}
        self._codes = np.array([ord(ch) for ch in self.vocab], dtype=np.uint32)
        self._table = np.full(int(self._codes.max()) + 1, -1, dtype=np.int64)
        self._table[self._codes] = np.arange(len(self.vocab))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        ids = np.full(len(codes), -1, dtype=np.int64)
        known = codes < len(self._table)
        ids[known] = self._table[codes[known]]
        if (ids < 0).any():
            bad = text[int(np.argmax(ids < 0))]
            raise ValueError(f"character {bad!r} is not in the vocabulary")
        return ids

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats per token of the empirical token frequencies of ``tokens``.

    The cross-entropy of the best context-free model: a language model that learns anything
    beyond letter frequencies must get its loss well below it (about 3.25 nats on the 3.11
    train split).
    """
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).reshape(-1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@dataclass(eq=False)
class TextDataset:
    """Train/validation token arrays (int64, 1-D) of one corpus, with its tokenizer.

    ``meta`` holds what a run should record: the corpus sha256, the Python version, the split
    sizes, the vocabulary and the train split's unigram entropy.
    """

    train: np.ndarray
    val: np.ndarray
    tokenizer: CharTokenizer
    block_size: int
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def sampler(self, batch_size: int, *, split: str = "train",
                seed: int | None = None) -> LMBatchSampler:
        """Random windows of ``block_size + 1`` tokens (seed defaults to the dataset's seed)."""
        return LMBatchSampler(self._split(split), batch_size, self.block_size,
                              seed=self.seed if seed is None else seed)

    def eval_batches(self, batch_size: int, *, split: str = "val"):
        """Every non-overlapping window of ``split`` in order (see ``sequential_windows``)."""
        return sequential_windows(self._split(split), self.block_size, batch_size)

    def _split(self, split: str) -> np.ndarray:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return self.train if split == "train" else self.val


def load_text(block_size: int = 64, seed: int = 0, *, val_fraction: float = 0.1) -> TextDataset:
    """The CPython-documentation corpus, encoded and split by position (not shuffled).

    The first ``floor(len * (1 - val_fraction))`` characters are the train split, the rest the
    validation split. ``seed`` is the default seed of :meth:`TextDataset.sampler`; the split
    itself does not depend on it.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = corpus_text()
    tokenizer = CharTokenizer(VOCAB)
    tokens = tokenizer.encode(text)
    n_train = int(len(tokens) * (1.0 - val_fraction))
    train, val = tokens[:n_train], tokens[n_train:]
    if min(len(train), len(val)) < block_size + 1:
        raise ValueError(f"block_size {block_size} is too long for a split of this corpus")
    meta = {
        "name": "text",
        "source": "pydoc_data.topics.topics of the running CPython",
        "license": "Python documentation, PSF License Version 2 (read at run time, not shipped)",
        "python_version": platform.python_version(),
        "sha256": corpus_sha256(text),
        "n_chars": len(text),
        "n_train": len(train),
        "n_val": len(val),
        "val_fraction": float(val_fraction),
        "vocab": "".join(tokenizer.vocab),
        "vocab_size": tokenizer.vocab_size,
        "block_size": int(block_size),
        "seed": int(seed),
        "unigram_entropy_train": unigram_entropy(train),
    }
    return TextDataset(train, val, tokenizer, int(block_size), int(seed), meta)
