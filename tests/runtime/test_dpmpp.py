"""DPM-Solver++ 2M and 3M vs diffusers' DPMSolverMultistepScheduler, step by step with shared model output, and
the golden values of diffusers' own test suite (tests/schedulers/test_scheduler_dpm_multi.py)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.dpmpp import DPMTable, dpmpp_step, dpmpp_table
from tests.runtime.diffusers_suite import dummy_model, dummy_sample_deter, full_loop_mean

# With our own coefficients: they go through float32 sqrt/log/exp, where torch's MKL kernels are within
# one ulp of our correctly rounded ones (tests/runtime/torch_arith.py), and lambda differences amplify
# that; relative to the sample's magnitude the trajectories agree to ~4e-6 over 999 steps on the Intel
# Xeon and AMD EPYC kinds. Given torch's coefficients the steps are bit-equal (the test below this one).
STEP_RTOL = 2e-5
STEP_ATOL = 2e-5

CONFIGS = [
    {},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample"},
    {"timestep_spacing": "leading"},
    {"timestep_spacing": "trailing"},
    {"lower_order_final": False},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"final_sigmas_type": "sigma_min"},
    {"final_sigmas_type": "sigma_min", "lower_order_final": False},
    {"final_sigmas_type": "sigma_min", "euler_at_final": True},
    {"use_karras_sigmas": True},
    {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "prediction_type": "v_prediction"},
    {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
]
ORDERS = [2, 3]


STEPS = [1, 2, 3, 10, 25, 50, 999]


def trajectories(kwargs, steps, order=2, torch_coefficients=False):
    """(step, ours, theirs) along both trajectories, fed the same model outputs."""
    ref = DPMSolverMultistepScheduler(solver_order=order, **kwargs)
    ref.set_timesteps(steps)
    table = dpmpp_table(SchedulerConfig.from_dict(dict(ref.config), f"dpmpp-{order}m"), steps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    if torch_coefficients:
        table = with_torch_coefficients(ref, table)
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    state = None
    for i, t in enumerate(ref.timesteps):
        out = (np.tanh(ours) * 0.5 + rng.standard_normal(ours.shape) * 0.5).astype(np.float32)
        before = theirs
        theirs = ref.step(torch.from_numpy(out), t, theirs).prev_sample
        if torch.isnan(theirs).any() and table.x0_coeff[i] == 0:
            # Karras' last sigma is sigma_min: a step of length zero, where diffusers' third order divides 0 by 0;
            # exactly, such a step leaves the sample as it is (and ours does)
            theirs = before
        ours, state = dpmpp_step(table, i, out, ours, state)
        assert np.isfinite(ours).all()
        yield i, ours, theirs.numpy()


# Third order divides lambda differences by the step twice over: at 999 steps (h ~ 0.01) one ulp of lambda
# (torch's log kernel vs ours) moves r0, r1 by ~1e-5 and the trajectories apart by ~1e-4; the bit-equality
# test below covers every step count given torch's coefficients.
OWN = [(order, steps) for order in ORDERS for steps in STEPS if order == 2 or steps <= 50]


@pytest.mark.parametrize("order,steps", OWN)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_dpmpp_matches_diffusers(kwargs, order, steps):
    for i, ours, theirs in trajectories(kwargs, steps, order):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL, atol=STEP_ATOL * scale, err_msg=f"step {i}")


def with_torch_coefficients(ref: DPMSolverMultistepScheduler, table: DPMTable) -> DPMTable:
    """``table`` with every coefficient computed by torch on 0-dim tensors, as the step computes it."""
    k = table.num_steps
    alpha, sigma = zip(*(ref._sigma_to_alpha_sigma_t(s) for s in ref.sigmas))
    lam = [torch.log(a) - torch.log(s) for a, s in zip(alpha, sigma)]
    h = [lam[i + 1] - lam[i] for i in range(k)]
    x0_coeff = [alpha[i + 1] * (torch.exp(-h[i]) - 1.0) for i in range(k)]
    zero = torch.tensor(0.0)
    r0 = [(lam[i] - lam[i - 1]) / h[i] if table.order[i] > 1 else None for i in range(k)]
    r1 = [(lam[i - 1] - lam[i - 2]) / h[i] if table.order[i] > 2 else None for i in range(k)]

    def third(i, value):
        return value() if table.order[i] == 3 else zero

    def f32(values):
        return np.array([v.item() for v in values], np.float32)

    return replace(
        table,
        alpha=f32(alpha[:k]),
        sigma=f32(sigma[:k]),
        sample_coeff=f32([sigma[i + 1] / sigma[i] for i in range(k)]),
        x0_coeff=f32(x0_coeff),
        half_x0_coeff=f32([0.5 * c for c in x0_coeff]),
        inv_r=f32([1.0 / r0[i] if r0[i] is not None else zero for i in range(k)]),
        inv_r1=f32([third(i, lambda: 1.0 / r1[i]) for i in range(k)]),
        d1_coeff=f32([third(i, lambda: r0[i] / (r0[i] + r1[i])) for i in range(k)]),
        d2_coeff=f32([third(i, lambda: 1.0 / (r0[i] + r1[i])) for i in range(k)]),
        c1=f32([third(i, lambda: alpha[i + 1] * ((torch.exp(-h[i]) - 1.0) / h[i] + 1.0)) for i in range(k)]),
        c2=f32([third(i, lambda: alpha[i + 1] * ((torch.exp(-h[i]) - 1.0 + h[i]) / h[i] ** 2 - 0.5)) for i in range(k)]),
    )


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_dpmpp_step_is_bit_equal_to_diffusers_given_its_coefficients(kwargs, order, steps):
    """The step follows torch's order of operations: with torch's coefficients, every step equals
    DPMSolverMultistepScheduler.step bit for bit, on any CPU."""
    for i, ours, theirs in trajectories(kwargs, steps, order, torch_coefficients=True):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"step {i}")


def test_orders():
    table = dpmpp_table(SchedulerConfig.from_dict({}, "dpmpp-2m"), 6)
    assert table.order.tolist() == [1, 2, 2, 2, 2, 1]
    # under 15 steps lower_order_final caps the last two; a final sigma of zero makes the last first order
    assert dpmpp_table(SchedulerConfig("dpmpp-3m"), 6).order.tolist() == [1, 2, 3, 3, 2, 1]
    assert dpmpp_table(SchedulerConfig("dpmpp-3m", lower_order_final=False), 6).order.tolist() == [1, 2, 3, 3, 3, 1]
    table = dpmpp_table(SchedulerConfig("dpmpp-3m", lower_order_final=False, final_sigmas_type="sigma_min"), 6)
    assert table.order.tolist() == [1, 2, 3, 3, 3, 3]
    assert dpmpp_table(SchedulerConfig("dpmpp-3m"), 20).order.tolist() == [1, 2] + [3] * 17 + [1]


# diffusers' tests/schedulers/test_scheduler_dpm_multi.py: full_loop (10 steps of the dummy model) with its
# get_scheduler_config (order 2, midpoint, lower_order_final false, final sigma_min) and the option each test adds.
BASE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "solver_order": 2, "prediction_type": "epsilon", "thresholding": False, "sample_max_value": 1.0,
        "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": False,
        "euler_at_final": False, "lambda_min_clipped": -float("inf"), "variance_type": None, "final_sigmas_type": "sigma_min"}
GOLDEN = [
    ("test_full_loop_no_noise", {}, 0.3301),
    ("test_full_loop_with_v_prediction", {"prediction_type": "v_prediction"}, 0.2251),
    ("test_full_loop_with_karras_and_v_prediction", {"prediction_type": "v_prediction", "use_karras_sigmas": True}, 0.2096),
]


@pytest.mark.parametrize("name,extra,mean", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_diffusers_suite_golden_values(name, extra, mean):
    assert abs(full_loop_mean({**BASE, **extra, "_class_name": "DPMSolverMultistepScheduler"}) - mean) < 1e-3  # the suite's own tolerance


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_custom_timesteps_loop_equals_diffusers(order, final, prediction):
    """The suite's test_solver_order_and_type / test_custom_timesteps loops (orders 1-3, both final sigmas):
    our full loop equals diffusers' own, element by element."""
    config = {**BASE, "solver_order": order, "final_sigmas_type": final, "prediction_type": prediction}
    ref = DPMSolverMultistepScheduler(**config)
    ref.set_timesteps(10)
    theirs = torch.from_numpy(dummy_sample_deter())
    for t in ref.timesteps:
        theirs = ref.step(theirs * t / (t + 1), t, theirs).prev_sample
    table = dpmpp_table(SchedulerConfig.from_dict(config, "dpmpp-2m"), 10, order=order)
    ours, state = dummy_sample_deter(), None
    for i, t in enumerate(table.timesteps):
        ours, state = dpmpp_step(table, i, dummy_model(ours, t), ours, state)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=STEP_ATOL * max(1.0, float(np.abs(ours).max())))


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
@pytest.mark.parametrize("timesteps", [(999, 700, 450, 250, 100, 20), (960, 610, 300, 90, 5)])
def test_timesteps_given_outright_equal_diffusers(order, final, timesteps):
    """``set_timesteps(timesteps=...)`` (a tuned schedule, not spaced): the same timesteps, orders and loop."""
    from runtime.schedulers import build_table

    config = {**BASE, "solver_order": order, "final_sigmas_type": final}
    ref = DPMSolverMultistepScheduler(**config)
    ref.set_timesteps(timesteps=list(timesteps))
    sampler, table = build_table(f"dpmpp-{order}m", config, None, timesteps=timesteps)
    assert table.timesteps.tolist() == ref.timesteps.tolist() == list(timesteps)
    theirs, ours, state = torch.from_numpy(dummy_sample_deter()), dummy_sample_deter(), None
    for i, t in enumerate(ref.timesteps):
        theirs = ref.step(theirs * t / (t + 1), t, theirs).prev_sample
        ours, state = dpmpp_step(table, i, dummy_model(ours, table.timesteps[i]), ours, state)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=STEP_ATOL * max(1.0, float(np.abs(ours).max())))


