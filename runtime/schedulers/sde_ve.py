"""Score-SDE VE predictor-corrector sampling (Song et al. 2021, algorithms 2 and 4) as data plus a pure
step, equal to diffusers' ``ScoreSdeVeScheduler`` inside ``ScoreSdeVePipeline``.

For each of the K noise levels the pipeline runs ``correct_steps`` Langevin corrector calls and one
reverse-diffusion predictor call, all at the same sigma (the engine's timestep input is sigma
itself: NCSN++ embeds its log and divides its output by it). Each call is one step of this table
(K * (correct_steps + 1) in all) and draws its own noise::

    corrector:  e = 2 (snr * |z| / |score|)^2 ;  x = x + e * score + sqrt(2 e) * z
    predictor:  g^2 = sigma_i^2 - sigma_{i-1}^2 ;  mean = x + g^2 * score ;  x = mean + g * z

where |.| is the mean over the request's images of each image's L2 norm (diffusers couples a
request's images there). The result is the last predictor's mean (no noise), data in [0, 1]; the
first sample is ``sigma_max * z``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SchedulerConfigError
from .config import Sampler, SchedulerConfig, StepTable, register
from .tables import check_steps, f32_exp, torch_linspace_f32

F32 = np.float32


@dataclass(frozen=True)
class SdeVeTable(StepTable):
    config: SchedulerConfig
    k: int  # noise levels (the request's steps)
    timesteps: np.ndarray  # float32 [calls]: sigma of each call (the engine's timestep)
    corrector: np.ndarray  # bool [calls]
    diffusion: np.ndarray  # float32 [calls]: g, on predictor calls

    unit_data = True

    @property
    def inference_steps(self) -> int:
        return self.k

    @property
    def init_noise_sigma(self) -> float:
        return self.config.sigma_max

    def needs_noise(self, i: int) -> bool:
        return i < self.num_steps - 1  # the last predictor returns its mean


def sde_ve_table(config: SchedulerConfig, num_inference_steps: int) -> SdeVeTable:
    k = check_steps(num_inference_steps, config.num_train_timesteps)
    smin, smax, eps = config.sigma_min, config.sigma_max, config.sampling_eps
    t = torch_linspace_f32(1.0, eps, k)  # set_timesteps
    ratio = np.float64(F32(smax / smin))
    sigmas = (F32(smin) * np.power(ratio, t.astype(np.float64)).astype(F32)).astype(F32)  # set_sigmas
    discrete = f32_exp(torch_linspace_f32(np.log(smin), np.log(smax), k))
    index = (t * F32(k - 1)).astype(np.int64)  # step_pred: (t * (K - 1)).long(), truncating
    sigma = discrete[index]
    adjacent = np.where(index == 0, F32(0), discrete[np.maximum(index - 1, 0)]).astype(F32)
    g = np.sqrt(sigma * sigma - adjacent * adjacent).astype(F32)
    per = config.correct_steps + 1
    return SdeVeTable(
        config=config,
        k=k,
        timesteps=np.repeat(sigmas, per).astype(F32),
        corrector=np.tile(np.arange(per) < config.correct_steps, k),
        diffusion=np.repeat(g, per).astype(F32),
    )


def _mean_norm(x: np.ndarray) -> F32:
    """torch.norm(x.reshape(B, -1), dim=-1).mean(), in float32 (accumulated in float64)."""
    return F32(np.mean(np.sqrt(np.sum(np.square(x.reshape(len(x), -1), dtype=np.float64), axis=1)).astype(F32)))


def sde_ve_step(table: SdeVeTable, i: int, model_output: np.ndarray, sample: np.ndarray, noise: np.ndarray | None):
    if table.corrector[i]:  # step_correct
        grad_norm, noise_norm = _mean_norm(model_output), _mean_norm(noise)
        step_size = (F32(table.config.snr) * noise_norm / grad_norm) ** 2 * F32(2)
        mean = sample + step_size * model_output
        return mean + np.sqrt(step_size * F32(2)) * noise
    g = table.diffusion[i]  # step_pred
    mean = sample - (F32(0) - (g * g) * model_output)
    if not table.needs_noise(i):
        return mean
    return mean + g * noise


def _validate(config: SchedulerConfig) -> None:
    if not 0 < config.sigma_min < config.sigma_max:
        raise SchedulerConfigError(f"need 0 < sigma_min < sigma_max, got {config.sigma_min!r}, {config.sigma_max!r}")
    if not 0 < config.sampling_eps < 1:
        raise SchedulerConfigError(f"sampling_eps must lie in (0, 1), got {config.sampling_eps!r}")
    c = config.correct_steps
    if isinstance(c, bool) or not isinstance(c, int) or c < 0:
        raise SchedulerConfigError(f"correct_steps must be a whole number >= 0, got {c!r}")
    n = config.num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SchedulerConfigError(f"num_train_timesteps must be a positive integer, got {n!r}")


SAMPLER = register(
    Sampler(
        name="sde-ve",
        diffusers_class="ScoreSdeVeScheduler",
        keys={"num_train_timesteps": 2000, "snr": 0.15, "sigma_min": 0.01, "sigma_max": 1348.0, "sampling_eps": 1e-5,
              "correct_steps": 1},
        make_table=lambda config, steps, eta: sde_ve_table(config, steps),
        step=lambda table, i, model_output, sample, noise, state, out=None: (sde_ve_step(table, i, model_output, sample, noise), None),
        default_steps=None,  # ScoreSdeVePipeline's: 2000, the training discretisation
        validate=_validate,
        timestep_kind="sigma",
        common_keys=False,
    )
)
