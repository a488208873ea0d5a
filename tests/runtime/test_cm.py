"""Consistency-model sampling vs diffusers' CMStochasticIterativeScheduler, step by step, with torch's noise."""

import numpy as np
import pytest
import torch
from diffusers import CMStochasticIterativeScheduler

from runtime.errors import InputError
from runtime.noise import NoiseSource
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.cm import cm_step, cm_table

# The tables' sigmas and timesteps are bit-equal (float64 numpy, as diffusers computes them); c_in,
# c_skip, c_out and the noise scale go through one float32 sqrt each (one ulp apart at most from torch's).
ATOL = 1e-5  # of the sample's magnitude (sigma_max = 80 at the start)


def run(kwargs, steps=None, timesteps=None):
    ref = CMStochasticIterativeScheduler(**kwargs)
    ref.set_timesteps(steps, timesteps=timesteps)
    table = cm_table(SchedulerConfig.from_dict(dict(ref.config), "cm"), steps, timesteps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    np.testing.assert_array_equal(table.sigmas, ref.sigmas.numpy())
    generator = torch.Generator().manual_seed(0)
    source = NoiseSource.shared("torch", 0)
    ours = source.draw((2, 3, 8, 8)) * np.float32(table.init_noise_sigma)
    theirs = torch.randn((2, 3, 8, 8), generator=generator) * ref.init_noise_sigma
    np.testing.assert_array_equal(ours, theirs.numpy())
    rng = np.random.default_rng(1)
    for i, t in enumerate(ref.timesteps):
        scaled = ref.scale_model_input(theirs, t).numpy()
        np.testing.assert_allclose(ours / table.model_input_divisor(i), scaled, rtol=0, atol=ATOL * max(1.0, float(np.abs(scaled).max())))
        out = (np.tanh(scaled) + rng.standard_normal(ours.shape) * 0.3).astype(np.float32)
        theirs = ref.step(torch.from_numpy(out), t, theirs, generator=generator).prev_sample
        ours = cm_step(table, i, out, ours, source.draw(ours.shape) if table.needs_noise(i) else None)
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=ATOL * max(1.0, float(np.abs(theirs).max())))
    return table


@pytest.mark.parametrize("steps", [1, 2, 3, 40])
def test_cm_matches_diffusers(steps):
    assert run({}, steps).num_steps == steps


@pytest.mark.parametrize("kwargs,timesteps", [({}, [22, 0]), ({"num_train_timesteps": 151}, [150, 70, 3]),
                                              ({"num_train_timesteps": 201, "clip_denoised": False, "s_noise": 0.9}, None)])
def test_cm_given_timesteps_and_options_match_diffusers(kwargs, timesteps):
    run(kwargs, None if timesteps else 5, timesteps)


@pytest.mark.parametrize("timesteps", [[0, 22], [40, 0], [3, 3], [2.5, 1]])
def test_bad_timesteps_are_refused(timesteps):
    with pytest.raises(InputError, match="timesteps"):
        cm_table(SchedulerConfig("cm"), None, timesteps)


def test_a_ddpm_config_gives_cm_its_own_defaults():
    sampler, table = build_table("cm", {"_class_name": "CMStochasticIterativeScheduler", "sigma_max": 80.0}, None)
    assert sampler.timestep_kind == "log_sigma" and table.num_steps == 1 and table.init_noise_sigma == 80.0


def test_timesteps_are_a_request_field_for_cm_and_dpm_solver():
    from runtime.requests import SampleRequest

    assert SampleRequest(timesteps=[22, 0]).timesteps == (22, 0)
    with pytest.raises(InputError, match="steps or timesteps"):
        SampleRequest(steps=2, timesteps=[22, 0])
    with pytest.raises(InputError, match="whole numbers"):
        SampleRequest(timesteps=[2.5])
    with pytest.raises(InputError, match="timesteps apply to dpmpp-2m, dpmpp-3m, cm only"):
        build_table("ddim", {}, None, timesteps=(22, 0))
    assert build_table("cm", {}, None, timesteps=(22, 0))[1].num_steps == 2
