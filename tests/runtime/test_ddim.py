"""DDIM vs diffusers' DDIMScheduler, step by step with shared model output and noise."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from runtime.errors import InputError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.ddim import ddim_step, ddim_table

# As for DDPM: torch's x ** 0.5 is off a correctly rounded sqrt by one ulp on ~0.7 % of inputs.
STEP_RTOL = 1e-5
STEP_ATOL = 1e-5

CONFIGS = [
    {},
    {"clip_sample": False},
    {"set_alpha_to_one": False},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "clip_sample_range": 0.5},
    {"timestep_spacing": "trailing"},
    {"steps_offset": 1},
]


def fake_model_output(x, rng):
    return (np.tanh(x) * np.float32(0.5) + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.5)).astype(np.float32)


@pytest.mark.parametrize("eta", [0.0, 0.8])
@pytest.mark.parametrize("steps", [1, 2, 10, 50, 1000])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
@pytest.mark.parametrize("clipped_output", [False, True], ids=["eps", "clipped_eps"])
def test_ddim_matches_diffusers(kwargs, steps, eta, clipped_output):
    if kwargs.get("steps_offset") and steps == 1000:
        pytest.skip("1000 leading steps with steps_offset=1 reach t=1000; refused")
    if kwargs.get("timestep_spacing") == "trailing" and 1000 % steps:
        pytest.skip("uneven trailing steps: diffusers' stride differs from the table (see the linspace test)")
    ref = DDIMScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = ddim_table(SchedulerConfig.from_dict(dict(ref.config), "ddim"), steps, eta, clipped_output)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    for i, t in enumerate(ref.timesteps):
        eps = fake_model_output(ours, rng)
        noise = rng.standard_normal(ours.shape, dtype=np.float32)
        theirs = ref.step(torch.from_numpy(eps), t, theirs, eta=eta, use_clipped_model_output=clipped_output,
                          variance_noise=torch.from_numpy(noise)).prev_sample
        ours = ddim_step(table, i, eps, ours, noise)
        scale = max(1.0, float(np.abs(theirs.numpy()).max()))
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=STEP_RTOL, atol=STEP_ATOL * scale, err_msg=f"step {i}")


def test_linspace_previous_timestep_is_the_table_not_a_stride():
    """The one deliberate difference: diffusers steps from t to t - T//K; we step to the next table entry.

    With linspace spacing and 10 steps the table is 999, 888, ..., 111, 0: diffusers steps 999 → 899,
    a timestep the model is never evaluated at, and 111 → 11 instead of 0. Our table steps 999 → 888.
    """
    ref = DDIMScheduler(timestep_spacing="linspace")
    ref.set_timesteps(10)
    table = ddim_table(SchedulerConfig.from_dict(dict(ref.config), "ddim"), 10)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    np.testing.assert_array_equal(table.prev_timesteps, [888, 777, 666, 555, 444, 333, 222, 111, 0, -1])
    stride = table.timesteps - 1000 // 10
    assert stride[0] == 899 and stride[-2] == 11  # what diffusers uses
    # our alpha_prev is alphas_cumprod at the table's next timestep
    ac = ref.alphas_cumprod.numpy()
    np.testing.assert_allclose(table.sqrt_alpha_prod_prev[:-1] ** 2, ac[table.timesteps[1:]], rtol=1e-6)
    # and one step from t=999 lands where diffusers' own step would land if it stepped to 888
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 4), dtype=np.float32)
    eps = np.random.default_rng(1).standard_normal((1, 3, 4, 4), dtype=np.float32)
    ref.num_inference_steps = 1000 // 111  # stride 111: 999 → 888
    theirs = ref.step(torch.from_numpy(eps), 999, torch.from_numpy(x)).prev_sample.numpy()
    np.testing.assert_allclose(ddim_step(table, 0, eps, x, None), theirs, rtol=STEP_RTOL, atol=STEP_ATOL)


def test_ddpm_config_converts_like_from_config():
    """DDPM config → DDIM keeps betas and clip_sample, drops variance_type, takes DDIM defaults."""
    ddpm = DDPMScheduler(beta_end=0.03, clip_sample=False, variance_type="fixed_large")
    ref = DDIMScheduler.from_config(ddpm.config)
    ours = SchedulerConfig.from_dict(dict(ddpm.config), "ddim")
    assert (ours.beta_end, ours.clip_sample, ours.set_alpha_to_one) == (ref.config.beta_end, ref.config.clip_sample, ref.config.set_alpha_to_one)
    assert ours.timestep_spacing == ref.config.timestep_spacing


@pytest.mark.parametrize("eta", [-0.1, float("nan"), float("inf"), "0.5"])
def test_bad_eta_is_refused(eta):
    with pytest.raises(InputError, match="eta"):
        build_table("ddim", {}, 10, eta)


def test_eta_is_refused_for_other_samplers():
    with pytest.raises(InputError, match="ddim only"):
        build_table("ddpm", {}, 10, 0.5)
