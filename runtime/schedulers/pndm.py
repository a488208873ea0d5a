"""PNDM (pseudo numerical methods, Liu et al. 2022) as data plus a pure step, equal to diffusers' ``PNDMScheduler``.

With ``skip_prk_steps`` the loop is PLMS alone: K + 1 UNet calls for K steps (the second call repeats
the first timestep: a Heun-like warm-up), then linear multistep of rising order (eq. 12, Adams-Bashforth
up to 4th order). Without it, a Runge-Kutta warm-up (PRK: four calls per step for the first three
steps) precedes PLMS. Every call computes the same transfer (eq. 11) from a sample and a combined
noise prediction::

    x_prev = sqrt(a_prev / a_t) * x - (a_prev - a_t) * eps / (a_t * sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev))

The table holds, per call, the two alphas' coefficients; the step's carried state is the previous noise
predictions (``ets``), the sample a multi-call step started from and PRK's running sum. diffusers'
internal counter is the call index, so the step follows from ``i`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, choice, register
from .tables import alphas_cumprod, check_steps

F32 = np.float32
ORDER = 4  # PNDM's pndm_order: PRK warms up with this many timesteps


@dataclass(frozen=True)
class PNDMTable(StepTable):
    config: SchedulerConfig
    k: int  # the steps the request asked for; num_steps is the number of UNet calls
    timesteps: np.ndarray  # int64 [calls]: diffusers' timesteps (PRK's, then PLMS')
    prk_calls: int  # the first prk_calls calls are Runge-Kutta ones
    sample_coeff: np.ndarray  # float32 [calls]: sqrt(a_prev / a_t)
    alpha_diff: np.ndarray  # float32 [calls]: a_prev - a_t
    denom: np.ndarray  # float32 [calls]: a_t sqrt(1 - a_prev) + sqrt(a_t (1 - a_t) a_prev)
    sqrt_alpha: np.ndarray  # float32 [calls]: sqrt(a_t), for v-prediction
    sqrt_beta: np.ndarray  # float32 [calls]: sqrt(1 - a_t), for v-prediction

    @property
    def inference_steps(self) -> int:
        return self.k

    def needs_noise(self, i: int) -> bool:
        return False


def pndm_timesteps(config: SchedulerConfig, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(PRK timesteps, PLMS timesteps) of ``PNDMScheduler.set_timesteps(k)``, in diffusers' arithmetic."""
    n = config.num_train_timesteps
    if config.timestep_spacing == "linspace":
        base = np.linspace(0, n - 1, k).round().astype(np.int64)
    elif config.timestep_spacing == "leading":
        base = (np.arange(0, k) * (n // k)).round() + config.steps_offset
    else:  # trailing
        base = np.round(np.arange(n, 0, -n / k))[::-1].astype(np.int64) - 1
    if config.skip_prk_steps:
        return np.array([], dtype=np.int64), np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].astype(np.int64)
    prk = np.array(base[-ORDER:]).repeat(2) + np.tile(np.array([0, n // k // 2]), ORDER)
    return (prk[:-1].repeat(2)[1:-1])[::-1].astype(np.int64), base[:-3][::-1].astype(np.int64)


def pndm_table(config: SchedulerConfig, num_inference_steps: int) -> PNDMTable:
    n = config.num_train_timesteps
    k = check_steps(num_inference_steps, n)
    if not config.skip_prk_steps and k < ORDER:
        raise InputError(f"pndm with its Runge-Kutta warm-up (skip_prk_steps false) needs at least {ORDER} steps, "
                         f"got {k}; use more steps or skip_prk_steps true")
    prk, plms = pndm_timesteps(config, k)
    ts = np.concatenate([prk, plms]).astype(np.int64)
    ac = alphas_cumprod(config)
    if ts.max() >= n or ts.min() < 0:
        raise SchedulerConfigError(f"pndm with {k} steps and timestep_spacing={config.timestep_spacing!r} reaches "
                                   f"timestep {int(ts.max())}, outside 0..{n - 1}; use fewer steps or steps_offset=0")
    final = F32(1.0) if config.set_alpha_to_one else ac[0]
    jump = n // k
    coef_t, coef_prev = [], []
    for i, t in enumerate(ts):
        if i < len(prk):  # step_prk: the step's first timestep, and t minus half a step on even calls
            coef_t.append(prk[i // 4 * 4])
            coef_prev.append(t - (0 if i % 2 else jump // 2))
        elif i - len(prk) == 1 and config.skip_prk_steps:  # PLMS' second call repeats the first step
            coef_t.append(t + jump)
            coef_prev.append(t)
        else:
            coef_t.append(t)
            coef_prev.append(t - jump)
    a_t = ac[np.array(coef_t)]
    a_prev = np.array([ac[p] if p >= 0 else final for p in coef_prev], dtype=F32)
    one = F32(1.0)
    beta_t, beta_prev = one - a_t, one - a_prev
    return PNDMTable(
        config=config,
        k=k,
        timesteps=ts,
        prk_calls=len(prk),
        sample_coeff=np.sqrt(a_prev / a_t).astype(F32),
        alpha_diff=(a_prev - a_t).astype(F32),
        denom=(a_t * np.sqrt(beta_prev) + np.sqrt(a_t * beta_t * a_prev)).astype(F32),
        sqrt_alpha=np.sqrt(a_t).astype(F32),
        sqrt_beta=np.sqrt(beta_t).astype(F32),
    )


def _transfer(table: PNDMTable, i: int, sample: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """diffusers' ``_get_prev_sample``, in its order of operations."""
    if table.config.prediction_type == "v_prediction":
        eps = table.sqrt_alpha[i] * eps + table.sqrt_beta[i] * sample
    return table.sample_coeff[i] * sample - (table.alpha_diff[i] * eps) / table.denom[i]


def pndm_step(table: PNDMTable, i: int, model_output: np.ndarray, sample: np.ndarray, state):
    """Call ``i`` of the loop; ``state`` = (ets, the sample the step started from, PRK's running sum), None at first."""
    ets, cur_sample, running = state if state is not None else ((), None, None)
    if i < table.prk_calls:  # Runge-Kutta: weights 1/6, 1/3, 1/3, 1/6 of four calls
        phase = i % 4
        if phase == 0:
            ets, cur_sample = (*ets, model_output), sample
            running = F32(1 / 6) * model_output
            eps = model_output
        elif phase in (1, 2):
            running = running + F32(1 / 3) * model_output
            eps = model_output
        else:
            eps = running + F32(1 / 6) * model_output
            running = None
        return _transfer(table, i, cur_sample, eps), (ets, cur_sample, running)
    counter = i  # diffusers' counter counts every call
    if counter != 1:
        ets = (*ets[-3:], model_output)
    if len(ets) == 1 and counter == 0:
        eps, cur_sample = model_output, sample
    elif len(ets) == 1 and counter == 1:
        eps = (model_output + ets[-1]) / F32(2)
        sample, cur_sample = cur_sample, None
    elif len(ets) == 2:
        eps = (F32(3) * ets[-1] - ets[-2]) / F32(2)
    elif len(ets) == 3:
        eps = (F32(23) * ets[-1] - F32(16) * ets[-2] + F32(5) * ets[-3]) / F32(12)
    else:
        eps = F32(1 / 24) * (F32(55) * ets[-1] - F32(59) * ets[-2] + F32(37) * ets[-3] - F32(9) * ets[-4])
    return _transfer(table, i, sample, eps), (ets, cur_sample, None)


def _validate(config: SchedulerConfig) -> None:
    choice("prediction_type", config.prediction_type, ("epsilon", "v_prediction"))
    if config.trained_betas is None:
        choice("beta_schedule", config.beta_schedule, ("linear", "scaled_linear", "squaredcos_cap_v2"))
    if config.rescale_betas_zero_snr:
        raise SchedulerConfigError("pndm takes no rescale_betas_zero_snr (PNDMScheduler has no such option); set it to false")


SAMPLER = register(
    Sampler(
        name="pndm",
        diffusers_class="PNDMScheduler",
        keys={"skip_prk_steps": False, "set_alpha_to_one": False},
        make_table=lambda config, steps, eta: pndm_table(config, steps),
        step=lambda table, i, model_output, sample, noise, state, out=None: pndm_step(table, i, model_output, sample, state),
        default_steps=50,  # PNDMPipeline's
        validate=_validate,
    )
)
