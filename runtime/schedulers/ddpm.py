"""DDPM sampling as data plus a pure step function, equal to diffusers' ``DDPMScheduler``.

:func:`ddpm_table` precomputes, for ``num_inference_steps`` steps, every per-step scalar that
``DDPMScheduler.step`` derives from ``alphas_cumprod``; the previous timestep is the next entry of
the timestep table (the final step goes to ``alpha_prod = 1``). :func:`ddpm_step` then applies one
step with float32 arithmetic in diffusers' order of operations. Given diffusers' own coefficients
the step is bit-equal to ``DDPMScheduler.step``; the coefficients that go through a square root
differ from torch's by at most one float32 ulp, where torch's MKL square root is not correctly
rounded (how often depends on the CPU: see :mod:`runtime.schedulers.tables`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .config import Sampler, SchedulerConfig, StepTable, add_noise_alpha_prod, check_clip_range, choice, register
from .prediction import to_x0
from .tables import as_f32, f32_exp, f32_log, step_alphas

F32 = np.float32
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range")
LEARNED = ("learned", "learned_range")  # the model predicts its variance: its output has twice the sample's channels


@dataclass(frozen=True)
class DDPMTable(StepTable):
    """Per-step constants, index ``i`` = step ``i`` of the sampling loop (descending timesteps)."""

    config: SchedulerConfig
    timesteps: np.ndarray  # int64 [K]
    prev_timesteps: np.ndarray  # int64 [K], -1 after the last step
    sqrt_alpha_prod: np.ndarray  # float32 [K]
    sqrt_beta_prod: np.ndarray  # float32 [K]
    pred_original_coeff: np.ndarray  # float32 [K]
    current_sample_coeff: np.ndarray  # float32 [K]
    noise_std: np.ndarray  # float32 [K]; 0 where diffusers adds no noise (t == 0)
    min_log: np.ndarray  # float32 [K]: log of the posterior variance (learned_range's lower end)
    max_log: np.ndarray  # float32 [K]: log of beta_t (learned_range's upper end)

    @property
    def learned_variance(self) -> bool:
        """Whether the step takes the model's predicted variance (the output's second half of channels)."""
        return self.config.variance_type in LEARNED

    def needs_noise(self, i: int) -> bool:
        """diffusers draws variance noise only when the timestep is above 0."""
        return bool(self.timesteps[i] > 0)


def ddpm_table(config: SchedulerConfig, num_inference_steps: int) -> DDPMTable:
    ts, prev, a, a_prev = step_alphas(config, num_inference_steps)
    one = F32(1.0)
    beta_prod = one - a
    beta_prod_prev = one - a_prev
    current_alpha = a / a_prev
    current_beta = one - current_alpha
    pred_original_coeff = np.sqrt(a_prev) * current_beta / beta_prod
    current_sample_coeff = np.sqrt(current_alpha) * beta_prod_prev / beta_prod
    variance = np.maximum(beta_prod_prev / beta_prod * current_beta, F32(1e-20))
    if config.variance_type == "fixed_small":
        std = np.sqrt(variance)
    elif config.variance_type == "fixed_small_log":
        std = f32_exp(F32(0.5) * f32_log(variance))
    else:  # fixed_large
        std = np.sqrt(current_beta)
    std = np.where(ts > 0, std, F32(0.0))
    return DDPMTable(
        config=config,
        timesteps=ts,
        prev_timesteps=prev,
        sqrt_alpha_prod=as_f32(np.sqrt(a)),
        sqrt_beta_prod=as_f32(np.sqrt(beta_prod)),
        pred_original_coeff=as_f32(pred_original_coeff),
        current_sample_coeff=as_f32(current_sample_coeff),
        noise_std=as_f32(std),
        min_log=f32_log(variance),
        max_log=f32_log(current_beta),
    )


def ddpm_step(
    table: DDPMTable,
    i: int,
    model_output: np.ndarray,
    sample: np.ndarray,
    noise: np.ndarray | None,
    out: np.ndarray | None = None,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """One DDPM step from ``sample`` at ``table.timesteps[i]`` to the previous timestep.

    ``noise`` is standard normal noise of ``sample``'s shape; it is required when
    ``table.needs_noise(i)`` and ignored otherwise. Pure: the inputs are not modified. The result goes
    to ``out`` (a new array by default) and ``scratch`` is working space; both, when given, must be
    float32 arrays of ``sample``'s shape that alias no input (the sampling loop passes reused
    buffers: fresh 800 kB arrays cost page faults that double the step's time).
    """
    cfg = table.config
    predicted_variance = None
    if table.learned_variance:  # [prediction; variance] along the channels (diffusers' torch.split)
        channels = sample.shape[1]
        if model_output.shape[1] != 2 * channels:
            raise ValueError(f"variance_type {cfg.variance_type!r} needs a model output of {2 * channels} channels "
                             f"(prediction and variance), got {model_output.shape[1]}")
        model_output, predicted_variance = model_output[:, :channels], model_output[:, channels:]
    # (1) x0 from the model output (runtime.schedulers.prediction; DDIM paper eq. 12's "predicted x0")
    x0 = to_x0(cfg.prediction_type, model_output, sample, table.sqrt_alpha_prod[i], table.sqrt_beta_prod[i], out)
    if x0 is model_output:  # "sample" prediction: work on a copy, never on the input
        x0 = model_output.copy() if out is None else out
        if out is not None:
            np.copyto(out, model_output)
    if cfg.clip_sample:  # (2) clip x0
        r = F32(cfg.clip_sample_range)
        np.minimum(np.maximum(x0, -r, out=x0), r, out=x0)  # clamp; faster than np.clip
    # (3) the posterior mean mu_t(x_t, x0) (Ho et al. 2020, eq. 7)
    prev = np.multiply(x0, table.pred_original_coeff[i], out=x0)
    scratch = np.multiply(sample, table.current_sample_coeff[i], out=scratch)
    np.add(prev, scratch, out=prev)
    if table.needs_noise(i):  # (4) x_{t-1} = mu + sigma_t * z (Ho et al. 2020, algorithm 2, line 4)
        if noise is None:
            raise ValueError(f"step {i} (timestep {table.timesteps[i]}) needs noise")
        np.add(prev, np.multiply(noise, _std(table, i, predicted_variance), out=scratch), out=prev)
    return prev


def _std(table: DDPMTable, i: int, predicted_variance: np.ndarray | None):
    """sigma_t: the table's, or from the model's predicted variance (Nichol & Dhariwal 2021, eq. 15), in
    diffusers' order of operations."""
    if predicted_variance is None:
        return table.noise_std[i]
    if table.config.variance_type == "learned":  # the output is the variance itself
        return np.sqrt(predicted_variance)
    frac = (predicted_variance + F32(1.0)) / F32(2.0)  # learned_range: interpolate the log variance
    log_variance = frac * table.max_log[i] + (F32(1.0) - frac) * table.min_log[i]
    return f32_exp(F32(0.5) * log_variance)


