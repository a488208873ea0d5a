"""Gaussian noise sources for sampling.

Two kinds, both producing float32 arrays:

* ``numpy``: numpy's PCG64 generator; fast, the default.
* ``torch``: what ``torch.Generator().manual_seed(seed)`` + ``torch.randn`` give on CPU, bit for bit
  (see :mod:`runtime.torch_rng`). The stream continues across draws, so a sampling loop that draws
  the initial latents and then one noise tensor per step reproduces diffusers' pipelines for the
  same seed.

A :class:`NoiseSource` holds one generator for the whole batch (diffusers' ``generator=g``) or one
per image (diffusers' ``generator=[g0, g1, ...]``), so an image's noise can depend only on its own
seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError, brief
from .torch_rng import TorchCompatibleGenerator

NOISE_KINDS = ("numpy", "torch")
MAX_SEED = 2**64 - 1


class NumpyGenerator:
    """numpy's PCG64 normal generator, float32."""

    def __init__(self, seed: int):
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        return self._rng.standard_normal(tuple(shape), dtype=np.float32)


def _make_generator(kind: str, seed: int):
    if kind == "torch":
        return TorchCompatibleGenerator(seed)
    return NumpyGenerator(seed)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}, got {brief(seed)}")
    return int(seed)


class NoiseSource:
    """Draws [B, ...] float32 noise from one generator for the batch, or one generator per image."""

    def __init__(self, kind: str, seeds: Sequence[int], per_image: bool):
        if kind not in NOISE_KINDS:
            raise InputError(f"unknown noise kind {brief(kind)}; choose one of {', '.join(NOISE_KINDS)}")
        self.kind = kind
        self.seeds = [check_seed(s) for s in seeds]
        self.per_image = per_image
        if not per_image and len(self.seeds) != 1:
            raise InputError("a shared generator takes exactly one seed")
        self._generators = [_make_generator(kind, s) for s in self.seeds]

    @classmethod
    def shared(cls, kind: str, seed: int) -> NoiseSource:
        return cls(kind, [seed], per_image=False)

    @classmethod
    def per_image_seeds(cls, kind: str, seeds: Sequence[int]) -> NoiseSource:
        return cls(kind, seeds, per_image=True)

    def draw(self, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if not self.per_image:
            return self._generators[0].randn(shape)
        if shape[0] != len(self._generators):
            raise InputError(f"batch of {shape[0]} needs {shape[0]} seeds, got {len(self._generators)}")
        return np.concatenate([g.randn((1,) + shape[1:]) for g in self._generators], axis=0)
