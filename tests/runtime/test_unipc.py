"""UniPC vs diffusers' UniPCMultistepScheduler: step by step with shared model outputs, bh1 and bh2, orders
1-3, corrector on and off, lower_order_final, both final sigmas, Karras sigmas; and the golden values of
diffusers' own test suite (tests/schedulers/test_scheduler_unipc.py)."""

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from runtime.errors import SchedulerConfigError
from runtime.schedulers import SchedulerConfig, build_table, scheduler_name_for
from runtime.schedulers.sigmas import SigmaSchedule
from runtime.schedulers.unipc import table_for_schedule, unipc_step, unipc_table
from tests.runtime.diffusers_suite import full_loop, full_loop_mean

# With our own coefficients: they go through float32 sqrt and log, where torch's MKL kernels are within one
# ulp of our correctly rounded ones (tests/runtime/torch_arith.py), and UniPC divides lambda differences
# by the step h (1 ulp of lambda is ~1e-6 of h at 50 steps) and feeds the ratios to a Vandermonde solve
# that the third order amplifies. Relative to the sample's magnitude, worst over CONFIGS up to 50 steps
# on an AMD EPYC Zen 3: order 1 2e-6, order 2 1.3e-5, order 3 1.6e-5 (the tolerance leaves room for the
# other CPU kinds' kernels). With diffusers' own schedule (computed by torch) the steps agree to 7e-6
# at any step count (measured to 999 steps, third order), which the second test holds to 2e-5.
OWN_RTOL = {1: 2e-5, 2: 5e-5, 3: 1e-4}
GIVEN_RTOL = 2e-5

CONFIGS = [
    {},
    {"solver_type": "bh1", "final_sigmas_type": "sigma_min"},
    {"final_sigmas_type": "sigma_min"},
    {"use_karras_sigmas": True},
    {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "solver_type": "bh1"},
    {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min", "lower_order_final": False},
    {"lower_order_final": False, "final_sigmas_type": "sigma_min"},
    {"disable_corrector": [0, 2, 3]},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "timestep_spacing": "trailing"},
    {"timestep_spacing": "leading", "beta_schedule": "squaredcos_cap_v2"},
    {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
]


def compare(reference, table, steps, rtol):
    rng = np.random.default_rng(steps)
    ours = rng.standard_normal((2, 3, 8, 8), dtype=np.float32)
    theirs = torch.from_numpy(ours.copy())
    state = None
    for i, t in enumerate(reference.timesteps):
        out = (np.tanh(ours) * 0.5 + rng.standard_normal(ours.shape) * 0.5).astype(np.float32)
        theirs = reference.step(torch.from_numpy(out), t, theirs).prev_sample
        before, sample_before = out.copy(), ours.copy()
        if torch.isnan(theirs).any() and table.p_cm[i] == 0:
            # a zero-length last step (Karras' own sigma_min) of order 3, where diffusers divides 0 by 0 (see
            # test_dpmpp); exactly, the step returns the corrected sample, which diffusers holds as last_sample
            theirs = reference.last_sample
        nxt, state = unipc_step(table, i, out, ours, state)
        assert np.isfinite(nxt).all()
        np.testing.assert_array_equal(out, before)  # pure: no input is written
        np.testing.assert_array_equal(ours, sample_before)
        ours = nxt
        scale = max(1.0, float(np.abs(theirs.numpy()).max()))
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=rtol * scale, err_msg=f"step {i}")


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 10, 25, 50])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_unipc_matches_diffusers(kwargs, order, steps):
    ref = UniPCMultistepScheduler(solver_order=order, **kwargs)
    ref.set_timesteps(steps)
    config = SchedulerConfig.from_dict(dict(ref.config), "unipc-2m")  # the order is the table builder's argument
    table = unipc_table(config, steps, order=order)
    np.testing.assert_array_equal(table.timesteps, ref.timesteps.numpy())
    compare(ref, table, steps, OWN_RTOL[order])


