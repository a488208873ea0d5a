"""Requests as trajectories, and one engine call shared by many of them.

A :class:`Trajectory` is one request's state: its images' sample, its sampler and table, the step
it is at, the sampler's carried state, its own noise source, its conditioning rows and guidance, its
cache schedule and deep feature, a progress callback and a cancelled flag; it takes its own sampler
step. Everything between its state and the prediction that step takes (input scaling, timesteps,
guidance, the graph, variance trimming) is the model side, :class:`runtime.denoiser.Denoiser`. Image inputs
change only where it starts: image-to-image begins mid-table from the image noised to that step
(``begin``, ``initial``), inpainting carries the known image and mask in the sampler's state, and RePaint's
jumps back are steps that call no model (``needs_model``), taken by :func:`advance` before it groups the rest.

:func:`advance` lets the denoiser gather the rows of many trajectories into one engine call per graph
and shape group (:meth:`Denoiser.groups`) with a timestep per row, and lets each trajectory take its
own sampler step with its prediction. The engine takes one timestep per image, so requests at
different steps, with different samplers, step counts, guidance and cache schedules, share calls.

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

from .denoiser import Denoiser
from .errors import EngineError
from .guidance import NO_GUIDANCE, Guidance
from .images import to_uint8, to_unit_range
from .noise import NoiseSource
from .schedulers import Sampler
from .schedulers.prediction import predicted_x0

ProgressFn = Callable[[int, int], None]  # (steps done, total steps)


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
        guidance: Guidance = NO_GUIDANCE,
        decode: Callable[[np.ndarray], np.ndarray] | None = None,
        full_steps: frozenset[int] | None = None,
        begin: int = 0,
        initial: Callable[[np.ndarray], np.ndarray] | None = None,
        state: Any = None,
    ):
        """``conditioning``: the engine's conditioning inputs for this trajectory's engine rows (two per
        image when ``guidance`` is active: unconditional rows first). ``decode``: a latent model's decoder
        (final sample → image in [-1, 1]). ``full_steps``: feature reuse's cache schedule, the steps that run
        the full graph (the others run the shallow one; None: every step runs the plain engine). ``begin``: the
        table step the loop begins at (image-to-image); ``initial``: the first sample from the first noise draw
        (image-to-image: the image noised to step ``begin``; None: the noise times ``init_noise_sigma``); ``state``:
        the sampler's state before the first step (inpainting: the known image and mask)."""
        self.decode = decode
        self.full_steps = full_steps
        self.feature: np.ndarray | None = None  # the deep feature of the last full step, one row per engine row
        self.sampler = sampler
        self.table = table
        self.source = source
        self.shape = tuple(int(d) for d in shape)  # [images, C, H, W]
        self.guidance = guidance
        self.conditioning = dict(conditioning or {})
        self.progress = progress
        self.begin = begin
        self.initial = initial
        self.step_index = begin
        self.state: Any = state
        self.cancelled = False
        self.preview_every = 0  # > 0: every this many steps (and at the last), keep the predicted x0 in ``preview``
        self.preview: np.ndarray | None = None  # uint8 [images, H, W, C], the latest; a reader takes it (sets None)
        self._x: np.ndarray | None = None
        self._spare: tuple[np.ndarray, np.ndarray] | None = None  # working space for steps that take it

    @property
    def images(self) -> int:
        return self.shape[0]

    @property
    def rows(self) -> int:
        """Engine rows per step: two per image when guided."""
        return self.shape[0] * self.guidance.rows_per_image

    @property
    def num_steps(self) -> int:
        """The steps this trajectory takes (from ``begin``; RePaint's jumps back count as steps)."""
        return self.table.num_steps - self.begin

    @property
    def steps_done(self) -> int:
        return self.step_index - self.begin

    @property
    def done(self) -> bool:
        return self.step_index >= self.table.num_steps

    @property
    def x(self) -> np.ndarray:
        """The current sample; the initial noise (times the sampler's ``init_noise_sigma``) is drawn on first
        use (so a queued request holds none)."""
        if self._x is None:
            noise = self.source.draw(self.shape)
            if self.initial is not None:
                noise = np.ascontiguousarray(self.initial(noise), dtype=np.float32)
            elif self.table.init_noise_sigma != 1:
                noise *= np.float32(self.table.init_noise_sigma)
            self._x = noise
        return self._x

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

    def needs_model(self) -> bool:
        return self.table.needs_model(self.step_index)

    def step_noise(self) -> np.ndarray:
        """This step's noise, drawn from the trajectory's own stream (after the initial draw); a step that takes
        several arrays gets them stacked."""
        self.x  # the initial draw comes first in the stream
        draws = self.table.noise_draws(self.step_index)
        if draws == 1:
            return self.source.draw(self.shape)
        return np.stack([self.source.draw(self.shape) for _ in range(draws)])

    def model_free_steps(self) -> None:
        """Takes the steps ahead that call no model (RePaint's jumps back), up to the next that does."""
        while not self.done and not self.needs_model():
            self.apply(None, self.step_noise() if self.needs_noise() else None)

    def apply(self, model_output: np.ndarray | None, noise: np.ndarray | None) -> None:
        """Takes the sampler step with this step's prediction (:meth:`runtime.denoiser.Denoiser.predict`; None
        on a step that calls no model)."""
        i = self.step_index
        old = self.x
        if self.preview_every and model_output is not None and (
                (self.steps_done + 1) % self.preview_every == 0 or i + 1 == self.table.num_steps):
            self.preview = self._preview(i, model_output, old)
        if self._spare is None:
            self._spare = (np.empty_like(old), np.empty_like(old))
        self._x, self.state = self.sampler.step(self.table, i, model_output, old, noise, self.state, self._spare)
        if self._x is self._spare[0]:  # the step wrote into our buffer: the old sample is the next one
            self._spare = (old, self._spare[1])
        self.step_index = i + 1
        if self.done:
            self.feature = None
        if self.progress is not None:
            self.progress(self.steps_done, self.num_steps)

    def _preview(self, i: int, model_output: np.ndarray, sample: np.ndarray) -> np.ndarray | None:
        x0 = predicted_x0(self.table, i, model_output, sample)
        if x0 is None:
            return None
        return to_uint8(x0 if self.decode is None else self.decode(x0), self.table.unit_data)

    def nonfinite_error(self) -> EngineError:
        i = self.step_index
        return EngineError(
            f"the model returned NaN or Inf at step {self.steps_done + 1}/{self.num_steps} (timestep "
            f"{self.table.model_timestep(i):g}); no image was written. Check the engine against the FP32 ONNX "
            "model (rebuild with `make engine`)"
        )


