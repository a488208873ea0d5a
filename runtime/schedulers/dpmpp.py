"""DPM-Solver++ (2M and 3M) as data plus a pure step function, equal to diffusers'
``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"`` and ``solver_type="midpoint"``:
``solver_order`` 1, 2 or 3 (the sampler's name sets it: ``dpmpp-2m``, ``dpmpp-3m``), ``lower_order_final``,
``euler_at_final``, ``final_sigmas_type`` "zero" or "sigma_min", Karras sigmas and every timestep spacing.

The multistep solver needs the previous steps' data predictions; :func:`dpmpp_step` takes them as an
argument (the state: the last ``order - 1`` of them, newest first) and returns the new state, so the step
stays a pure function. Each step's order is in the table: it warms up from first order at step 0, and
ends lower where diffusers does (the last step first order with a final sigma of zero, the last two
capped under 15 steps with ``lower_order_final``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, add_noise_sigma, register
from .prediction import to_x0
from .sigmas import sigma_schedule, validate_sigma_options
from .tables import f32_exp

F32 = np.float32
# diffusers lowers the final orders only for short runs
LOWER_ORDER_FINAL_BELOW = 15


@dataclass(frozen=True)
class DPMTable(StepTable):
    config: SchedulerConfig
    timesteps: np.ndarray  # int64 [K]
    alpha: np.ndarray  # float32 [K]: alpha_t of each step's own sigma (for the data prediction)
    sigma: np.ndarray  # float32 [K]
    order: np.ndarray  # int8 [K]: 1, 2 or 3
    sample_coeff: np.ndarray  # float32 [K]: sigma_next / sigma
    x0_coeff: np.ndarray  # float32 [K]: alpha_next * (exp(-h) - 1)
    half_x0_coeff: np.ndarray  # float32 [K]: 0.5 * x0_coeff (second order, midpoint)
    inv_r: np.ndarray  # float32 [K]: h / h_prev (1 / r0), 0 where first order
    inv_r1: np.ndarray  # float32 [K]: 1 / r1 = h / h_prev2 (third order; 0 elsewhere)
    d1_coeff: np.ndarray  # float32 [K]: r0 / (r0 + r1) (third order)
    d2_coeff: np.ndarray  # float32 [K]: 1 / (r0 + r1) (third order)
    c1: np.ndarray  # float32 [K]: alpha_next * ((exp(-h) - 1) / h + 1) (third order)
    c2: np.ndarray  # float32 [K]: alpha_next * ((exp(-h) - 1 + h) / h^2 - 0.5) (third order)

    def needs_noise(self, i: int) -> bool:
        return False


def step_orders(k: int, solver_order: int, lower_order_final: bool, last_first_order: bool) -> np.ndarray:
    """Each step's order: warm-up (step i has at most i + 1), then ``solver_order``; with lower_order_final
    under 15 steps the last step is first order and the one before at most second; ``last_first_order``
    (a final sigma of zero, or euler_at_final) makes the last step first order regardless."""
    order = np.minimum(np.arange(k) + 1, solver_order)
    short = lower_order_final and k < LOWER_ORDER_FINAL_BELOW
    if k >= 2 and short:
        order[k - 2] = min(order[k - 2], 2)
    if short or last_first_order:
        order[k - 1] = 1
    return order.astype(np.int8)


def dpmpp_table(config: SchedulerConfig, num_inference_steps: int | None, order: int | None = None,
                timesteps=None) -> DPMTable:
    """The table of ``set_timesteps(num_inference_steps)`` or of ``set_timesteps(timesteps=...)`` (the steps
    outright: tuned schedules); ``order``: the solver order (default: the config's ``solver_order``)."""
    solver_order = config.solver_order if order is None else order
    name = f"dpmpp-{solver_order}m"
    sched = sigma_schedule(config, num_inference_steps, name, timesteps=timesteps)
    alpha, sigma, lam = sched.alpha, sched.sigma, sched.lam
    k = len(sched.timesteps)
    one = F32(1.0)
    h = (lam[1:] - lam[:-1]).astype(F32)
    em1 = (f32_exp(-h) - one).astype(F32)  # exp(-h) - 1
    x0_coeff = (alpha[1:] * em1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sample_coeff = (sigma[1:] / sigma[:-1]).astype(F32)
    orders = step_orders(k, solver_order, config.lower_order_final,
                         config.euler_at_final or config.final_sigmas_type == "zero")
    orders[h == 0] = 1  # a step of zero length (Karras' last sigma is sigma_min) leaves the sample as it is
    zeros = np.zeros(k, dtype=F32)
    inv_r, inv_r1, d1_coeff, d2_coeff, c1, c2 = (zeros.copy() for _ in range(6))
    for i in np.flatnonzero(orders >= 2):
        r0 = F32((lam[i] - lam[i - 1]) / h[i])
        inv_r[i] = one / r0
        if orders[i] == 3:
            r1 = F32((lam[i - 1] - lam[i - 2]) / h[i])
            inv_r1[i] = one / r1
            d1_coeff[i] = r0 / F32(r0 + r1)
            d2_coeff[i] = one / F32(r0 + r1)
            c1[i] = alpha[i + 1] * F32(em1[i] / h[i] + one)
            c2[i] = alpha[i + 1] * F32(F32(F32(em1[i] + h[i]) / F32(h[i] * h[i])) - F32(0.5))
    return DPMTable(
        config=config,
        timesteps=sched.timesteps,
        alpha=alpha[:k],
        sigma=sigma[:k],
        order=orders,
        sample_coeff=sample_coeff,
        x0_coeff=x0_coeff,
        half_x0_coeff=(F32(0.5) * x0_coeff).astype(F32),
        inv_r=inv_r,
        inv_r1=inv_r1,
        d1_coeff=d1_coeff,
        d2_coeff=d2_coeff,
        c1=c1,
        c2=c2,
    )


def start_at(table: DPMTable, begin: int) -> DPMTable:
    """The table of a loop that begins at step ``begin`` (diffusers' ``set_begin_index``, image-to-image): the solver
    warms up again from first order there (it has no earlier data predictions)."""
    warm_up = np.arange(len(table.order)) - begin + 1
    return dataclasses.replace(table, order=np.minimum(table.order, np.maximum(warm_up, 1)).astype(np.int8))


def dpmpp_step(
    table: DPMTable, i: int, model_output: np.ndarray, sample: np.ndarray, history: tuple[np.ndarray, ...] | None
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One DPM-Solver++ step. ``history``: the previous steps' data predictions, newest first (None at
    step 0). Returns (next sample, the history for the next step).

    Lu et al. 2022 (DPM-Solver++), algorithm 2, with diffusers' midpoint form of the second-order term
    and its third-order multistep update, in torch's order of operations."""
    # (1) the data prediction x0 from the model output (runtime.schedulers.prediction)
    x0 = to_x0(table.config.prediction_type, model_output, sample, table.alpha[i], table.sigma[i])
    order = int(table.order[i])
    previous = history or ()
    if len(previous) < order - 1:
        raise ValueError(f"step {i} is of order {order} and needs the {order - 1} previous data predictions")
    # (2) first order (DPM-Solver++ 1, eq. 5): x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0
    x = table.sample_coeff[i] * sample - table.x0_coeff[i] * x0
    if order == 2:  # (3) + the multistep correction: D1 = (x0 - x0_prev) / r0, times -0.5 alpha_t (e^{-h} - 1)
        d1 = table.inv_r[i] * (x0 - previous[0])
        x = x - table.half_x0_coeff[i] * d1
    elif order == 3:  # (4) third order: D1 and D2 from two backward differences
        d1_0 = table.inv_r[i] * (x0 - previous[0])
        d1_1 = table.inv_r1[i] * (previous[0] - previous[1])
        d1 = d1_0 + table.d1_coeff[i] * (d1_0 - d1_1)
        d2 = table.d2_coeff[i] * (d1_0 - d1_1)
        x = (x + table.c1[i] * d1) - table.c2[i] * d2
    keep = max(int(table.order.max()) - 1, 1)
    return x, (x0, *previous)[:keep]


# What this runtime implements of DPM-Solver: the multistep DPM-Solver++ (midpoint, diffusers' default)
# with the sigma options below; other values of these keys are refused.
FIXED = {
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "lambda_min_clipped": -math.inf,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
}
KEYS = {
    "timestep_spacing": "linspace",
    "variance_type": None,
    "lower_order_final": True,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
    "use_karras_sigmas": False,
}


def _plan_row(table: DPMTable, i: int) -> dict:
    if table.order[i] > 2:
        raise SchedulerConfigError("third-order DPM-Solver++ steps cannot be written as a plan (the plan carries one "
                                   "previous data prediction); use dpmpp-2m for a plan")
    row = dict(sa=table.alpha[i], sb=table.sigma[i], clip=False, c_x0=-table.x0_coeff[i], c_x=table.sample_coeff[i])
    if table.order[i] == 2:
        row.update(c_d=-table.half_x0_coeff[i], c_r=table.inv_r[i])
    return row


def _validate(config: SchedulerConfig) -> None:
    if config.variance_type in ("learned", "learned_range"):
        raise SchedulerConfigError("learned variances need a model with twice the output channels; not supported")
    validate_sigma_options(config)


def _register(order: int) -> Sampler:
    return register(
        Sampler(
            name=f"dpmpp-{order}m",
            diffusers_class="DPMSolverMultistepScheduler",
            keys=KEYS,
            fixed=FIXED,
            implied={"solver_order": order},
            make_table=lambda config, steps, eta: dpmpp_table(config, steps),
            make_table_from_timesteps=lambda config, timesteps: dpmpp_table(config, None, timesteps=timesteps),
            step=lambda table, i, m, x, z, state, out=None: dpmpp_step(table, i, m, x, state),
            default_steps=25,
            validate=_validate,
            plan_row=_plan_row if order <= 2 else None,
            add_noise=add_noise_sigma,
            start_at=start_at,
        )
    )


SAMPLERS = (_register(2), _register(3))
