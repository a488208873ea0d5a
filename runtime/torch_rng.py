"""``torch.Generator().manual_seed(seed)`` + ``torch.randn`` (CPU, float32), reproduced in numpy.

What torch does, and what this module reproduces:

* the engine is MT19937 seeded with ``init_genrand(seed & 0xffffffff)``; numpy's ``MT19937`` bit
  generator runs the same recurrence once given that key;
* a float uniform is ``(u32 & 0xffffff) * 2**-24``; a double uniform takes 53 bits of
  ``(first << 32) | second``;
* for 16 or more contiguous float32 values, ``normal_fill`` first fills the whole buffer with
  uniforms, then turns each block of 16 into normals by Box-Muller over the pairs (j, j + 8)
  (cos for the first 8, sin for the last 8); when the size is not a multiple of 16 the last 16
  values are redrawn from fresh uniforms and transformed again;
* that transform runs through the vectorised Cephes approximations ``log256_ps`` and
  ``sincos256_ps`` (ATen's ``avx_mathfun.h``), not libm, and the compiler contracts their
  multiply-adds into FMAs; we evaluate the same polynomials in float32 with the same contractions
  (an FMA is exact in float64 for float32 operands, then rounded once), which matches torch's
  AVX2/AVX-512 CPU kernels bit for bit (tests/runtime/test_noise.py);
* below 16 values each normal comes from the double-precision Box-Muller, which caches its second
  value in the generator for the next draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

F32 = np.float32
_MT_N = 624

# Cephes single-precision coefficients, as in avx_mathfun.h.
_LOG_P = (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
)  # fmt: skip
_LOG_Q1, _LOG_Q2 = -2.12194440e-4, 0.693359375
_SQRTHF = 0.707106781186547524
_FOPI = 1.27323954473516  # 4 / pi
_DP = (-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8)  # -pi/4 in three parts
_COSCOF = (2.443315711809948e-005, -1.388731625493765e-003, 4.166664568298827e-002)
_SINCOF = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_TWO_PI_F32 = F32(2.0 * np.pi)


def _fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add: a*b is exact in float64, the sum is rounded (to float32) once."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(F32)


def _log_ps(x: np.ndarray) -> np.ndarray:
    """``log256_ps`` for x in (0, 1] (no denormals or non-positive inputs reach it here)."""
    bits = x.view(np.int32)
    e = ((bits >> 23) - 0x7F).astype(F32) + F32(1)
    m = ((bits & ~0x7F800000) | 0x3F000000).view(F32)  # mantissa scaled to [0.5, 1)
    small = m < F32(_SQRTHF)
    m = (m - F32(1)) + np.where(small, m, F32(0))
    e = e - np.where(small, F32(1), F32(0))
    z = m * m
    y = np.full_like(m, F32(_LOG_P[0]))
    for p in _LOG_P[1:]:
        y = _fma(y, m, F32(p))
    y = _fma(y * m, z, e * F32(_LOG_Q1))
    y = _fma(z, F32(-0.5), y)
    return _fma(e, F32(_LOG_Q2), m + y)


def _sincos_ps(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sincos256_ps`` for x >= 0."""
    j = (x * F32(_FOPI)).astype(np.int32)
    j = (j + 1) & ~1
    y = j.astype(F32)
    for dp in _DP:
        x = _fma(y, F32(dp), x)
    sin_negative = (j & 4) != 0
    cos_negative = (~(j - 2) & 4) != 0
    use_sin_poly = (j & 2) == 0
    z = x * x
    yc = _fma(np.full_like(z, F32(_COSCOF[0])), z, F32(_COSCOF[1]))
    yc = _fma(yc, z, F32(_COSCOF[2])) * z
    yc = _fma(yc, z, -(z * F32(0.5))) + F32(1)
    ys = _fma(np.full_like(z, F32(_SINCOF[0])), z, F32(_SINCOF[1]))
    ys = _fma(ys, z, F32(_SINCOF[2])) * z
    ys = _fma(ys, x, x)
    sin = np.where(use_sin_poly, ys, yc)
    cos = np.where(use_sin_poly, yc, ys)
    return np.where(sin_negative, -sin, sin), np.where(cos_negative, -cos, cos)


def _normal_fill_16(u: np.ndarray) -> np.ndarray:
    """Box-Muller over rows of 16 uniforms, as torch's vectorised ``normal_fill_16``."""
    u = u.reshape(-1, 16)
    radius = np.sqrt(F32(-2) * _log_ps(F32(1) - u[:, :8]))
    sin, cos = _sincos_ps(_TWO_PI_F32 * u[:, 8:])
    return np.concatenate([radius * cos, radius * sin], axis=1).ravel()


def _mt19937_key(seed: int) -> np.ndarray:
    """The MT19937 state torch derives from a seed (``init_genrand`` on the low 32 bits)."""
    key = np.empty(_MT_N, dtype=np.uint32)
    x = seed & 0xFFFFFFFF
    key[0] = x
    for j in range(1, _MT_N):
        x = (1812433253 * (x ^ (x >> 30)) + j) & 0xFFFFFFFF
        key[j] = x
    return key


class TorchCompatibleGenerator:
    """Draws what ``g = torch.Generator().manual_seed(seed)`` then ``torch.randn(shape, generator=g)`` draw."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        # pos=624: the first draw twists the state, as torch's engine does after seeding.
        self._bits.state = {"bit_generator": "MT19937", "state": {"key": _mt19937_key(seed), "pos": _MT_N}}
        self._cached_normal: float | None = None

    def _uint32(self, n: int) -> np.ndarray:
        return self._bits.random_raw(n).astype(np.uint64)

    def uniform_float(self, n: int) -> np.ndarray:
        return (self._uint32(n) & 0xFFFFFF).astype(F32) * F32(1.0 / (1 << 24))

    def _uniform_double(self) -> float:
        hi, lo = (int(v) for v in self._uint32(2))
        return (((hi << 32) | lo) & ((1 << 53) - 1)) * (1.0 / (1 << 53))

    def _normal_double(self) -> float:
        if self._cached_normal is not None:
            value, self._cached_normal = self._cached_normal, None
            return value
        u1 = self._uniform_double()
        u2 = self._uniform_double()
        radius = np.sqrt(-2.0 * np.log1p(-u2))
        theta = 2.0 * np.pi * u1
        self._cached_normal = float(radius * np.sin(theta))
        return float(radius * np.cos(theta))

    def randn(self, shape: Sequence[int]) -> np.ndarray:
        size = int(np.prod(shape, dtype=np.int64))
        if size < 16:
            return np.array([self._normal_double() for _ in range(size)], dtype=F32).reshape(shape)
        out = self.uniform_float(size)
        whole = size - size % 16
        out[:whole] = _normal_fill_16(out[:whole])
        if size % 16:
            out[size - 16 :] = _normal_fill_16(self.uniform_float(16))
        return out.reshape(shape)
