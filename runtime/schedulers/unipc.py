"""UniPC (Zhao et al. 2023) as data plus a pure step function, equal to diffusers' ``UniPCMultistepScheduler``
with ``predict_x0=True``: the B(h) variants ``bh1`` and ``bh2``, ``solver_order`` 1, 2 or 3 (the sampler's
name sets it: ``unipc-2m``, ``unipc-3m``), the corrector on every step or off where ``disable_corrector``
lists a step, ``lower_order_final``, ``final_sigmas_type`` "zero" or "sigma_min", Karras sigmas and every
timestep spacing.

Each call of the step does what diffusers' ``step`` does: the data prediction x0 of this model output;
the corrector UniC (while there is a previous step and it is not disabled), which refines the sample
the previous predictor produced with this model output at no extra UNet call; then the predictor UniP of
this step's order. The state the step carries is the corrected sample and the last data predictions
(newest first). The table holds every coefficient: the orders, the log-SNR ratios r_k (divided by, as
torch does) and the solved rho weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, add_noise_sigma, choice, register
from .prediction import to_x0
from .sigmas import SigmaSchedule, sigma_schedule, validate_sigma_options

F32 = np.float32
SOLVER_TYPES = ("bh1", "bh2")
MAX_ORDER = 3


@dataclass(frozen=True)
class UniPCTable(StepTable):
    """K steps. Per step i, float32 unless said: ``alpha``/``sigma`` (its x0), ``order`` (int8: the predictor's),
    ``corrector_order`` (int8: 0 where step i does not correct), and for the predictor (p_) and corrector (c_):
    ``cx`` = sigma_t / sigma_s0, ``cm`` = alpha_t * h phi_1, ``cb`` = alpha_t * B(h), ``rk`` [K, 2] the ratios
    of the older data predictions, ``rho`` [K, 3] their weights (the corrector's last one weighs this x0)."""

    config: SchedulerConfig
    timesteps: np.ndarray
    alpha: np.ndarray
    sigma: np.ndarray
    order: np.ndarray
    corrector_order: np.ndarray
    p_cx: np.ndarray
    p_cm: np.ndarray
    p_cb: np.ndarray
    p_rk: np.ndarray
    p_rho: np.ndarray
    c_cx: np.ndarray
    c_cm: np.ndarray
    c_cb: np.ndarray
    c_rk: np.ndarray
    c_rho: np.ndarray
    schedule: SigmaSchedule | None = field(default=None, compare=False, repr=False)  # what start_at rebuilds from

    def needs_noise(self, i: int) -> bool:
        return False


def _update(lam: np.ndarray, alpha: np.ndarray, sigma: np.ndarray, s0: int, t: int, order: int, bh2: bool,
            corrector: bool):
    """(cx, cm, cb, rk, rho) of one UniP (``corrector`` False) or UniC update of ``order`` from index s0 to t,
    as diffusers' ``multistep_uni_p_bh_update`` / ``multistep_uni_c_bh_update`` compute them in float32."""
    one = F32(1.0)
    h = F32(lam[t] - lam[s0])
    hh = F32(-h)
    h_phi_1 = F32(np.expm1(np.float64(hh)))
    b_h = h_phi_1 if bh2 else hh
    rks = [F32(F32(lam[s0 - k] - lam[s0]) / h) for k in range(1, order)] + [one]
    h_phi_k, factorial, b = F32(h_phi_1 / hh - one), 1, []
    for j in range(1, order + 1):
        b.append(F32(F32(h_phi_k * F32(factorial)) / b_h))
        factorial *= j + 1
        h_phi_k = F32(F32(h_phi_k / hh) - F32(1 / factorial))
    # R[j, k] = r_k^j and b as diffusers builds them, solved in float32 (LAPACK's sgesv, as torch.linalg.solve)
    r = np.array([[x ** (j - 1) for x in rks] for j in range(1, order + 1)], dtype=F32)
    b = np.array(b, dtype=F32)
    if corrector:
        rho = [0.5] if order == 1 else np.linalg.solve(r, b)
    else:
        rho = [] if order == 1 else [0.5] if order == 2 else np.linalg.solve(r[:-1, :-1], b[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        cx = F32(sigma[t] / sigma[s0])
    return cx, F32(alpha[t] * h_phi_1), F32(alpha[t] * b_h), rks[:-1], np.asarray(rho, dtype=F32)


def unipc_table(config: SchedulerConfig, num_inference_steps: int, order: int | None = None) -> UniPCTable:
    """The table of ``set_timesteps(num_inference_steps)``; ``order``: the solver order (default: the
    config's ``solver_order``)."""
    solver_order = config.solver_order if order is None else order
    sched = sigma_schedule(config, num_inference_steps, f"unipc-{solver_order}m", karras_final_is_own=True)
    return table_for_schedule(config, sched, solver_order)


def table_for_schedule(config: SchedulerConfig, sched: SigmaSchedule, solver_order: int, begin: int = 0) -> UniPCTable:
    """The table of a given noise schedule (the tests pass diffusers' own, computed by torch); ``begin``: the step
    the loop begins at (diffusers' ``set_begin_index``, image-to-image), where the solver warms up from first order
    with no corrector."""
    k = len(sched.timesteps)
    steps = np.arange(k)
    cap = np.minimum(solver_order, k - steps) if config.lower_order_final else np.full(k, solver_order)
    # warm-up: step i has i - begin data predictions behind it
    orders = np.minimum(cap, np.maximum(steps - begin, 0) + 1).astype(np.int8)
    orders[sched.lam[1:] == sched.lam[:-1]] = 1  # a step of zero length (Karras' own sigma_min) leaves the sample
    if config.final_sigmas_type == "zero" and orders[-1] > 1:
        raise SchedulerConfigError(
            f"unipc-{solver_order}m with lower_order_final false and final_sigmas_type zero takes a step of order "
            f"{orders[-1]} to sigma 0, which divides by zero (diffusers returns NaN); set lower_order_final true "
            "or final_sigmas_type sigma_min"
        )
    disabled = set(config.disable_corrector)
    corr = np.array([orders[i - 1] if i > begin and i - 1 not in disabled else 0 for i in range(k)], dtype=np.int8)
    bh2 = config.solver_type == "bh2"
    cols = {name: np.zeros(k, F32) for name in ("p_cx", "p_cm", "p_cb", "c_cx", "c_cm", "c_cb")}
    rk = {"p": np.zeros((k, MAX_ORDER - 1), F32), "c": np.zeros((k, MAX_ORDER - 1), F32)}
    rho = {"p": np.zeros((k, MAX_ORDER), F32), "c": np.zeros((k, MAX_ORDER), F32)}
    lam, alpha, sigma = sched.lam, sched.alpha, sched.sigma
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for i in range(k):
            updates = [("p", i, i + 1, orders[i], False)]
            if corr[i]:
                updates.append(("c", i - 1, i, corr[i], True))
            for kind, s0, t, o, corrector in updates:
                cx, cm, cb, rks, weights = _update(lam, alpha, sigma, s0, t, int(o), bh2, corrector)
                cols[f"{kind}_cx"][i], cols[f"{kind}_cm"][i], cols[f"{kind}_cb"][i] = cx, cm, cb
                rk[kind][i, : len(rks)] = rks
                rho[kind][i, : len(weights)] = weights
    return UniPCTable(config=config, timesteps=sched.timesteps, alpha=alpha[:k], sigma=sigma[:k], order=orders,
                      corrector_order=corr, **cols, p_rk=rk["p"], p_rho=rho["p"], c_rk=rk["c"], c_rho=rho["c"],
                      schedule=sched)


def start_at(table: UniPCTable, begin: int) -> UniPCTable:
    """The table of a loop that begins at step ``begin`` (image-to-image)."""
    return table_for_schedule(table.config, table.schedule, table.config.solver_order, begin)


def _apply(cx, cm, cb, rks, rhos, x, m0, older, last=None):
    """x_t = cx x - cm m0 - cb (sum_k rho_k (m_k - m0) / r_k [+ rho_last (x0 - m0)]). A first-order
    predictor has no sum and leaves cb out (diffusers multiplies it by 0, which for bh1's B(h) = -inf at a
    final sigma of zero gives NaN; the limit, x0, is what this returns)."""
    x_t = cx * x - cm * m0
    res = None
    for r, weight, mk in zip(rks, rhos, older):
        term = weight * ((mk - m0) / r)
        res = term if res is None else res + term
    if last is not None:
        res = last if res is None else res + last
    return x_t if res is None else x_t - cb * res


def unipc_step(table: UniPCTable, i: int, model_output: np.ndarray, sample: np.ndarray, state) -> tuple[np.ndarray, tuple]:
    """One UniPC step. ``state``: (the previous corrected sample, the previous data predictions newest
    first), None at step 0. Returns (next sample, state)."""
    x0 = to_x0(table.config.prediction_type, model_output, sample, table.alpha[i], table.sigma[i])
    last_sample, history = state if state is not None else (None, ())
    x = sample
    c = int(table.corrector_order[i])
    if c:  # UniC: refine the previous predictor's sample with this model output
        if last_sample is None or len(history) < c:
            raise ValueError(f"step {i} corrects with order {c} and needs the previous sample and {c} data predictions")
        m0 = history[0]
        d1_t = table.c_rho[i, c - 1] * (x0 - m0)
        x = _apply(table.c_cx[i], table.c_cm[i], table.c_cb[i], table.c_rk[i, : c - 1], table.c_rho[i, : c - 1],
                   last_sample, m0, history[1:c], last=d1_t)
    history = (x0, *history)[: int(table.order.max())]
    p = int(table.order[i])
    if len(history) < p:
        raise ValueError(f"step {i} is of order {p} and needs {p - 1} previous data predictions")
    x_next = _apply(table.p_cx[i], table.p_cm[i], table.p_cb[i], table.p_rk[i, : p - 1], table.p_rho[i, : p - 1],
                    x, x0, history[1:p])
    return x_next, (x, history)


FIXED = {
    "predict_x0": True,
    "solver_p": None,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
    "sigma_min": None,
    "sigma_max": None,
    "shift_terminal": None,
}
KEYS = {
    "timestep_spacing": "linspace",
    "solver_type": "bh2",
    "lower_order_final": True,
    "disable_corrector": (),
    "final_sigmas_type": "zero",
    "use_karras_sigmas": False,
    "flow_shift": 1.0,
    "time_shift_type": "exponential",
}


def _validate(config: SchedulerConfig) -> None:
    validate_sigma_options(config)
    choice("solver_type", config.solver_type, SOLVER_TYPES)
    steps = config.disable_corrector
    if not isinstance(steps, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in steps):
        raise SchedulerConfigError(f"disable_corrector must be a list of step indices, got {steps!r}")


def _register(order: int) -> Sampler:
    return register(
        Sampler(
            name=f"unipc-{order}m",
            diffusers_class="UniPCMultistepScheduler",
            keys=KEYS,
            fixed=FIXED,
            implied={"solver_order": order},
            make_table=lambda config, steps, eta: unipc_table(config, steps),
            step=lambda table, i, m, x, z, state, out=None: unipc_step(table, i, m, x, state),
            default_steps=25,
            validate=_validate,
            add_noise=add_noise_sigma,
            start_at=start_at,
        )
    )


SAMPLERS = (_register(2), _register(3))
