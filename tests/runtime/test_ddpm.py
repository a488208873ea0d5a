"""DDPM step vs diffusers' DDPMScheduler.step, step by step, the same model output and noise fed to both."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from diffusers.schedulers import scheduling_ddpm

from runtime.schedulers import SchedulerConfig, ddpm_step, ddpm_table

# torch's x ** 0.5 is MKL's square root, one ulp off the correctly rounded one for 0.7 % (Intel AVX-512)
# to 20 % (AMD EPYC) of inputs (tests/runtime/torch_arith.py), so per-step coefficients differ by an ulp;
# DDPM's noise keeps that from growing: over 1000 steps it stays below 1e-6 relative on both kinds.
STEP_RTOL = 1e-5
STEP_ATOL = 1e-5

CONFIGS = [
    {},  # the reference model's scheduler
    {"clip_sample": False},
    {"variance_type": "fixed_large"},
    {"variance_type": "fixed_small_log"},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "clip_sample_range": 0.5},
    {"timestep_spacing": "trailing"},
    {"timestep_spacing": "linspace"},
    {"timestep_spacing": "leading", "steps_offset": 1},
    {"beta_schedule": "squaredcos_cap_v2"},
]


def run_both(kwargs, steps, monkeypatch, shape=(2, 3, 8, 8), seed=0):
    ref = DDPMScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = ddpm_table(SchedulerConfig.from_dict(dict(ref.config)), steps)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    rng = np.random.default_rng(seed)
    ours = rng.standard_normal(shape, dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    for i, t in enumerate(ref.timesteps):
        # A bounded, sample-dependent "model output" so trajectories stay in a realistic range.
        model_output = np.tanh(ours) * np.float32(0.5) + rng.standard_normal(shape, dtype=np.float32) * np.float32(0.5)
        noise = rng.standard_normal(shape, dtype=np.float32)
        monkeypatch.setattr(scheduling_ddpm, "randn_tensor", lambda *a, **k: torch.from_numpy(noise.copy()))
        theirs = ref.step(torch.from_numpy(model_output), t, theirs).prev_sample
        ours = ddpm_step(table, i, model_output, ours, noise)
        scale = max(1.0, float(np.abs(theirs.numpy()).max()))
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=STEP_RTOL, atol=STEP_ATOL * scale, err_msg=f"step {i} t={int(t)}")
    return ours, theirs.numpy()


@pytest.mark.parametrize("steps", [1000, 50, 7, 1])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_ddpm_matches_diffusers_step_by_step(kwargs, steps, monkeypatch):
    if kwargs.get("steps_offset") and steps == 1000:
        pytest.skip("1000 leading steps with steps_offset=1 reach t=1000; refused (see test_tables)")
    run_both(kwargs, steps, monkeypatch)


def test_step_is_pure():
    table = ddpm_table(SchedulerConfig(), 10)
    x = np.ones((1, 3, 4, 4), np.float32)
    eps = np.full_like(x, 0.3)
    noise = np.full_like(x, 0.7)
    copies = [a.copy() for a in (x, eps, noise)]
    first = ddpm_step(table, 3, eps, x, noise)
    np.testing.assert_array_equal(first, ddpm_step(table, 3, eps, x, noise))
    for a, c in zip((x, eps, noise), copies):
        np.testing.assert_array_equal(a, c)


def test_previous_timestep_comes_from_the_table():
    table = ddpm_table(SchedulerConfig(timestep_spacing="linspace"), 7)
    np.testing.assert_array_equal(table.prev_timesteps[:-1], table.timesteps[1:])
    assert table.prev_timesteps[-1] == -1
    # linspace steps are uneven: a stride would get some of them wrong
    assert len(set(np.diff(table.timesteps))) > 1


def test_last_step_adds_no_noise():
    table = ddpm_table(SchedulerConfig(), 5)
    assert table.timesteps[-1] == 0 and not table.needs_noise(len(table.timesteps) - 1)
    assert all(table.needs_noise(i) for i in range(4))
    x = np.ones((1, 3, 2, 2), np.float32)
    np.testing.assert_array_equal(ddpm_step(table, 4, x, x, None), ddpm_step(table, 4, x, x, np.full_like(x, 9.0)))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_step_into_buffers_equals_fresh_arrays(prediction_type):
    table = ddpm_table(SchedulerConfig(prediction_type=prediction_type), 10)
    rng = np.random.default_rng(0)
    x, eps, noise = (rng.standard_normal((2, 3, 4, 4), dtype=np.float32) for _ in range(3))
    eps_copy = eps.copy()
    out, scratch = np.empty_like(x), np.empty_like(x)
    got = ddpm_step(table, 4, eps, x, noise, out=out, scratch=scratch)
    assert got is out
    np.testing.assert_array_equal(got, ddpm_step(table, 4, eps, x, noise))
    np.testing.assert_array_equal(eps, eps_copy)


@pytest.mark.parametrize("steps", [10, 1000])
@pytest.mark.parametrize("variance_type", ["learned", "learned_range"])
def test_learned_variance_matches_diffusers(variance_type, steps):
    """ADM-style models: the output's second half of channels is the variance (itself, or a [-1, 1]
    interpolation between the log posterior variance and log beta); torch's noise, shared draws."""
    from runtime.noise import NoiseSource

    ref = DDPMScheduler(variance_type=variance_type)
    ref.set_timesteps(steps)
    table = ddpm_table(SchedulerConfig.from_dict(dict(ref.config)), steps)
    assert table.learned_variance
    generator, source = torch.Generator().manual_seed(0), NoiseSource.shared("torch", 0)
    ours, theirs = source.draw((2, 3, 8, 8)), torch.randn((2, 3, 8, 8), generator=generator)
    rng = np.random.default_rng(steps)
    for i, t in enumerate(ref.timesteps):
        variance = rng.uniform(-1, 1, ours.shape) if variance_type == "learned_range" else rng.uniform(0, 0.02, ours.shape)
        out = np.concatenate([np.tanh(ours) * 0.5, variance], axis=1).astype(np.float32)
        theirs = ref.step(torch.from_numpy(out), t, theirs, generator=generator).prev_sample
        ours = ddpm_step(table, i, out, ours, source.draw(ours.shape) if table.needs_noise(i) else None)
        # exp/sqrt per pixel: numpy's correctly rounded float64 path vs MKL's float32 (an ulp apart), through 1000 steps
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=5e-5 * max(1.0, float(np.abs(theirs).max())))
    with pytest.raises(ValueError, match="6 channels"):
        ddpm_step(table, 0, out[:, :3], ours, ours)
