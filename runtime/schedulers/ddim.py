"""DDIM sampling as data plus a pure step function, equal to diffusers' ``DDIMScheduler``.

Timesteps are spaced as DDPM spaces them. The previous timestep is the next entry of the timestep
table. diffusers instead computes it by a stride, ``t - num_train_timesteps // steps``, which is the
same thing for ``leading`` spacing (and ``trailing`` when the step count divides
``num_train_timesteps``) but lands between table entries for ``linspace`` spacing (and uneven
``trailing``): there diffusers steps to timesteps it never evaluates the model at. This is the one
place we deliberately differ from diffusers; ``tests/runtime/test_ddim.py`` shows both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, brief
from .config import Sampler, SchedulerConfig, StepTable, add_noise_alpha_prod, check_clip_range, register
from .prediction import fold_eps, to_eps, to_x0
from .tables import alphas_cumprod, as_f32, step_alphas

F32 = np.float32


@dataclass(frozen=True)
class DDIMTable(StepTable):
    config: SchedulerConfig
    eta: float
    timesteps: np.ndarray  # int64 [K]
    prev_timesteps: np.ndarray  # int64 [K], -1 after the last step (final alpha)
    sqrt_alpha_prod: np.ndarray  # float32 [K]
    sqrt_beta_prod: np.ndarray
    sqrt_alpha_prod_prev: np.ndarray
    direction_coeff: np.ndarray  # sqrt(1 - alpha_prev - std²)
    noise_std: np.ndarray  # eta * sqrt(variance)

    def needs_noise(self, i: int) -> bool:
        """diffusers draws noise at every step when eta > 0 (even where the variance is 0)."""
        return self.eta > 0


def check_eta(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating)) or not 0 <= float(eta) < np.inf:
        raise InputError(f"eta must be a number >= 0 (0 is deterministic DDIM, 1 is DDPM-like), got {brief(eta)}")
    return float(eta)


def ddim_table(config: SchedulerConfig, num_inference_steps: int, eta: float = 0.0) -> DDIMTable:
    eta = check_eta(eta)
    final = None if config.set_alpha_to_one else alphas_cumprod(config)[0]
    ts, prev, a, a_prev = step_alphas(config, num_inference_steps, final)
    one = F32(1.0)
    beta_prod = one - a
    variance = (one - a_prev) / beta_prod * (one - a / a_prev)
    std = (F32(eta) * np.sqrt(variance)).astype(F32)
    return DDIMTable(
        config=config,
        eta=eta,
        timesteps=ts,
        prev_timesteps=prev,
        sqrt_alpha_prod=as_f32(np.sqrt(a)),
        sqrt_beta_prod=as_f32(np.sqrt(beta_prod)),
        sqrt_alpha_prod_prev=as_f32(np.sqrt(a_prev)),
        direction_coeff=as_f32(np.sqrt(np.maximum(one - a_prev - std * std, F32(0)))),
        noise_std=as_f32(std),
    )


def ddim_step(table: DDIMTable, i: int, model_output: np.ndarray, sample: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """One DDIM step from ``table.timesteps[i]`` to ``table.prev_timesteps[i]``. Pure.

    Song et al. 2021 (DDIM), eq. 12, in diffusers' order of operations."""
    cfg = table.config
    sa, sb = table.sqrt_alpha_prod[i], table.sqrt_beta_prod[i]
    # (1) the "predicted x0" and epsilon from the model output (runtime.schedulers.prediction)
    x0 = to_x0(cfg.prediction_type, model_output, sample, sa, sb)
    eps = to_eps(cfg.prediction_type, model_output, sample, sa, sb, x0)
    if cfg.clip_sample:  # (2) clip x0; epsilon stays the model's (diffusers' use_clipped_model_output=False)
        r = F32(cfg.clip_sample_range)
        x0 = np.clip(x0, -r, r)
    # (3) sqrt(alpha_prev) * x0 + "direction pointing to x_t": sqrt(1 - alpha_prev - sigma_t^2) * eps
    prev = table.sqrt_alpha_prod_prev[i] * x0 + table.direction_coeff[i] * eps
    if table.needs_noise(i):  # (4) + sigma_t * z, sigma_t = eta * sqrt(variance) (eq. 16)
        if noise is None:
            raise ValueError(f"step {i} needs noise (eta > 0)")
        prev = prev + table.noise_std[i] * noise
    return prev


def _plan_row(table: DDIMTable, i: int) -> dict:
    """For v- and sample-prediction, epsilon is folded into c_x and c_m (see runtime/steps.py)."""
    sa, sb = table.sqrt_alpha_prod[i], table.sqrt_beta_prod[i]
    eps = fold_eps(table.config.prediction_type, sa, sb, table.direction_coeff[i])
    return dict(sa=sa, sb=sb, clip=table.config.clip_sample, c_x0=table.sqrt_alpha_prod_prev[i], **eps)


SAMPLER = register(
    Sampler(
        name="ddim",
        diffusers_class="DDIMScheduler",
        keys={"clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True},
        make_table=lambda config, steps, eta: ddim_table(config, steps, eta),
        step=lambda table, i, m, x, z, state, out=None: (ddim_step(table, i, m, x, z), None),
        default_steps=50,  # DDIMPipeline's default
        uses_eta=True,
        validate=check_clip_range,
        plan_row=_plan_row,
        add_noise=add_noise_alpha_prod,
    )
)
