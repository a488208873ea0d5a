"""Score-SDE VE predictor-corrector vs diffusers' ScoreSdeVeScheduler, as ScoreSdeVePipeline drives it."""

import numpy as np
import pytest
import torch
from diffusers import ScoreSdeVeScheduler

from runtime.noise import NoiseSource
from runtime.schedulers import SchedulerConfig
from runtime.schedulers.sde_ve import sde_ve_step, sde_ve_table

# The sigmas equal diffusers' to an ulp (pow/exp are correctly rounded here, MKL's there); the corrector's
# norms are float32 reductions whose order differs from torch's (~1 ulp), and its step size is their
# squared ratio. Differences made while the sample is ~1e3 (sigma_max = 1348: an ulp is 6e-5) persist
# as it shrinks to the data's scale, so the bound is relative to the largest magnitude the trajectory
# has had (measured on the AMD EPYC kind: at most 3e-7 of it over 100 levels).
RTOL = 2e-6


def score(x, sigma, rng):
    """The score of N(0.3, 0.2^2) data noised to sigma, plus a little noise: a contractive stand-in model."""
    return (-(x - np.float32(0.3)) / np.float32(sigma * sigma + 0.04) + rng.standard_normal(x.shape) * 0.01).astype(np.float32)


@pytest.mark.parametrize("kwargs,steps", [({}, 1), ({}, 2), ({}, 10), ({}, 100), ({"correct_steps": 0}, 10),
                                          ({"correct_steps": 2, "snr": 0.2, "sigma_max": 50.0}, 20)])
def test_sde_ve_matches_diffusers(kwargs, steps):
    ref = ScoreSdeVeScheduler(**kwargs)
    ref.set_timesteps(steps)
    ref.set_sigmas(steps)
    table = sde_ve_table(SchedulerConfig.from_dict(dict(ref.config), "sde-ve"), steps)
    per = ref.config.correct_steps + 1
    assert table.num_steps == steps * per and table.inference_steps == steps and table.unit_data
    np.testing.assert_allclose(table.timesteps[::per], ref.sigmas.numpy(), rtol=2e-7)
    generator = torch.Generator().manual_seed(0)
    source = NoiseSource.shared("torch", 0)
    ours = source.draw((2, 3, 8, 8)) * np.float32(table.init_noise_sigma)
    theirs = torch.randn((2, 3, 8, 8), generator=generator) * ref.init_noise_sigma
    rng = np.random.default_rng(1)
    r = 0
    largest = [1.0]

    def check(expected):
        largest[0] = max(largest[0], float(np.abs(expected).max()))
        np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=RTOL * largest[0], err_msg=f"call {r}")

    for i, t in enumerate(ref.timesteps):
        for _ in range(ref.config.correct_steps):
            out = score(ours, table.timesteps[r], rng)
            theirs = ref.step_correct(torch.from_numpy(out), theirs, generator=generator).prev_sample
            ours = sde_ve_step(table, r, out, ours, source.draw(ours.shape))
            r += 1
            check(theirs)
        out = score(ours, table.timesteps[r], rng)
        theirs, mean = ref.step_pred(torch.from_numpy(out), t, theirs, generator=generator, return_dict=False)
        ours = sde_ve_step(table, r, out, ours, source.draw(ours.shape) if table.needs_noise(r) else None)
        r += 1
        check(theirs if r < table.num_steps else mean)  # the pipeline keeps the last mean
