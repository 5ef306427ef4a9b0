"""Export the 8x8 handwritten digits from scikit-learn to ``simprec/data/digits.npz``, once.

simprec ships the digits as a small compressed file so that it needs neither scikit-learn nor a
network at run time. This script is the provenance of that file: run it (with scikit-learn
installed) to regenerate it; the arrays are identical for every scikit-learn version that
bundles the same copy.

Source: the test set ("optdigits.tes", 1,797 images) of the UCI ML repository's "Optical
Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998), licence CC BY 4.0,
https://doi.org/10.24432/C50P49 , as bundled by scikit-learn (``sklearn.datasets.load_digits``).

Usage: python scripts/export_digits.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "simprec" / "data" / "digits.npz"


def main() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    # The pixels are counts of "on" pixels in 4x4 blocks: integers 0..16, so uint8 is lossless.
    assert np.array_equal(images, np.round(images)) and images.min() >= 0 and images.max() <= 16
    assert set(np.unique(labels)) == set(range(10))
    images = images.astype(np.uint8)
    labels = labels.astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=labels)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); sha256(images+labels) = {digest}")


if __name__ == "__main__":
    main()