def _validate(config: SchedulerConfig) -> None:
    choice("variance_type", config.variance_type, VARIANCE_TYPES)
    check_clip_range(config)


def _step(table, i, model_output, sample, noise, state, out=None):
    """Into the caller's buffers when given (fresh 800 kB arrays per step cost page faults that double
    the step's time on the full model)."""
    target, scratch = out if out is not None else (None, None)
    return ddpm_step(table, i, model_output, sample, noise, out=target, scratch=scratch), None


def _plan_row(table: DDPMTable, i: int) -> dict:
    if table.learned_variance:
        raise InputError(f"variance_type {table.config.variance_type!r} (a per-pixel variance from the model) cannot "
                         "be written as a plan; sample it with the runtime")
    return dict(sa=table.sqrt_alpha_prod[i], sb=table.sqrt_beta_prod[i], clip=table.config.clip_sample,
                c_x0=table.pred_original_coeff[i], c_x=table.current_sample_coeff[i])


SAMPLER = register(
    Sampler(
        name="ddpm",
        diffusers_class="DDPMScheduler",
        keys={"variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0},
        make_table=lambda config, steps, eta: ddpm_table(config, steps),
        step=_step,
        default_steps=None,  # DDPMPipeline's default: every training timestep
        validate=_validate,
        plan_row=_plan_row,
        add_noise=add_noise_alpha_prod,
    )
)