def advance(
    denoiser: Denoiser, trajectories: Sequence[Trajectory], pool: Executor | None = None
) -> list[tuple[Trajectory, BaseException]]:
    """One engine call per :meth:`Denoiser.groups` group of ``trajectories``, then each one's own step.

    Each step's noise is drawn on ``pool`` while the engine runs (numpy and the backends release the
    GIL); a trajectory's draws stay in its stream's order. Returns the trajectories that failed this
    step with their error (a NaN in their prediction, an error of their progress callback); the others
    have advanced. An error of the engine call itself is raised: it concerns every row of it.
    """
    failed: list[tuple[Trajectory, BaseException]] = []
    ready = []
    for tr in trajectories:  # steps that call no model (RePaint's jumps back) first: they are the trajectory's own
        try:
            tr.model_free_steps()
        except Exception as exc:  # a progress callback's error belongs to its own request
            failed.append((tr, exc))
            continue
        if not tr.done:
            ready.append(tr)
    for group in denoiser.groups(ready):
        for tr in group:
            tr.x  # initial draws first, in the caller's thread
        draws = [pool.submit(tr.step_noise) if pool is not None and tr.needs_noise() else None for tr in group]
        try:
            predictions = denoiser.predict(group)
        except BaseException:
            for draw in draws:
                if draw is not None:
                    draw.cancel()
            raise
        for tr, draw, prediction in zip(group, draws, predictions):
            noise = draw.result() if draw is not None else tr.step_noise() if tr.needs_noise() else None
            if not np.isfinite(prediction).all():
                failed.append((tr, tr.nonfinite_error()))
                continue
            try:
                tr.apply(prediction, noise)
            except Exception as exc:  # a progress callback's error belongs to its own request
                failed.append((tr, exc))
    return failed
