"""Noise-schedule tables computed exactly as diffusers computes them, in numpy.

diffusers builds betas with ``torch.linspace`` in float32 and takes ``torch.cumprod`` of float32
alphas, which accumulates in double on CPU and rounds each partial product to float32; naive numpy
(float64 linspace, float32 cumprod) drifts from that by several ulps. These functions reproduce
torch's arithmetic so that the tables match diffusers element for element.

Where torch calls a transcendental function (``sqrt``, ``** 0.5``, ``exp``, ``log``) it goes to Intel
MKL's vector math library, whose result depends on the CPU: MKL picks a kernel by vendor and ISA,
and on an Intel AVX-512 CPU about 0.7 % of float32 square roots are one ulp off the correctly rounded
value, on an AMD EPYC about 20 % (tests/runtime/torch_arith.py shows it). No numpy code can equal
all of them, so the tables use correctly rounded functions, the same on every CPU: ``np.sqrt``
(IEEE), and :func:`f32_log` / :func:`f32_exp` (float64, rounded once), not numpy's float32 exp/log,
whose SIMD kernels also differ by CPU. The tests bound the difference from diffusers per CPU.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InputError, SchedulerConfigError, brief
from .config import SchedulerConfig


def torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU.

    torch computes ``step = (end - start) / (steps - 1)`` in float32, then the first half as
    ``start + step * i`` and the second half as ``end - step * (steps - 1 - i)``, each a fused
    multiply-add (one rounding). float32 * integer is exact in float64, so float64 emulates the FMA.
    """
    if steps == 1:
        return np.array([start], dtype=np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64((end32 - start32) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    out = np.where(i < steps // 2, np.float64(start32) + step * i, np.float64(end32) - step * (steps - 1 - i))
    return out.astype(np.float32)


def _betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' ``betas_for_alpha_bar`` with the cosine transform (Python floats, then float32)."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return np.array(betas, dtype=np.float32)


def f32_exp(x) -> np.ndarray:
    """float32 exp, correctly rounded (but for ties closer than float64 resolves), on every CPU."""
    return np.exp(np.asarray(x, dtype=np.float64)).astype(np.float32)


def f32_log(x) -> np.ndarray:
    """float32 log, correctly rounded (as :func:`f32_exp`); log(0) = -inf without a warning."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(x, dtype=np.float64)).astype(np.float32)


def _sigmoid_f32(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def cumprod_f32(x: np.ndarray) -> np.ndarray:
    """``torch.cumprod`` of a float32 tensor on CPU: double accumulator, float32 results."""
    return np.cumprod(x.astype(np.float64)).astype(np.float32)


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """diffusers' ``rescale_zero_terminal_snr`` in float32."""
    alphas_bar_sqrt = np.sqrt(cumprod_f32(np.float32(1.0) - betas))
    first, last = alphas_bar_sqrt[0], alphas_bar_sqrt[-1]
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt * alphas_bar_sqrt
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (np.float32(1.0) - alphas).astype(np.float32)


def betas(config: SchedulerConfig) -> np.ndarray:
    n = config.num_train_timesteps
    if config.trained_betas is not None:
        out = np.array(config.trained_betas, dtype=np.float32)
    elif config.beta_schedule == "linear":
        out = torch_linspace_f32(config.beta_start, config.beta_end, n)
    elif config.beta_schedule == "scaled_linear":
        root = torch_linspace_f32(config.beta_start**0.5, config.beta_end**0.5, n)
        out = root * root
    elif config.beta_schedule == "squaredcos_cap_v2":
        out = _betas_for_alpha_bar(n)
    else:  # sigmoid
        out = _sigmoid_f32(torch_linspace_f32(-6, 6, n)) * np.float32(config.beta_end - config.beta_start) + np.float32(
            config.beta_start
        )
    if config.rescale_betas_zero_snr:
        out = _rescale_zero_terminal_snr(out)
    return out.astype(np.float32)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    return cumprod_f32(np.float32(1.0) - betas(config))


def step_alphas(
    config: SchedulerConfig, num_inference_steps: int, final_alpha: np.float32 | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(timesteps, previous timesteps, alpha_prod at each, alpha_prod at each previous) for a DDPM-style
    loop. The previous timestep is the next table entry, -1 after the last step, where alpha_prod is
    ``final_alpha`` (1 by default)."""
    ts = timesteps(config, num_inference_steps)
    prev = np.append(ts[1:], -1).astype(np.int64)
    ac = alphas_cumprod(config)
    final = np.float32(1.0) if final_alpha is None else final_alpha
    a_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], final).astype(np.float32)
    return ts, prev, ac[ts], a_prev


def as_f32(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def check_steps(num_inference_steps, num_train_timesteps: int) -> int:
    if (
        isinstance(num_inference_steps, bool)
        or not isinstance(num_inference_steps, (int, np.integer))
        or not 1 <= num_inference_steps <= num_train_timesteps
    ):
        raise InputError(
            f"steps must be a whole number from 1 to {num_train_timesteps} (the scheduler's num_train_timesteps), "
            f"got {brief(num_inference_steps)}"
        )
    return int(num_inference_steps)


def spaced_timesteps(config: SchedulerConfig, k: int, points: int | None = None) -> np.ndarray:
    """diffusers' ``timestep_spacing`` (descending int64, unchecked): ``k`` timesteps out of ``points``
    spaced points (``k`` for DDPM/DDIM; DPM-Solver spaces ``k + 1`` and drops the last). Trailing
    spacing takes no extra point."""
    n_train, points = config.num_train_timesteps, points or k
    if config.timestep_spacing == "linspace":
        return np.linspace(0, n_train - 1, points).round()[::-1][:k].astype(np.int64)
    if config.timestep_spacing == "leading":
        return (np.arange(0, points) * (n_train // points)).round()[::-1][:k].astype(np.int64) + config.steps_offset
    return np.round(np.arange(n_train, 0, -n_train / k)).astype(np.int64) - 1  # trailing


def timesteps(config: SchedulerConfig, num_inference_steps: int) -> np.ndarray:
    """The descending int64 timesteps of ``set_timesteps(num_inference_steps)``."""
    n_train = config.num_train_timesteps
    k = check_steps(num_inference_steps, n_train)
    out = spaced_timesteps(config, k)
    if out.max() >= n_train or out.min() < 0:
        raise SchedulerConfigError(
            f"{k} steps with timestep_spacing={config.timestep_spacing!r} and steps_offset={config.steps_offset} "
            f"give timestep {int(out.max())}, outside 0..{n_train - 1}; use fewer steps or steps_offset=0"
        )
    return np.ascontiguousarray(out)
