import numpy as np
import pytest
from diffusers import DDPMScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig
from runtime.schedulers import tables

# linear / scaled_linear / cosine tables are bit-exact (tested below); sigmoid and zero-SNR rescaling
# go through torch's vectorised exp/sqrt, which can differ from numpy's by an ulp. Zero-SNR betas come
# from 1 - alpha_bar with alpha_bar near 1, so one ulp there (6e-8) shows in beta absolutely: betas
# are compared absolutely, alphas_cumprod relatively.
BETA_ATOL = 5e-7
CUMPROD_RTOL = 2e-6

SCHEDULES = [
    {},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"rescale_betas_zero_snr": True},
    {"num_train_timesteps": 37, "beta_end": 0.05},
]


def config_of(scheduler) -> SchedulerConfig:
    return SchedulerConfig.from_dict(dict(scheduler.config))


@pytest.mark.parametrize("kwargs", SCHEDULES, ids=str)
def test_betas_and_alphas_cumprod_match_diffusers(kwargs):
    ref = DDPMScheduler(**kwargs)
    cfg = config_of(ref)
    np.testing.assert_allclose(tables.betas(cfg), ref.betas.numpy(), rtol=0, atol=BETA_ATOL)
    np.testing.assert_allclose(tables.alphas_cumprod(cfg), ref.alphas_cumprod.numpy(), rtol=CUMPROD_RTOL, atol=0)


@pytest.mark.parametrize("kwargs", SCHEDULES[:3], ids=str)
def test_common_schedules_are_bit_exact(kwargs):
    ref = DDPMScheduler(**kwargs)
    np.testing.assert_array_equal(tables.alphas_cumprod(config_of(ref)), ref.alphas_cumprod.numpy())


def test_linspace_matches_torch_where_naive_numpy_does_not():
    import torch

    ref = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32).numpy()
    np.testing.assert_array_equal(tables.torch_linspace_f32(1e-4, 0.02, 1000), ref)
    assert not np.array_equal(np.linspace(1e-4, 0.02, 1000).astype(np.float32), ref)


@pytest.mark.parametrize("spacing,offset", [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("steps", [1, 2, 7, 50, 999, 1000])
def test_timesteps_match_diffusers(spacing, offset, steps):
    ref = DDPMScheduler(timestep_spacing=spacing, steps_offset=offset)
    cfg = config_of(ref)
    if spacing == "leading" and offset == 1 and steps == 1000:
        with pytest.raises(SchedulerConfigError, match="timestep 1000"):
            tables.timesteps(cfg, steps)
        return
    ref.set_timesteps(steps)
    np.testing.assert_array_equal(tables.timesteps(cfg, steps), ref.timesteps.numpy())


@pytest.mark.parametrize("steps", [0, -3, 1001, 2.5, "10", None])
def test_steps_out_of_range_are_refused(steps):
    with pytest.raises(InputError, match="1 to 1000"):
        tables.timesteps(SchedulerConfig(), steps)
