"""runtime.schedulers.prediction: the one place model outputs become x0 and epsilon; the plan's coefficients
reproduce the numpy conversions."""

import numpy as np
import pytest

from runtime.schedulers.prediction import PREDICTION_TYPES, fold_eps, to_eps, to_x0, x0_coefficients

F32 = np.float32
U32 = 2.0**-24  # float32 unit roundoff


def state(alpha_bar):
    rng = np.random.default_rng(0)
    x0, eps = rng.uniform(-1, 1, (2, 3, 4, 4)).astype(F32), rng.standard_normal((2, 3, 4, 4), dtype=F32)
    a, s = F32(np.sqrt(alpha_bar)), F32(np.sqrt(1 - alpha_bar))
    x = (a * x0 + s * eps).astype(F32)
    outputs = {"epsilon": eps, "sample": x0, "v_prediction": (a * eps - s * x0).astype(F32)}
    return x0, eps, x, a, s, outputs


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("alpha_bar", [0.98, 0.5, 0.05])
def test_conversions_recover_x0_and_eps(kind, alpha_bar):
    x0, eps, x, a, s, outputs = state(alpha_bar)
    m = outputs[kind]
    got_x0 = to_x0(kind, m, x, a, s)
    got_eps = to_eps(kind, m, x, a, s, got_x0)
    # Each side is a few float32 operations on values of order 1, divided by at most min(a, s).
    bound = 8 * U32 * (1 + np.abs(x) + np.abs(m)).max() / min(a, s)
    assert np.abs(got_x0 - x0).max() <= bound
    assert np.abs(got_eps - eps).max() <= bound


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_plan_x0_coefficients_are_to_x0_bit_for_bit(kind):
    _, _, x, a, s, outputs = state(0.3)
    m = outputs[kind]
    c_x, c_m, div = x0_coefficients(kind, a, s)
    np.testing.assert_array_equal((c_x * x - c_m * m) / div, to_x0(kind, m, x, a, s))


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_folded_eps_is_scaled_to_eps(kind):
    _, _, x, a, s, outputs = state(0.3)
    m, scale = outputs[kind], F32(0.7)
    c = fold_eps(kind, a, s, scale)
    folded = c.get("c_x", F32(0)) * x + c["c_m"] * m
    want = scale * to_eps(kind, m, x, a, s, to_x0(kind, m, x, a, s))
    if kind == "epsilon":
        np.testing.assert_array_equal(folded, want)
    else:
        assert np.abs(folded - want).max() <= 16 * U32 * (1 + np.abs(x) + np.abs(m)).max() / s


def test_to_x0_writes_into_out_and_never_into_its_inputs():
    _, _, x, a, s, outputs = state(0.5)
    m = outputs["epsilon"].copy()
    x_before, m_before = x.copy(), m.copy()
    out = np.empty_like(x)
    assert to_x0("epsilon", m, x, a, s, out) is out
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(m, m_before)
    assert to_x0("sample", m, x, a, s) is m  # x0 is the output itself
