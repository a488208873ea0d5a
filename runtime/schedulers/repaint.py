"""RePaint inpainting (Lugmayr et al. 2022) as data plus a pure step function, equal to diffusers'
``RePaintScheduler`` driven by ``RePaintPipeline``.

The schedule goes down and, every ``jump_length`` steps, back up ``jump_length`` steps (``jump_n_sample - 1``
times per point): :func:`repaint_table` lays it out as diffusers' ``set_timesteps`` does, one table entry per
entry of its ``timesteps``. An entry below the one before is a model step (the DDIM-style step on the unknown
pixels, the known pixels noised afresh from the image, combined by the mask); an entry above it is a jump back
(``undo_step``: the sample re-noised one training step at a time, ``num_train_timesteps // steps`` of them) that
calls no UNet: ``needs_model(i)`` is false there, and the trajectory takes it as a step like any other.

The known image and the mask ride in the step's state (:func:`inpaint_state`), so the step stays pure. Noise:
a model step draws one array (diffusers draws it whether or not eta uses it: the known part takes it), a jump
back draws one per training step, in diffusers' order.

``eta`` is the request's (RePaintPipeline's ``eta``, default 0); ``jump_length`` and ``jump_n_sample`` are the
request's (RePaintPipeline's defaults: 10 and 10). With per-image generators the images keep their own streams
throughout (diffusers uses the first generator for every image after the initial noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError, brief
from .config import Sampler, SchedulerConfig, StepTable, register
from .ddim import check_eta
from .tables import as_f32, betas, check_steps, cumprod_f32

F32 = np.float32
DEFAULT_JUMP_LENGTH = 10  # RePaintPipeline's defaults
DEFAULT_JUMP_N_SAMPLE = 10


@dataclass(frozen=True)
class RePaintTable(StepTable):
    """K entries (model steps and jumps back), index i = entry i of diffusers' ``timesteps``."""

    config: SchedulerConfig
    eta: float
    steps: int  # the inference steps asked for
    jump_length: int
    jump_n_sample: int
    timesteps: np.ndarray  # int64 [K]
    model_step: np.ndarray  # bool [K]: a model step (else a jump back)
    sqrt_alpha_prod: np.ndarray  # float32 [K] (model steps)
    sqrt_beta_prod: np.ndarray
    sqrt_alpha_prod_prev: np.ndarray
    known_noise_coeff: np.ndarray  # sqrt(1 - alpha_prod_prev)
    direction_coeff: np.ndarray  # sqrt(1 - alpha_prod_prev - std²)
    noise_std: np.ndarray  # eta * sqrt(variance), 0 where t == 0
    undo_keep: np.ndarray  # float32 [K, n] (jumps back): sqrt(1 - beta) of each training step re-noised
    undo_noise: np.ndarray  # float32 [K, n]: sqrt(beta)

    @property
    def inference_steps(self) -> int:
        return self.steps

    @property
    def train_stride(self) -> int:
        return self.config.num_train_timesteps // self.steps

    def needs_model(self, i: int) -> bool:
        return bool(self.model_step[i])

    def needs_noise(self, i: int) -> bool:
        return True

    def noise_draws(self, i: int) -> int:
        return 1 if self.model_step[i] else self.train_stride


