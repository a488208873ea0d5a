"""PNDM vs diffusers' PNDMScheduler, step by step with shared model outputs (PRK warm-up and PLMS)."""

import numpy as np
import pytest
import torch
from diffusers import PNDMScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.pndm import pndm_step, pndm_table

# Coefficients go through float32 sqrt, where torch's MKL kernel is within one ulp of our correctly
# rounded one (tests/runtime/torch_arith.py); over 59 calls the trajectories agree to ~1e-6 of the
# sample's magnitude on the Intel Xeon and AMD EPYC kinds.
RTOL = 1e-5

CONFIGS = [
    {},
    {"skip_prk_steps": True},
    {"skip_prk_steps": True, "set_alpha_to_one": True},
    {"prediction_type": "v_prediction"},
    {"timestep_spacing": "linspace", "skip_prk_steps": True},
    {"timestep_spacing": "trailing"},
    {"beta_schedule": "squaredcos_cap_v2", "steps_offset": 1},
]


@pytest.mark.parametrize("steps", [4, 10, 50])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_pndm_matches_diffusers(kwargs, steps):
    ref = PNDMScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = pndm_table(SchedulerConfig.from_dict(dict(ref.config), "pndm"), steps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    assert table.inference_steps == steps and table.num_steps == len(ref.timesteps)
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    state = None
    for i, t in enumerate(ref.timesteps):
        out = (np.tanh(ours) * 0.5 + rng.standard_normal(ours.shape) * 0.5).astype(np.float32)
        theirs = ref.step(torch.from_numpy(out), t, theirs).prev_sample
        before = out.copy()
        ours, state = pndm_step(table, i, out, ours, state)
        np.testing.assert_array_equal(out, before)  # pure: the input is not written
        scale = max(1.0, float(np.abs(theirs.numpy()).max()))
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=RTOL * scale, err_msg=f"call {i}")


def test_prk_needs_four_steps_and_odd_configs_are_refused():
    with pytest.raises(InputError, match="at least 4 steps"):
        build_table("pndm", {}, 3)
    assert build_table("pndm", {"skip_prk_steps": True}, 1)[1].num_steps == 1
    with pytest.raises(SchedulerConfigError, match="prediction_type"):
        build_table("pndm", {"prediction_type": "sample"}, 10)
    with pytest.raises(SchedulerConfigError, match="beta_schedule"):
        build_table("pndm", {"beta_schedule": "sigmoid"}, 10)