@pytest.mark.parametrize("steps", [2, 10, 200])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=str)
def test_unipc_matches_diffusers_given_its_schedule(kwargs, order, steps):
    """With the alphas, sigmas and lambdas diffusers computes (torch), the steps agree at any step count."""
    ref = UniPCMultistepScheduler(solver_order=order, **kwargs)
    ref.set_timesteps(steps)
    alpha, sigma = ref._sigma_to_alpha_sigma_t(ref.sigmas)
    sched = SigmaSchedule(ref.timesteps.numpy(), alpha.numpy(), sigma.numpy(),
                          (torch.log(alpha) - torch.log(sigma)).numpy())
    table = table_for_schedule(SchedulerConfig.from_dict(dict(ref.config), "unipc-2m"), sched, order)
    compare(ref, table, steps, GIVEN_RTOL)


def test_orders_and_corrector():
    table = unipc_table(SchedulerConfig("unipc-3m", disable_corrector=[2]), 6)
    assert table.order.tolist() == [1, 2, 3, 3, 2, 1]  # warm-up, then lower_order_final's cap
    assert table.corrector_order.tolist() == [0, 1, 2, 0, 3, 2]  # the previous step's order, none at 0 and 3
    table = unipc_table(SchedulerConfig("unipc-3m", lower_order_final=False, final_sigmas_type="sigma_min"), 6)
    assert table.order.tolist() == [1, 2, 3, 3, 3, 3]


# diffusers' tests/schedulers/test_scheduler_unipc.py: full_loop (10 steps of the dummy model) with its
# get_scheduler_config (bh2, order 2, sigma_min) and the option each test adds; the mean |sample|.
BASE = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
        "solver_order": 2, "solver_type": "bh2", "final_sigmas_type": "sigma_min"}
GOLDEN = [
    ("test_full_loop_no_noise", {}, 0.2464),
    ("test_full_loop_with_karras", {"use_karras_sigmas": True}, 0.2925),
    ("test_full_loop_with_v_prediction", {"prediction_type": "v_prediction"}, 0.1014),
    ("test_full_loop_with_karras_and_v_prediction", {"prediction_type": "v_prediction", "use_karras_sigmas": True}, 0.1966),
]


@pytest.mark.parametrize("name,extra,mean", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_diffusers_suite_golden_values(name, extra, mean):
    assert abs(full_loop_mean({**BASE, **extra, "_class_name": "UniPCMultistepScheduler"}) - mean) < 1e-3  # the suite's own tolerance


def test_switch_keeps_the_config():
    """The suite's test_switch: a UniPC config through DPMSolverMultistepScheduler and back samples the same."""
    config = dict(UniPCMultistepScheduler.from_config(DPMSolverMultistepScheduler.from_config(BASE).config).config)
    assert abs(float(np.mean(np.abs(full_loop("unipc-2m", config)))) - 0.2464) < 1e-3


def test_bh1_to_sigma_zero_ends_at_the_data_prediction():
    """diffusers' bh1 with a final sigma of zero multiplies B(h) = -inf by 0 and returns NaN at the last step;
    this runtime returns the limit, the last data prediction."""
    sampler, table = build_table("unipc-2m", {"solver_type": "bh1"}, 4)
    x, state = np.ones((1, 3, 4, 4), np.float32), None
    for i in range(table.num_steps):
        m = np.full_like(x, 0.1 * i)
        x, state = sampler.step(table, i, m, x, None, state)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, state[1][0])


def test_name_sets_the_order_and_refusals():
    assert build_table("unipc-3m", {"solver_order": 2, "_class_name": "UniPCMultistepScheduler"}, 8)[1].order.max() == 3
    assert scheduler_name_for({"_class_name": "UniPCMultistepScheduler", "solver_order": 3}) == "unipc-3m"
    with pytest.raises(SchedulerConfigError, match="lower_order_final"):
        build_table("unipc-2m", {"lower_order_final": False}, 10)
    for raw, match in [({"solver_type": "bh3"}, "solver_type"), ({"predict_x0": False}, "predict_x0"),
                       ({"final_sigmas_type": "max"}, "final_sigmas_type"), ({"disable_corrector": "all"}, "disable_corrector"),
                       ({"use_exponential_sigmas": True}, "use_exponential_sigmas")]:
        with pytest.raises(SchedulerConfigError, match=match):
            SchedulerConfig.from_dict(raw, "unipc-2m")
