"""What the model predicts, and how every sampler turns it into x0 (the data prediction) and epsilon.

A diffusion model at timestep t sees ``x_t = alpha_t * x0 + sigma_t * eps`` (DDPM: alpha_t =
sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t); DPM-Solver++ uses its own alpha_t, sigma_t of the
same meaning) and predicts one of

* ``epsilon``: the noise eps (Ho et al. 2020, eq. 11); then x0 = (x_t - sigma_t * eps) / alpha_t
  (eq. 15 of Song et al. 2021, DDIM: the "predicted x0");
* ``sample``: x0 itself; then eps = (x_t - alpha_t * x0) / sigma_t;
* ``v_prediction``: v = alpha_t * eps - sigma_t * x0 (Salimans & Ho 2022, section 4); then
  x0 = alpha_t * x_t - sigma_t * v and eps = alpha_t * v + sigma_t * x_t (alpha² + sigma² = 1).

This module is the one place these conversions live: the numpy steps call :func:`to_x0` and
:func:`to_eps`, and the plan format (:mod:`runtime.steps`) writes them as coefficients with
:func:`x0_coefficients` and :func:`fold_eps`, in the same float32 order of operations as diffusers.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def to_x0(prediction_type: str, model_output: np.ndarray, sample: np.ndarray, alpha: F32, sigma: F32,
          out: np.ndarray | None = None) -> np.ndarray:
    """x0 from the model output, as diffusers' schedulers compute it, into ``out`` (or a new array);
    for "sample" prediction the model output itself is x0 and is returned as is."""
    if prediction_type == "epsilon":  # x0 = (x_t - sigma * eps) / alpha
        x0 = np.multiply(model_output, sigma, out=out)
        np.subtract(sample, x0, out=x0)
        return np.divide(x0, alpha, out=x0)
    if prediction_type == "sample":
        return model_output
    x0 = np.multiply(sample, alpha, out=out)  # v_prediction: x0 = alpha * x_t - sigma * v
    return np.subtract(x0, sigma * model_output, out=x0)


def to_eps(prediction_type: str, model_output: np.ndarray, sample: np.ndarray, alpha: F32, sigma: F32,
           x0: np.ndarray) -> np.ndarray:
    """epsilon from the model output (``x0``: :func:`to_x0`'s result for the same inputs), as diffusers' DDIM."""
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "sample":  # eps = (x_t - alpha * x0) / sigma
        return (sample - alpha * x0) / sigma
    return alpha * model_output + sigma * sample  # v_prediction: eps = alpha * v + sigma * x_t


def x0_coefficients(prediction_type: str, alpha: F32, sigma: F32) -> tuple[F32, F32, F32]:
    """(x0_x, x0_m, x0_div) such that ``(x0_x * x - x0_m * m) / x0_div`` is :func:`to_x0`, rounding for rounding."""
    if prediction_type == "epsilon":
        return F32(1), sigma, alpha
    if prediction_type == "sample":
        return F32(0), F32(-1), F32(1)
    return alpha, sigma, F32(1)  # v_prediction


def fold_eps(prediction_type: str, alpha: F32, sigma: F32, scale: F32) -> dict[str, F32]:
    """``scale * eps`` as plan coefficients: ``c_m`` times the model output plus ``c_x`` times the sample.
    For epsilon prediction that is exact; for the others it is :func:`to_eps` folded into two products
    (exact in real arithmetic, a few float32 roundings apart in practice)."""
    if prediction_type == "epsilon":
        return dict(c_m=scale)
    if prediction_type == "sample":  # eps = (x - alpha * m) / sigma, from the unclipped x0 = m
        return dict(c_x=F32(scale / sigma), c_m=F32(-scale * alpha / sigma))
    return dict(c_x=F32(scale * sigma), c_m=F32(scale * alpha))  # v_prediction: eps = alpha * m + sigma * x


def predicted_x0(table, i: int, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray | None:
    """The model's current estimate of the final sample at step ``i`` (for previews, not for stepping): x0 from the
    prediction at the table's model timestep, with alpha_bar of the training schedule (interpolated between
    training timesteps where the table's timestep is fractional). None for samplers whose sample is not
    ``alpha_t * x0 + sigma_t * eps`` (variance-exploding and consistency samplers)."""
    from .tables import alphas_cumprod

    config = getattr(table, "config", None)
    if config is None or table.init_noise_sigma != 1 or table.unit_data:
        return None
    ac = alphas_cumprod(config)
    a = F32(np.interp(float(table.model_timestep(i)), np.arange(len(ac)), ac))
    channels = sample.shape[1]
    return to_x0(config.prediction_type, model_output[:, :channels], sample, np.sqrt(a), np.sqrt(F32(1) - a))
