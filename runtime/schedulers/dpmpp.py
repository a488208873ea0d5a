"""DPM-Solver++ 2M as data plus a pure step function, equal to diffusers' ``DPMSolverMultistepScheduler``
with its defaults (algorithm_type dpmsolver++, solver_order 2, midpoint, lower_order_final, final
sigma zero).

The multistep solver needs the previous step's data prediction; :func:`dpmpp_step` takes it as an
argument and returns the new one, so the step stays a pure function. Step 0 and the last step are
first order (the last because the final sigma is zero), the others second order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import math

from ..errors import InputError, SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, register
from .prediction import to_x0
from .tables import alphas_cumprod, check_steps, f32_exp, f32_log, spaced_timesteps

F32 = np.float32


@dataclass(frozen=True)
class DPMTable(StepTable):
    config: SchedulerConfig
    timesteps: np.ndarray  # int64 [K]
    alpha: np.ndarray  # float32 [K]: alpha_t of each step's own sigma (for the data prediction)
    sigma: np.ndarray  # float32 [K]
    second_order: np.ndarray  # bool [K]
    sample_coeff: np.ndarray  # float32 [K]: sigma_next / sigma
    x0_coeff: np.ndarray  # float32 [K]: alpha_next * (exp(-h) - 1)
    half_x0_coeff: np.ndarray  # float32 [K]: 0.5 * x0_coeff
    inv_r: np.ndarray  # float32 [K]: h / h_prev (1 / r0), 0 where first order

    def needs_noise(self, i: int) -> bool:
        return False


def _spaced(config: SchedulerConfig, k: int) -> np.ndarray:
    """``DPMSolverMultistepScheduler.set_timesteps``: K+1 points, the last dropped."""
    return spaced_timesteps(config, k, points=k + 1)


def _usable(config: SchedulerConfig, ts: np.ndarray) -> bool:
    return len(np.unique(ts)) == len(ts) and 0 <= ts.min() and ts.max() < config.num_train_timesteps


def dpm_timesteps(config: SchedulerConfig, num_inference_steps: int) -> np.ndarray:
    """Descending int64 timesteps; refused where they repeat (the solver would divide by zero)."""
    k = check_steps(num_inference_steps, config.num_train_timesteps)
    ts = _spaced(config, k)
    if not _usable(config, ts):
        most = max((j for j in range(1, k) if _usable(config, _spaced(config, j))), default=0)
        raise InputError(
            f"dpmpp-2m with {k} steps and timestep_spacing={config.timestep_spacing!r} repeats or leaves the "
            f"timestep range (the solver would divide by zero); use at most {most} steps"
        )
    return np.ascontiguousarray(ts)


def dpmpp_table(config: SchedulerConfig, num_inference_steps: int) -> DPMTable:
    ts = dpm_timesteps(config, num_inference_steps)
    ac = alphas_cumprod(config)
    one = F32(1.0)
    sigmas = np.append(np.sqrt((one - ac) / ac)[ts], F32(0.0)).astype(F32)
    alpha = (one / np.sqrt(sigmas * sigmas + one)).astype(F32)
    sigma = (sigmas * alpha).astype(F32)
    lam = f32_log(alpha) - f32_log(sigma)  # +inf at the final sigma 0
    k = len(ts)
    h = lam[1:] - lam[:-1]
    x0_coeff = (alpha[1:] * (f32_exp(-h) - one)).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sample_coeff = (sigma[1:] / sigma[:-1]).astype(F32)
    second = np.zeros(k, dtype=bool)
    second[1 : k - 1] = True  # first order at the first step and (final sigma zero) the last
    inv_r = np.zeros(k, dtype=F32)
    if k > 2:
        r = (lam[1 : k - 1] - lam[0 : k - 2]) / h[1 : k - 1]
        inv_r[1 : k - 1] = one / r
    return DPMTable(
        config=config,
        timesteps=ts,
        alpha=alpha[:k],
        sigma=sigma[:k],
        second_order=second,
        sample_coeff=sample_coeff,
        x0_coeff=x0_coeff,
        half_x0_coeff=(F32(0.5) * x0_coeff).astype(F32),
        inv_r=inv_r,
    )


def dpmpp_step(
    table: DPMTable, i: int, model_output: np.ndarray, sample: np.ndarray, prev_x0: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One DPM-Solver++ 2M step. Returns (next sample, this step's data prediction for the next step).

    Lu et al. 2022 (DPM-Solver++), algorithm 2, with diffusers' midpoint form of the second-order term."""
    # (1) the data prediction x0 from the model output (runtime.schedulers.prediction)
    x0 = to_x0(table.config.prediction_type, model_output, sample, table.alpha[i], table.sigma[i])
    # (2) first order (DPM-Solver++ 1, eq. 5): x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0
    x = table.sample_coeff[i] * sample - table.x0_coeff[i] * x0
    if table.second_order[i]:  # (3) + the multistep correction: D1 = (x0 - x0_prev) / r0, times -0.5 alpha_t (e^{-h} - 1)
        if prev_x0 is None:
            raise ValueError(f"step {i} is second order and needs the previous data prediction")
        d1 = table.inv_r[i] * (x0 - prev_x0)
        x = x - table.half_x0_coeff[i] * d1
    return x, x0


# What this runtime implements of DPM-Solver: the second-order multistep DPM-Solver++ (midpoint),
# which are also diffusers' defaults; other values of these keys are refused.
FIXED = {
    "solver_order": 2,
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "final_sigmas_type": "zero",
    "lambda_min_clipped": -math.inf,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
}


def _plan_row(table: DPMTable, i: int) -> dict:
    row = dict(sa=table.alpha[i], sb=table.sigma[i], clip=False, c_x0=-table.x0_coeff[i], c_x=table.sample_coeff[i])
    if table.second_order[i]:
        row.update(c_d=-table.half_x0_coeff[i], c_r=table.inv_r[i])
    return row


def _validate(config: SchedulerConfig) -> None:
    if config.variance_type in ("learned", "learned_range"):
        raise SchedulerConfigError("learned variances need a model with twice the output channels; not supported")


SAMPLER = register(
    Sampler(
        name="dpmpp-2m",
        diffusers_class="DPMSolverMultistepScheduler",
        keys={"timestep_spacing": "linspace", "variance_type": None, "lower_order_final": True, "euler_at_final": False},
        fixed=FIXED,
        make_table=lambda config, steps, eta: dpmpp_table(config, steps),
        step=lambda table, i, m, x, z, state, out=None: dpmpp_step(table, i, m, x, state),
        default_steps=25,
        validate=_validate,
        plan_row=_plan_row,
    )
)
