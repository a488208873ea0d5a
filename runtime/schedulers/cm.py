"""Consistency-model sampling (Song et al. 2023, algorithm 1) as data plus a pure step, equal to diffusers'
``CMStochasticIterativeScheduler``.

One UNet call per step, one or two steps per image for distilled models. Karras sigmas (rho 7) over
the training discretisation; the engine sees the sample divided by ``sqrt(sigma^2 + sigma_data^2)``
(c_in) and the timestep ``250 ln sigma``; the step is the boundary-condition parametrisation::

    x0     = c_out(sigma) * F + c_skip(sigma) * x            (clamped to [-1, 1] with clip_denoised)
    x_next = x0 + s_noise * z * sqrt(sigma_next^2 - sigma_min^2)

with ``c_skip = sd^2 / ((sigma - sigma_min)^2 + sd^2)`` and ``c_out = (sigma - sigma_min) sd /
sqrt(sigma^2 + sd^2)``. The first sample is ``sigma_max * z``. ``timesteps`` (descending indices
into the training discretisation) choose the steps outright, as the pipeline's ``timesteps=`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, register
from .tables import check_steps

F32 = np.float32


@dataclass(frozen=True)
class CMTable(StepTable):
    config: SchedulerConfig
    timesteps: np.ndarray  # float64 [K]: 250 ln sigma, the engine's timestep
    sigmas: np.ndarray  # float32 [K + 1], sigma_min last
    input_divisor: np.ndarray  # float32 [K]: sqrt(sigma^2 + sigma_data^2)
    c_skip: np.ndarray  # float32 [K]
    c_out: np.ndarray  # float32 [K]
    noise_coeff: np.ndarray  # float32 [K]: s_noise is applied first, then sqrt(sigma_hat^2 - sigma_min^2)

    @property
    def init_noise_sigma(self) -> float:
        return self.config.sigma_max

    def model_input_divisor(self, i: int):
        return self.input_divisor[i]

    def needs_noise(self, i: int) -> bool:
        """diffusers draws noise at every step of a multistep run; the last step's is multiplied by 0
        (sigma_min's own noise level), so it is not drawn here: nothing follows it in the stream."""
        return self.num_steps > 1 and i < self.num_steps - 1


def karras(config: SchedulerConfig, ramp: np.ndarray) -> np.ndarray:
    """``_convert_to_karras``: float64, as diffusers computes it in numpy."""
    rho = config.rho
    min_inv_rho = config.sigma_min ** (1 / rho)
    max_inv_rho = config.sigma_max ** (1 / rho)
    return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho


def cm_indices(config: SchedulerConfig, steps: int | None, timesteps=None) -> np.ndarray:
    """The training-discretisation indices of ``set_timesteps(steps)`` or of ``set_timesteps(timesteps=...)``."""
    n = config.num_train_timesteps
    if timesteps is not None:
        ts = np.asarray(timesteps)
        if ts.ndim != 1 or not len(ts) or not np.issubdtype(ts.dtype, np.integer):
            raise InputError("consistency-model timesteps must be a non-empty list of whole numbers")
        if np.any(np.diff(ts) >= 0) or ts[0] >= n or ts[-1] < 0:
            raise InputError(f"consistency-model timesteps must descend within 0..{n - 1}, got {ts.tolist()}")
        return ts.astype(np.int64)
    k = check_steps(steps, n)
    return (np.arange(0, k) * (n // k)).round()[::-1].copy().astype(np.int64)


def cm_table(config: SchedulerConfig, steps: int | None, timesteps=None) -> CMTable:
    indices = cm_indices(config, steps, timesteps)
    ramp = indices[::-1].copy() / (config.num_train_timesteps - 1)
    sigmas64 = karras(config, ramp)
    t = 1000 * 0.25 * np.log(sigmas64 + 1e-44)
    sigmas = np.concatenate([sigmas64, [config.sigma_min]]).astype(F32)
    k = len(indices)
    smin, sd2 = F32(config.sigma_min), F32(config.sigma_data**2)
    sigma = sigmas[:k]
    nxt = np.array([sigmas[i + 1] if i + 1 < config.num_train_timesteps else sigmas[-1] for i in range(k)], dtype=F32)
    sigma_hat = np.clip(nxt, smin, F32(config.sigma_max))
    return CMTable(
        config=config,
        timesteps=t,
        sigmas=sigmas,
        input_divisor=np.sqrt(sigma * sigma + sd2).astype(F32),
        c_skip=(sd2 / ((sigma - smin) ** 2 + sd2)).astype(F32),
        c_out=((sigma - smin) * F32(config.sigma_data) / np.sqrt(sigma * sigma + sd2)).astype(F32),
        noise_coeff=np.sqrt(sigma_hat * sigma_hat - F32(config.sigma_min**2)).astype(F32),
    )


def cm_step(table: CMTable, i: int, model_output: np.ndarray, sample: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    x0 = table.c_out[i] * model_output + table.c_skip[i] * sample
    if table.config.clip_denoised:
        x0 = np.clip(x0, F32(-1), F32(1))
    if not table.needs_noise(i):
        return x0  # + 0 * z: the noise level at sigma_min is zero
    if noise is None:
        raise ValueError(f"step {i} needs noise")
    return x0 + (noise * F32(table.config.s_noise)) * table.noise_coeff[i]


def _validate(config: SchedulerConfig) -> None:
    n = config.num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise SchedulerConfigError(f"num_train_timesteps must be a whole number of at least 2, got {n!r}")
    if not 0 < config.sigma_min < config.sigma_max:
        raise SchedulerConfigError(f"need 0 < sigma_min < sigma_max, got {config.sigma_min!r}, {config.sigma_max!r}")
    if not config.sigma_data > 0 or not config.rho > 0:
        raise SchedulerConfigError("sigma_data and rho must be positive")


SAMPLER = register(
    Sampler(
        name="cm",
        diffusers_class="CMStochasticIterativeScheduler",
        keys={"num_train_timesteps": 40, "sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "s_noise": 1.0,
              "rho": 7.0, "clip_denoised": True},
        make_table=lambda config, steps, eta: cm_table(config, steps),
        make_table_from_timesteps=lambda config, timesteps: cm_table(config, None, timesteps),
        step=lambda table, i, model_output, sample, noise, state, out=None: (cm_step(table, i, model_output, sample, noise), None),
        default_steps=1,  # ConsistencyModelPipeline's: one UNet call
        validate=_validate,
        timestep_kind="log_sigma",
        common_keys=False,
    )
)
