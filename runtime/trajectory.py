"""Requests as trajectories, and one engine call shared by many of them.

A :class:`Trajectory` is one request's state: its images' sample, its sampler and table, the step
it is at, the sampler's carried state, its own noise source, its conditioning inputs, a progress
callback and a cancelled flag. :func:`advance` gathers the rows of many trajectories into one engine
call with a timestep per row, scatters the model output back and lets each trajectory take its
own sampler step. The engine takes one timestep per image, so requests at different steps, with
different samplers and step counts, share every call. A guided trajectory (classifier-free
guidance) gives the engine two rows per image, its unconditional and its conditional one, and
combines their outputs (:func:`runtime.conditioning.guide`) before its step; guided and unguided
requests, at any scales, share calls like any others. With feature reuse (:mod:`runtime.feature_cache`)
a trajectory's step runs the full graph (which also returns the deep feature the trajectory keeps) or
the shallow graph (fed that feature), per its cache schedule. Requests whose step needs another graph,
or whose conditioning rows differ in shape (cross-attention conditions of different token counts, on
an engine with a dynamic sequence axis), cannot be concatenated: :func:`call_groups` splits those into
one call per graph and shape.

On ONNX Runtime (CPU) the UNet is batch-invariant (a row's output does not depend on the other rows),
so a trajectory advanced among others gives the same image, bit for bit, as the same request alone;
``tests/runtime/test_batching.py`` checks it. TensorRT picks kernels per batch size and does not promise
this: there a batched image equals its unbatched self to within the engine's FP16 tolerance only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .conditioning import guide
from .denoiser import Denoiser
from .errors import EngineError
from .images import to_uint8, to_unit_range
from .io_spec import DEEP_FEATURE, NOISE_PRED
from .noise import NoiseSource
from .schedulers import Sampler

ProgressFn = Callable[[int, int], None]  # (steps done, total steps)
PLAIN = "plain"  # a step that runs the engine itself (no feature reuse)


class Trajectory:
    """One request on its way from noise to an image.

    The sample buffer ``x`` is owned by the trajectory until it is done (steps may write into buffers
    the trajectory keeps for that purpose); read it once :attr:`done` is true.
    """

    def __init__(
        self,
        sampler: Sampler,
        table: Any,
        source: NoiseSource,
        shape: tuple[int, ...],
        conditioning: Mapping[str, np.ndarray] | None = None,
        progress: ProgressFn | None = None,
        guidance_scale: float | None = None,
        decode: Callable[[np.ndarray], np.ndarray] | None = None,
        full_steps: frozenset[int] | None = None,
    ):
        """``conditioning``: the engine's conditioning inputs for this trajectory's engine rows (two per
        image with ``guidance_scale``: unconditional rows first). ``decode``: a latent model's decoder
        (final sample → image in [-1, 1]). ``full_steps``: feature reuse's cache schedule, the steps that run
        the full graph (the others run the shallow one; None: every step runs the plain engine)."""
        self.decode = decode
        self.full_steps = full_steps
        self.feature: np.ndarray | None = None  # the deep feature of the last full step, one row per engine row
        self.sampler = sampler
        self.table = table
        self.source = source
        self.shape = tuple(int(d) for d in shape)  # [images, C, H, W]
        self.guidance_scale = guidance_scale
        self.conditioning = dict(conditioning or {})
        self.progress = progress
        self.step_index = 0
        self.state: Any = None
        self.cancelled = False
        self._x: np.ndarray | None = None
        self._spare: tuple[np.ndarray, np.ndarray] | None = None  # working space for steps that take it

    @property
    def images(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> int:
        """Engine rows per step: two per image when guided."""
        return self.shape[0] * (1 if self.guidance_scale is None else 2)

    @property
    def num_steps(self) -> int:
        return self.table.num_steps

    @property
    def done(self) -> bool:
        return self.step_index >= self.table.num_steps

    @property
    def x(self) -> np.ndarray:
        """The current sample; the initial noise (times the sampler's ``init_noise_sigma``) is drawn on first
        use (so a queued request holds none)."""
        if self._x is None:
            self._x = self.source.draw(self.shape)
            if self.table.init_noise_sigma != 1:
                self._x *= np.float32(self.table.init_noise_sigma)
        return self._x

    def model_input(self) -> np.ndarray:
        """This step's engine rows of the sample (scaled where the sampler scales the model input; each image
        twice when guided)."""
        divisor = self.table.model_input_divisor(self.step_index)
        x = self.x if divisor is None else self.x / divisor
        return x if self.guidance_scale is None else np.concatenate([x, x])

    def graph(self) -> str:
        """The graph this step runs: PLAIN (the engine), or feature reuse's "full" or "shallow" graph."""
        if self.full_steps is None:
            return PLAIN
        return "full" if self.feature is None or self.step_index in self.full_steps else "shallow"

    def timesteps(self) -> np.ndarray:
        return np.full(self.rows, self.table.model_timestep(self.step_index), dtype=np.float32)

    def image(self) -> np.ndarray:
        """The final sample, or a latent model's decoded image (float [images, C, H, W])."""
        return self.x if self.decode is None else self.decode(self.x)

    def unit_images(self) -> np.ndarray:
        """The final images in [0, 1] (clamped), from the sampler's data range."""
        return to_unit_range(self.image(), self.table.unit_data)

    def uint8_images(self) -> np.ndarray:
        """The final images, uint8 [images, H, W, C]."""
        return to_uint8(self.image(), self.table.unit_data)

    def needs_noise(self) -> bool:
        return self.table.needs_noise(self.step_index)

    def step_noise(self) -> np.ndarray:
        """This step's noise, drawn from the trajectory's own stream (after the initial draw)."""
        self.x  # the initial draw comes first in the stream
        return self.source.draw(self.shape)

    def apply(self, model_output: np.ndarray, noise: np.ndarray | None) -> None:
        """Takes the sampler step with this trajectory's rows of the model output (guided first)."""
        if self.guidance_scale is not None:
            model_output = guide(model_output, self.guidance_scale)
        if model_output.shape[1] != self.shape[1] and not self.table.learned_variance:
            model_output = model_output[:, :self.shape[1]]  # the prediction, without the model's variance
        i = self.step_index
        old = self.x
        if self._spare is None:
            self._spare = (np.empty_like(old), np.empty_like(old))
        self._x, self.state = self.sampler.step(self.table, i, model_output, old, noise, self.state, self._spare)
        if self._x is self._spare[0]:  # the step wrote into our buffer: the old sample is the next one
            self._spare = (old, self._spare[1])
        self.step_index = i + 1
        if self.done:
            self.feature = None
        if self.progress is not None:
            self.progress(self.step_index, self.table.num_steps)

    def nonfinite_error(self) -> EngineError:
        i = self.step_index
        return EngineError(
            f"the model returned NaN or Inf at step {i + 1}/{self.table.num_steps} (timestep "
            f"{self.table.model_timestep(i):g}); no image was written. Check the engine against the FP32 ONNX "
            "model (rebuild with `make engine`)"
        )


