"""DDIM vs diffusers' DDIMScheduler, step by step with shared model output and noise."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from runtime.errors import InputError
from runtime.schedulers import SchedulerConfig, build_table
from runtime.schedulers.ddim import DDIMTable, ddim_step, ddim_table

from tests.runtime.torch_arith import MKL_HA_ULPS, U32, pow_half, ulps_apart

# Coefficients that go through a square root (sqrt_alpha_prod, sqrt_beta_prod, sqrt_alpha_prod_prev)
# are within MKL_HA_ULPS of torch's; noise_std = eta * sqrt(variance) adds the multiply's rounding, and
# direction_coeff = sqrt(1 - a_prev - std^2) the root's own ulp on top of std's: 2 ulps at most.
COEFF_ULPS = MKL_HA_ULPS + 1
STEP_OPS = 6  # float32 operations on the longest path of one step (x0, clamp, eps, two products, sum, noise)

CONFIGS = [
    {},
    {"clip_sample": False},
    {"set_alpha_to_one": False},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "clip_sample_range": 0.5},
    {"timestep_spacing": "trailing"},
    {"steps_offset": 1},
]
STEPS = [1, 2, 10, 50, 1000]


def fake_model_output(x, rng):
    return (np.tanh(x) * np.float32(0.5) + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.5)).astype(np.float32)


def skip_unreachable(kwargs, steps):
    if kwargs.get("steps_offset") and steps == 1000:
        pytest.skip("1000 leading steps with steps_offset=1 reach t=1000; refused")
    if kwargs.get("timestep_spacing") == "trailing" and 1000 % steps:
        pytest.skip("uneven trailing steps: diffusers' stride differs from the table (see the linspace test)")


def both(kwargs, steps, eta=0.0):
    ref = DDIMScheduler(**kwargs)
    ref.set_timesteps(steps)
    table = ddim_table(SchedulerConfig.from_dict(dict(ref.config), "ddim"), steps, eta)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    return ref, table


def with_torch_coefficients(ref: DDIMScheduler, table: DDIMTable) -> DDIMTable:
    """``table`` with each coefficient that diffusers takes a square root for replaced by torch's own value,
    computed on 0-dim tensors as ``DDIMScheduler.step`` computes it."""
    ac = ref.alphas_cumprod
    a = ac[table.timesteps]
    a_prev = torch.stack([ac[p] if p >= 0 else ref.final_alpha_cumprod for p in table.prev_timesteps])
    std = [table.eta * ref._get_variance(int(t), int(p)) ** 0.5 for t, p in zip(table.timesteps, table.prev_timesteps)]
    direction = [(1 - ap - s**2) ** 0.5 for ap, s in zip(a_prev, std)]
    return replace(
        table,
        sqrt_alpha_prod=pow_half(a.numpy()),
        sqrt_beta_prod=pow_half((1 - a).numpy()),
        sqrt_alpha_prod_prev=pow_half(a_prev.numpy()),
        direction_coeff=np.array([d.item() for d in direction], np.float32),
        noise_std=np.array([s.item() for s in std], np.float32),
    )


@pytest.mark.parametrize("eta", [0.0, 0.8])
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_ddim_step_is_bit_equal_to_diffusers_given_its_coefficients(kwargs, steps, eta):
    """The step follows torch's order of operations: with torch's square roots in the table, every step of
    every trajectory equals DDIMScheduler.step bit for bit, on any CPU."""
    skip_unreachable(kwargs, steps)
    ref, table = both(kwargs, steps, eta)
    table = with_torch_coefficients(ref, table)
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    for i, t in enumerate(ref.timesteps):
        eps = fake_model_output(ours, rng)
        noise = rng.standard_normal(ours.shape, dtype=np.float32)
        theirs = ref.step(torch.from_numpy(eps), t, theirs, eta=eta, use_clipped_model_output=False,
                          variance_noise=torch.from_numpy(noise)).prev_sample
        ours = ddim_step(table, i, eps, ours, noise)
        np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=f"step {i}")


@pytest.mark.parametrize("eta", [0.0, 0.8])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_ddim_coefficients_within_mkl_ulps_of_torch(kwargs, eta):
    ref, table = both(kwargs, 50, eta)
    torch_table = with_torch_coefficients(ref, table)
    for name in ("sqrt_alpha_prod", "sqrt_beta_prod", "sqrt_alpha_prod_prev", "direction_coeff", "noise_std"):
        limit = MKL_HA_ULPS if name.startswith("sqrt") else COEFF_ULPS
        assert ulps_apart(getattr(table, name), getattr(torch_table, name)).max() <= limit, name


def one_step_bound(table: DDIMTable, i: int, model_output, sample, noise) -> np.ndarray:
    """How far one step with our coefficients may land from diffusers' from the same sample.

    prev = A x0 + B eps + C z; S sums the magnitudes of every term, with x0 (or eps) taken through its
    division by sqrt(alpha_prod) (or sqrt(beta_prod)): the step's condition number. Each coefficient is off
    by at most COEFF_ULPS (relative 2^-23 each, at most three on one path) and each side rounds STEP_OPS
    times: |difference| <= (3 COEFF_ULPS 2^-23 + 2 STEP_OPS U) S. One DDIM step from t=999 divides by
    sqrt(alpha_prod) = 0.0064, which is where the factor ~150 of issue 9 sits.
    """
    cfg, m, x = table.config, np.abs(model_output), np.abs(sample)
    sa, sb = np.float64(table.sqrt_alpha_prod[i]), np.float64(table.sqrt_beta_prod[i])
    if cfg.prediction_type == "epsilon":
        x0, e = (x + sb * m) / sa, m
    elif cfg.prediction_type == "sample":
        x0, e = m, (x + sa * m) / sb
    else:
        x0, e = sa * x + sb * m, sa * m + sb * x
    s = table.sqrt_alpha_prod_prev[i] * x0 + table.direction_coeff[i] * e
    if noise is not None:
        s = s + table.noise_std[i] * np.abs(noise)
    return (3 * COEFF_ULPS * 2.0**-23 + 2 * STEP_OPS * U32) * s


@pytest.mark.parametrize("eta", [0.0, 0.8])
@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_ddim_matches_diffusers_within_the_step_condition(kwargs, steps, eta):
    """With our own (correctly rounded) coefficients, each step from diffusers' sample lands within
    one_step_bound of diffusers' step; the trajectories themselves are equal given equal coefficients."""
    skip_unreachable(kwargs, steps)
    ref, table = both(kwargs, steps, eta)
    rng = np.random.default_rng(steps)
    theirs = torch.from_numpy(rng.standard_normal((2, 3, 8, 8), dtype=np.float32))
    for i, t in enumerate(ref.timesteps):
        x = theirs.numpy().copy()
        eps = fake_model_output(x, rng)
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        theirs = ref.step(torch.from_numpy(eps), t, theirs, eta=eta, use_clipped_model_output=False,
                          variance_noise=torch.from_numpy(noise)).prev_sample
        ours = ddim_step(table, i, eps, x, noise)
        diff = np.abs(ours.astype(np.float64) - theirs.numpy())
        assert np.all(diff <= one_step_bound(table, i, eps, x, noise)), f"step {i}: {diff.max():.3g}"


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
    diff = np.abs(ddim_step(table, 0, eps, x, None).astype(np.float64) - theirs)
    assert np.all(diff <= one_step_bound(table, 0, eps, x, None))


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
    with pytest.raises(InputError, match="eta applies to ddim and repaint only; ddpm takes no eta"):
        build_table("ddpm", {}, 10, 0.5)
