"""The noise levels of diffusers' multistep exponential-integrator solvers, shared by DPM-Solver++
(:mod:`.dpmpp`) and UniPC (:mod:`.unipc`).

Both schedulers (``DPMSolverMultistepScheduler``, ``UniPCMultistepScheduler``) write the VP schedule as
sigmas, ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, one per inference step plus a final one, and step
in lambda = log(alpha_t / sigma_t) with ``alpha_t = 1 / sqrt(sigma^2 + 1)``, ``sigma_t = sigma * alpha_t``.
Their ``set_timesteps`` pick the steps one of two ways:

* spaced timesteps (``timestep_spacing`` linspace/leading/trailing, K + 1 points with the last dropped) and
  the training sigmas at them;
* Karras et al. 2022's schedule (``use_karras_sigmas``, rho = 7, between the smallest and largest training
  sigma), with each sigma's timestep interpolated in log sigma and rounded.

and end at ``final_sigmas_type`` "zero" (a last step to the data) or "sigma_min" (the smallest training
sigma; UniPC's Karras schedule ends at its own last sigma). As in :mod:`.tables`, the arithmetic is
diffusers' float32 with correctly rounded square roots, logs and exps (identical on every CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .config import SchedulerConfig, choice
from .tables import alphas_cumprod, check_steps, f32_log, spaced_timesteps

F32 = np.float32
FINAL_SIGMAS = ("zero", "sigma_min")
KARRAS_RHO = 7.0


@dataclass(frozen=True)
class SigmaSchedule:
    """K steps: ``timesteps`` int64 [K]; float32 [K + 1] (the last entry: the final noise level):
    ``alpha``, ``sigma`` (alpha_t, sigma_t) and ``lam`` (log alpha_t - log sigma_t, +inf at sigma 0)."""

    timesteps: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    lam: np.ndarray


def validate_sigma_options(config: SchedulerConfig) -> None:
    """The keys of this module both samplers take (their own keys they check themselves)."""
    choice("final_sigmas_type", config.final_sigmas_type, FINAL_SIGMAS)


def training_alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """alpha_bar as these schedulers hold it: with zero-terminal-SNR rescaling the last one is 2^-24, not 0
    (so the first sigma is finite)."""
    ac = alphas_cumprod(config)
    if config.rescale_betas_zero_snr:
        ac[-1] = F32(2.0**-24)
    return ac


def _sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """diffusers' ``_sigma_to_t``: the (fractional) training timestep of each sigma, linear in log sigma."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigma))


def karras_sigmas(train_sigmas: np.ndarray, k: int) -> np.ndarray:
    """Karras et al. 2022 (eq. 5), rho 7, from the largest to the smallest training sigma (float64, descending)."""
    ramp = np.linspace(0, 1, k)
    lo, hi = float(train_sigmas[0]) ** (1 / KARRAS_RHO), float(train_sigmas[-1]) ** (1 / KARRAS_RHO)
    return (hi + ramp * (lo - hi)) ** KARRAS_RHO


def _check_spaced(config: SchedulerConfig, k: int, sampler: str) -> np.ndarray:
    def spaced(j: int) -> np.ndarray:
        return spaced_timesteps(config, j, points=j + 1)

    def usable(ts: np.ndarray) -> bool:
        return len(np.unique(ts)) == len(ts) and 0 <= ts.min() and ts.max() < config.num_train_timesteps

    ts = spaced(k)
    if not usable(ts):
        most = max((j for j in range(1, k) if usable(spaced(j))), default=0)
        raise InputError(
            f"{sampler} with {k} steps and timestep_spacing={config.timestep_spacing!r} repeats or leaves the "
            f"timestep range (the solver would divide by zero); use at most {most} steps"
        )
    return ts


def custom_timesteps(config: SchedulerConfig, timesteps, sampler: str) -> np.ndarray:
    """The steps given outright (``set_timesteps(timesteps=...)``): strictly descending training timesteps."""
    n = config.num_train_timesteps
    ts = np.asarray(timesteps)
    if ts.ndim != 1 or not len(ts) or not np.issubdtype(ts.dtype, np.integer):
        raise InputError(f"{sampler} timesteps must be a non-empty list of whole numbers")
    if np.any(np.diff(ts) >= 0) or ts[0] >= n or ts[-1] < 0:
        raise InputError(f"{sampler} timesteps must descend strictly within 0..{n - 1}, got {ts.tolist()}")
    if config.use_karras_sigmas:
        raise InputError(f"{sampler} takes no timesteps with use_karras_sigmas (diffusers refuses the pair); give steps")
    return ts.astype(np.int64)


def sigma_schedule(config: SchedulerConfig, num_inference_steps: int | None, sampler: str,
                   karras_final_is_own: bool = False, timesteps=None) -> SigmaSchedule:
    """The schedule of ``set_timesteps(num_inference_steps)``, or of ``set_timesteps(timesteps=...)`` (DPM-Solver's
    custom timesteps: the training sigmas at them); ``karras_final_is_own``: a Karras schedule with final sigma
    "sigma_min" ends at its own last sigma (UniPC) rather than the training one (DPM-Solver)."""
    ac = training_alphas_cumprod(config)
    one = F32(1.0)
    train_sigmas = np.sqrt((one - ac) / ac).astype(F32)
    sigma_min = train_sigmas[0]
    if timesteps is not None:
        ts = custom_timesteps(config, timesteps, sampler)
        sigmas = train_sigmas[ts]
    elif config.use_karras_sigmas:
        k = check_steps(num_inference_steps, config.num_train_timesteps)
        sigmas = karras_sigmas(train_sigmas, k)
        t = _sigma_to_t(sigmas, f32_log(train_sigmas))  # each sigma's column on its own, as diffusers' per-sigma calls
        # diffusers rounds, but for the cosine schedule DPM-Solver keeps the fraction, truncated to int64
        keep_fraction = not karras_final_is_own and config.beta_schedule == "squaredcos_cap_v2"
        ts = (np.trunc(t) if keep_fraction else np.round(t)).astype(np.int64)
        if karras_final_is_own:
            sigma_min = sigmas[-1]
    else:
        ts = _check_spaced(config, check_steps(num_inference_steps, config.num_train_timesteps), sampler)
        sigmas = train_sigmas[ts]
    final = F32(0.0) if config.final_sigmas_type == "zero" else sigma_min
    sigmas = np.append(sigmas, final).astype(F32)
    alpha = (one / np.sqrt(sigmas * sigmas + one)).astype(F32)
    sigma = (sigmas * alpha).astype(F32)
    lam = (f32_log(alpha) - f32_log(sigma)).astype(F32)
    return SigmaSchedule(timesteps=np.ascontiguousarray(ts), alpha=alpha, sigma=sigma, lam=lam)
