"""DPM-Solver++ 2M vs diffusers' DPMSolverMultistepScheduler, step by step with shared model output."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.dpmpp import DPMTable, dpmpp_step, dpmpp_table

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
]


STEPS = [1, 2, 3, 10, 25, 50, 999]


def trajectories(kwargs, steps, torch_coefficients=False):
    """(step, ours, theirs) along both trajectories, fed the same model outputs."""
    ref = DPMSolverMultistepScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = dpmpp_table(SchedulerConfig.from_dict(dict(ref.config), "dpmpp-2m"), steps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    if torch_coefficients:
        table = with_torch_coefficients(ref, table)
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    state = None
    for i, t in enumerate(ref.timesteps):
        out = (np.tanh(ours) * 0.5 + rng.standard_normal(ours.shape) * 0.5).astype(np.float32)
        theirs = ref.step(torch.from_numpy(out), t, theirs).prev_sample
        ours, state = dpmpp_step(table, i, out, ours, state)
        yield i, ours, theirs.numpy()


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_dpmpp_matches_diffusers(kwargs, steps):
    for i, ours, theirs in trajectories(kwargs, steps):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=STEP_RTOL, atol=STEP_ATOL * scale, err_msg=f"step {i}")


def with_torch_coefficients(ref: DPMSolverMultistepScheduler, table: DPMTable) -> DPMTable:
    """``table`` with every coefficient computed by torch on 0-dim tensors, as the step computes it."""
    k = table.num_steps
    alpha, sigma = zip(*(ref._sigma_to_alpha_sigma_t(s) for s in ref.sigmas))
    lam = [torch.log(a) - torch.log(s) for a, s in zip(alpha, sigma)]
    h = [lam[i + 1] - lam[i] for i in range(k)]
    x0_coeff = [alpha[i + 1] * (torch.exp(-h[i]) - 1.0) for i in range(k)]
    inv_r = [1.0 / ((lam[i] - lam[i - 1]) / h[i]) if table.second_order[i] else torch.tensor(0.0) for i in range(k)]

    def f32(values):
        return np.array([v.item() for v in values], np.float32)

    return replace(
        table,
        alpha=f32(alpha[:k]),
        sigma=f32(sigma[:k]),
        sample_coeff=f32([sigma[i + 1] / sigma[i] for i in range(k)]),
        x0_coeff=f32(x0_coeff),
        half_x0_coeff=f32([0.5 * c for c in x0_coeff]),
        inv_r=f32(inv_r),
    )


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_dpmpp_step_is_bit_equal_to_diffusers_given_its_coefficients(kwargs, steps):
    """The step follows torch's order of operations: with torch's coefficients, every step equals
    DPMSolverMultistepScheduler.step bit for bit, on any CPU."""
    for i, ours, theirs in trajectories(kwargs, steps, torch_coefficients=True):
        np.testing.assert_array_equal(ours, theirs, err_msg=f"step {i}")


def test_orders():
    table = dpmpp_table(SchedulerConfig.from_dict({}, "dpmpp-2m"), 6)
    assert table.second_order.tolist() == [False, True, True, True, True, False]


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


@pytest.mark.parametrize("raw", [{"solver_order": 3}, {"algorithm_type": "sde-dpmsolver++"}, {"use_karras_sigmas": True},
                                 {"final_sigmas_type": "sigma_min"}])
def test_unimplemented_variants_are_refused(raw):
    with pytest.raises(SchedulerConfigError):
        SchedulerConfig.from_dict(raw, "dpmpp-2m")