def test_timesteps_given_outright_are_checked():
    from runtime.errors import InputError
    from runtime.schedulers import build_table

    with pytest.raises(InputError, match="dpmpp-2m timesteps must descend strictly within 0..999"):
        build_table("dpmpp-2m", BASE, None, timesteps=(500, 700))
    with pytest.raises(InputError, match="takes no timesteps with use_karras_sigmas"):
        build_table("dpmpp-2m", {**BASE, "use_karras_sigmas": True}, None, timesteps=(700, 500))


def test_ddpm_config_converts_like_from_config():
    """The reference DDPM config has no timestep_spacing: DPM-Solver++ takes its own default (linspace)."""
    raw = {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
           "clip_sample": True, "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_small"}
    ref = DPMSolverMultistepScheduler.from_config(raw)
    ref.set_timesteps(25)
    _, table = build_table("dpmpp-2m", raw, 25)
    assert table.config.timestep_spacing == ref.config.timestep_spacing == "linspace"
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())


def test_1000_steps_repeat_a_timestep_and_are_refused():
    ref = DPMSolverMultistepScheduler()
    ref.set_timesteps(1000)
    assert len(set(ref.timesteps.tolist())) < 1000  # diffusers would divide by zero
    with pytest.raises(InputError, match="at most 999 steps"):
        build_table("dpmpp-2m", {}, 1000)


@pytest.mark.parametrize("raw", [{"algorithm_type": "sde-dpmsolver++"}, {"solver_type": "heun"}, {"use_lu_lambdas": True},
                                 {"final_sigmas_type": "max"}, {"use_exponential_sigmas": True}])
def test_unimplemented_variants_are_refused(raw):
    with pytest.raises(SchedulerConfigError):
        SchedulerConfig.from_dict(raw, "dpmpp-2m")