def _gather(parts: Sequence[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def call_groups(trajectories: Sequence[Trajectory]) -> list[list[Trajectory]]:
    """The trajectories that can share one engine call: all of them, unless they need different graphs
    (feature reuse's full and shallow steps) or their conditioning rows differ in shape (token counts on a
    dynamic sequence axis); then one group per graph and shape, in first-seen order."""
    groups: dict[tuple, list[Trajectory]] = {}
    for tr in trajectories:
        key = (tr.graph(), *((name, value.shape[1:]) for name, value in sorted(tr.conditioning.items())))
        groups.setdefault(key, []).append(tr)
    return list(groups.values())


def advance(
    denoiser: Denoiser, trajectories: Sequence[Trajectory], pool: Executor | None = None
) -> list[tuple[Trajectory, BaseException]]:
    """One engine call for the rows of all ``trajectories`` (one per :func:`call_groups` group), then
    each one's own step.

    Each step's noise is drawn on ``pool`` while the engine runs (numpy and the backends release the
    GIL); a trajectory's draws stay in its stream's order. Returns the trajectories that failed this
    step with their error (a NaN in their rows); the others have advanced. An error of the engine call
    itself is raised: it concerns every row of it.
    """
    groups = call_groups(trajectories)
    if len(groups) > 1:
        return [failure for group in groups for failure in advance(denoiser, group, pool)]
    if not trajectories:
        return []
    for tr in trajectories:
        tr.x  # initial draws first, in the caller's thread
    draws = [pool.submit(tr.step_noise) if pool is not None and tr.needs_noise() else None for tr in trajectories]
    x = _gather([tr.model_input() for tr in trajectories])
    t = _gather([tr.timesteps() for tr in trajectories])
    names = denoiser.conditioning_names
    inputs = {name: _gather([tr.conditioning[name] for tr in trajectories]) for name in names}
    graph = trajectories[0].graph()
    if graph == "shallow":
        inputs[DEEP_FEATURE] = _gather([tr.feature for tr in trajectories])
    try:
        outputs = (denoiser if graph == PLAIN else denoiser.reuse[graph]).outputs(x, t, inputs)
    except BaseException:
        for draw in draws:
            if draw is not None:
                draw.cancel()
        raise
    eps, features = outputs[NOISE_PRED], outputs.get(DEEP_FEATURE)
    failed: list[tuple[Trajectory, BaseException]] = []
    start = 0
    for tr, draw in zip(trajectories, draws):
        rows = eps[start : start + tr.rows]
        if features is not None:
            tr.feature = features[start : start + tr.rows].copy()  # its own: the batch's array is not kept alive
        start += tr.rows
        noise = draw.result() if draw is not None else tr.step_noise() if tr.needs_noise() else None
        if not np.isfinite(rows).all():
            failed.append((tr, tr.nonfinite_error()))
            continue
        try:
            tr.apply(rows, noise)
        except Exception as exc:  # a progress callback's error belongs to its own request
            failed.append((tr, exc))
    return failed
