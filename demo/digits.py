"""scikit-learn's bundled handwritten digits (1797 images, 8x8, no download) as the demo model's data."""

from __future__ import annotations

import numpy as np

SIZE = 16  # the demo model's image size: 8x8 digits upscaled 2x


def upscale(images8: np.ndarray) -> np.ndarray:
    """[N, 8, 8] in 0..16 → [N, 1, 16, 16] float32 in [-1, 1], bilinear (half-pixel centers)."""
    x = images8.astype(np.float64) / 16.0
    # separable 2x bilinear with edge clamping: output pixel i samples input at (i + 0.5) / 2 - 0.5
    pos = (np.arange(SIZE) + 0.5) / 2 - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, 7)
    hi = np.clip(lo + 1, 0, 7)
    w = np.clip(pos - np.floor(pos), 0, 1)
    w = np.where(pos < 0, 0.0, w)
    rows = x[:, lo, :] * (1 - w)[None, :, None] + x[:, hi, :] * w[None, :, None]
    out = rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]
    return (out * 2 - 1).astype(np.float32)[:, None]


def load(split: str | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 1, 16, 16] in [-1, 1], labels [N]); ``split`` "a" / "b": a fixed, seeded half each."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = upscale(digits.images), digits.target.astype(np.int64)
    if split is None:
        return images, labels
    order = np.random.default_rng(seed).permutation(len(labels))
    half = order[: len(order) // 2] if split == "a" else order[len(order) // 2 :]
    return images[half], labels[half]
