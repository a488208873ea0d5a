"""DPM-Solver++ 2M vs diffusers' DPMSolverMultistepScheduler, step by step with shared model output."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.dpmpp import dpmpp_step, dpmpp_table

# Coefficients go through float32 log/exp (lambda differences) where torch's and numpy's kernels
# can differ by an ulp; relative to the sample's magnitude the trajectories agree to ~4e-6 over 999 steps.
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


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 25, 50, 999])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_dpmpp_matches_diffusers(kwargs, steps):
    ref = DPMSolverMultistepScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = dpmpp_table(SchedulerConfig.from_dict(dict(ref.config), "dpmpp-2m"), steps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    state = None
    for i, t in enumerate(ref.timesteps):
        out = (np.tanh(ours) * 0.5 + rng.standard_normal(ours.shape) * 0.5).astype(np.float32)
        theirs = ref.step(torch.from_numpy(out), t, theirs).prev_sample
        ours, state = dpmpp_step(table, i, out, ours, state)
        scale = max(1.0, float(np.abs(theirs.numpy()).max()))
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=STEP_RTOL, atol=STEP_ATOL * scale, err_msg=f"step {i}")


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
