"""Gaussian noise sources for sampling.

Two kinds, both producing float32 arrays:

* ``numpy``: numpy's PCG64 generator; fast, the default.
* ``torch``: bit-for-bit the uniform stream of ``torch.Generator().manual_seed(seed)`` on CPU, turned
  into normals the way ``torch.randn`` does (Box-Muller over blocks of 16, the last block redrawn
  when the size is not a multiple of 16, and the double-precision path with its cached second
  sample below 16 elements). The stream continues across draws, so a sampling loop that draws the
  initial latents and then one noise tensor per step reproduces diffusers' pipelines for the same
  seed. Below 16 elements values are bit-identical; above, torch's vectorised log/sin/cos make them
  agree to a few float32 ulps (measured: at most 3e-6 absolute).

A :class:`NoiseSource` holds one generator for the whole batch (diffusers' ``generator=g``) or one
per image (diffusers' ``generator=[g0, g1, ...]``), so an image's noise can depend only on its own
seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import InputError

NOISE_KINDS = ("numpy", "torch")
MAX_SEED = 2**64 - 1

_MT_N = 624
_TWO_PI = 2.0 * np.pi


def _mt19937_state(seed: int) -> np.ndarray:
    """The MT19937 key torch derives from a seed (``init_genrand`` on the low 32 bits)."""
    key = np.empty(_MT_N, dtype=np.uint32)
    x = seed & 0xFFFFFFFF
    key[0] = x
    for j in range(1, _MT_N):
        x = (1812433253 * (x ^ (x >> 30)) + j) & 0xFFFFFFFF
        key[j] = x
    return key


class TorchCompatibleGenerator:
    """Reproduces ``torch.Generator().manual_seed(seed)`` + ``torch.randn(shape)`` on CPU, float32."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        # pos=624 makes the first draw twist the state, as torch's engine does after seeding.
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": _mt19937_state(seed), "pos": _MT_N}}
        self._cached_normal: float | None = None

    def _uint32(self, n: int) -> np.ndarray:
        return self._bits.random_raw(n).astype(np.uint64)

    def _uniform_float(self, n: int) -> np.ndarray:
        # at::uniform_real_distribution<float>: 24 random bits of one 32-bit draw.
        return ((self._uint32(n) & 0xFFFFFF).astype(np.float32)) * np.float32(1.0 / (1 << 24))

    def _uniform_double(self) -> float:
        # at::uniform_real_distribution<double>: 53 bits of (first draw << 32 | second draw).
        hi, lo = (int(v) for v in self._uint32(2))
        return (((hi << 32) | lo) & ((1 << 53) - 1)) * (1.0 / (1 << 53))

    @staticmethod
    def _box_muller_16(u: np.ndarray) -> np.ndarray:
        """torch's ``normal_fill_16`` over rows of 16 uniforms: the first 8 give cos, the last 8 sin.

        Evaluated in float64 and rounded once; torch's vectorised float kernel differs from this by
        a few float32 ulps (at most about 3e-6 absolute for standard normals).
        """
        u = u.reshape(-1, 16).astype(np.float64)
        radius = np.sqrt(-2.0 * np.log(1.0 - u[:, :8]))
        theta = _TWO_PI * u[:, 8:]
        return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)], axis=1).astype(np.float32).ravel()

    def _normal_double(self) -> float:
        if self._cached_normal is not None:
            value, self._cached_normal = self._cached_normal, None
            return value
        u1 = self._uniform_double()
        u2 = self._uniform_double()
        radius = np.sqrt(-2.0 * np.log1p(-u2))
        theta = _TWO_PI * u1
        self._cached_normal = float(radius * np.sin(theta))
        return float(radius * np.cos(theta))

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        if size < 16:
            out = np.array([self._normal_double() for _ in range(size)], dtype=np.float32)
            return out.reshape(shape)
        out = self._uniform_float(size)
        whole = size - size % 16
        out[:whole] = self._box_muller_16(out[:whole])
        if size % 16:
            out[size - 16 :] = self._box_muller_16(self._uniform_float(16))
        return out.reshape(shape)


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
        raise InputError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


class NoiseSource:
    """Draws [B, ...] float32 noise from one generator for the batch, or one generator per image."""

    def __init__(self, kind: str, seeds: Sequence[int], per_image: bool):
        if kind not in NOISE_KINDS:
            raise InputError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
        self.kind = kind
        self.seeds = [check_seed(s) for s in seeds]
        self.per_image = per_image
        if not per_image and len(self.seeds) != 1:
            raise InputError("a shared generator takes exactly one seed")
        self._generators = [_make_generator(kind, s) for s in self.seeds]

    @classmethod
    def shared(cls, kind: str, seed: int) -> "NoiseSource":
        return cls(kind, [seed], per_image=False)

    @classmethod
    def per_image_seeds(cls, kind: str, seeds: Sequence[int]) -> "NoiseSource":
        return cls(kind, seeds, per_image=True)

    def draw(self, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        if not self.per_image:
            return self._generators[0].randn(shape)
        if shape[0] != len(self._generators):
            raise InputError(f"batch of {shape[0]} needs {shape[0]} seeds, got {len(self._generators)}")
        return np.concatenate([g.randn((1,) + shape[1:]) for g in self._generators], axis=0)