def check_jump(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{what} must be a whole number of at least 1, got {brief(value)}")
    return int(value)


def schedule(num_train_timesteps: int, steps: int, jump_length: int, jump_n_sample: int) -> np.ndarray:
    """diffusers' ``RePaintScheduler.set_timesteps``: the timesteps with their jumps back (int64)."""
    steps = min(num_train_timesteps, steps)
    jumps = {j: jump_n_sample - 1 for j in range(0, steps - jump_length, jump_length)}
    out, t = [], steps
    while t >= 1:
        t -= 1
        out.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                out.append(t)
    return np.array(out, dtype=np.int64) * (num_train_timesteps // steps)


def repaint_table(config: SchedulerConfig, steps: int, eta: float = 0.0, jump_length: int = DEFAULT_JUMP_LENGTH,
                  jump_n_sample: int = DEFAULT_JUMP_N_SAMPLE) -> RePaintTable:
    n_train = config.num_train_timesteps
    eta, steps = check_eta(eta), check_steps(steps, n_train)
    jump_length, jump_n_sample = check_jump(jump_length, "jump_length"), check_jump(jump_n_sample, "jump_n_sample")
    ts = schedule(n_train, steps, jump_length, jump_n_sample)
    k, stride = len(ts), n_train // steps
    model_step = np.concatenate([[True], ts[1:] < ts[:-1]])
    one = F32(1.0)
    b = betas(config)
    ac = cumprod_f32(one - b)  # alphas_cumprod, from the betas the jumps back take too
    a = ac[ts]
    prev = ts - stride
    a_prev = np.where(prev >= 0, ac[np.maximum(prev, 0)], one).astype(F32)
    beta_prod = one - a
    variance = (one - a_prev) / beta_prod * (one - a / a_prev)
    std = (F32(eta) * np.sqrt(variance)).astype(F32)
    noise_std = np.where((ts > 0) & (eta > 0), std, F32(0)).astype(F32)
    undo_keep, undo_noise = np.zeros((k, stride), F32), np.zeros((k, stride), F32)
    for i in np.flatnonzero(~model_step):
        beta = b[ts[i - 1] + np.arange(stride)]  # undo_step(sample, t_last): from the entry before, upwards
        undo_keep[i], undo_noise[i] = np.sqrt(one - beta), np.sqrt(beta)
    return RePaintTable(
        config=config, eta=eta, steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample, timesteps=ts,
        model_step=model_step, sqrt_alpha_prod=as_f32(np.sqrt(a)), sqrt_beta_prod=as_f32(np.sqrt(beta_prod)),
        sqrt_alpha_prod_prev=as_f32(np.sqrt(a_prev)), known_noise_coeff=as_f32(np.sqrt(one - a_prev)),
        direction_coeff=as_f32(np.sqrt(np.maximum(one - a_prev - std * std, F32(0)))), noise_std=noise_std,
        undo_keep=undo_keep, undo_noise=undo_noise)


def inpaint_state(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step's state: the known image (model range, [N, C, H, W]) and the mask (1 keeps a pixel, 0 inpaints;
    broadcastable to the image)."""
    return image, mask


def repaint_step(table: RePaintTable, i: int, model_output: np.ndarray | None, sample: np.ndarray,
                 noise: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Entry i: a model step (``RePaintScheduler.step``) or a jump back (``undo_step``, ``model_output`` None;
    ``noise`` stacked, one array per training step). Pure; in diffusers' order of operations."""
    if not table.model_step[i]:
        for keep, scale, z in zip(table.undo_keep[i], table.undo_noise[i], noise):
            sample = keep * sample + scale * z
        return sample
    image, mask = state
    x0 = (sample - table.sqrt_beta_prod[i] * model_output) / table.sqrt_alpha_prod[i]
    if table.config.clip_sample:
        x0 = np.clip(x0, F32(-1), F32(1))
    unknown = table.sqrt_alpha_prod_prev[i] * x0 + table.direction_coeff[i] * model_output
    if table.noise_std[i]:
        unknown = unknown + table.noise_std[i] * noise
    known = table.sqrt_alpha_prod_prev[i] * image + table.known_noise_coeff[i] * noise
    return mask * known + (F32(1.0) - mask) * unknown


SAMPLER = register(
    Sampler(
        name="repaint",
        diffusers_class="RePaintScheduler",
        keys={"clip_sample": True},  # its eta is the pipeline's (the request's), set before sampling
        fixed={"prediction_type": "epsilon"},  # its step reads the model output as the noise
        make_table=repaint_table,
        table_options=("jump_length", "jump_n_sample"),
        step=lambda table, i, m, x, z, state, out=None: (repaint_step(table, i, m, x, z, state), state),
        default_steps=250,  # RePaintPipeline's default
        uses_eta=True,
        inpaint_state=inpaint_state,
    )
)
