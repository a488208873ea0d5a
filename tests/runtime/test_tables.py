import numpy as np
import pytest
from diffusers import DDPMScheduler

from runtime.errors import InputError, SchedulerConfigError
from runtime.schedulers import SchedulerConfig
from runtime.schedulers import tables

from tests.runtime.torch_arith import MKL_HA_ULPS, U32, ulp

SCHEDULES = [
    {},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"rescale_betas_zero_snr": True},
    {"num_train_timesteps": 37, "beta_end": 0.05},
]
EXACT = [SCHEDULES[i] for i in (0, 1, 2, 5)]  # no transcendental function of a tensor on the way
# torch.sigmoid: 1 / (1 + exp(-x)) with a vectorised exp within 1 ulp and two roundings, so within 2 ulps
# of the exact value; ours is correctly rounded (0.5 ulp); 2.5 ulps apart can straddle a binade: 3.
SIGMOID_ULPS = 3


def config_of(scheduler) -> SchedulerConfig:
    return SchedulerConfig.from_dict(dict(scheduler.config))


@pytest.mark.parametrize("kwargs", SCHEDULES, ids=str)
def test_cumprod_of_diffusers_betas_is_bit_exact(kwargs):
    """torch.cumprod on CPU accumulates in double and rounds each partial product: no CPU dependence."""
    ref = DDPMScheduler(**kwargs)
    np.testing.assert_array_equal(tables.cumprod_f32(np.float32(1) - ref.betas.numpy()), ref.alphas_cumprod.numpy())


@pytest.mark.parametrize("kwargs", EXACT, ids=str)
def test_betas_are_bit_exact(kwargs):
    ref = DDPMScheduler(**kwargs)
    np.testing.assert_array_equal(tables.betas(config_of(ref)), ref.betas.numpy())


def test_sigmoid_betas_within_sigmoid_ulps():
    """beta = sigmoid(x) * (end - start) + start: the sigmoid's ulps scaled, plus one rounding each side
    for the multiply and for the add."""
    ref = DDPMScheduler(beta_schedule="sigmoid")
    cfg = config_of(ref)
    s = tables._sigmoid_f32(tables.torch_linspace_f32(-6, 6, cfg.num_train_timesteps))
    span = np.float32(cfg.beta_end - cfg.beta_start)
    ours, theirs = tables.betas(cfg), ref.betas.numpy()
    bound = SIGMOID_ULPS * ulp(s) * span + ulp(s * span) + ulp(theirs)
    assert np.all(np.abs(ours.astype(np.float64) - theirs) <= bound)


def zero_snr_beta_bound(alphas_cumprod: np.ndarray) -> np.ndarray:
    """How far zero-SNR betas may lie from diffusers' when its square roots are within MKL_HA_ULPS.

    diffusers: s = sqrt(alphas_cumprod); d = s - s[-1]; ab = (d * c)^2 with c = s[0] / (s[0] - s[-1]);
    alpha_i = ab_i / ab_{i-1}; beta = 1 - alpha. c cancels in the ratio, so to first order
        |d beta_i| <= 2 alpha_i ((e_i + e_T) / d_i + (e_{i-1} + e_T) / d_{i-1}),   e_j = |d s_j|,
    the condition number of the rescale (it grows as d -> 0 near the end). beta_0 = 1 - s_0^2 moves by
    2 s_0 e_0. Each side's own float32 roundings after the root: d (1), d * c (1), square (2x + 1),
    ratio (2 x 5 + 1) = 11 U relative in alpha, plus 1 U of beta for 1 - alpha; both sides: twice.
    The last beta is exactly 1 on both sides (d = s_T - s_T = 0).
    """
    s = np.sqrt(alphas_cumprod.astype(np.float64))
    e = MKL_HA_ULPS * ulp(np.sqrt(alphas_cumprod))
    d = s - s[-1]
    alpha = np.empty_like(s)
    alpha[0] = s[0] ** 2
    alpha[1:] = (d[1:] / d[:-1]) ** 2
    beta = 1 - alpha
    bound = np.empty_like(s)
    bound[0] = 2 * s[0] * e[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound[1:] = 2 * alpha[1:] * ((e[1:] + e[-1]) / d[1:] + (e[:-1] + e[-1]) / d[:-1])
    bound += 2 * (11 * U32 * alpha + U32 * np.abs(beta))
    bound[-1] = 0.0
    return bound


def test_zero_snr_betas_within_the_rescale_condition_number():
    ref = DDPMScheduler(rescale_betas_zero_snr=True)
    ours, theirs = tables.betas(config_of(ref)), ref.betas.numpy()
    plain = DDPMScheduler().alphas_cumprod.numpy()  # the schedule before the rescale (bit-exact, above)
    bound = zero_snr_beta_bound(plain)
    diff = np.abs(ours.astype(np.float64) - theirs)
    assert np.all(diff <= bound), f"worst at {int(np.argmax(diff - bound))}: {diff.max():.3g} vs bound there"
    assert theirs[-1] == ours[-1] == 1.0


@pytest.mark.parametrize("kwargs", EXACT, ids=str)
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
