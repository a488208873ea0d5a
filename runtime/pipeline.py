"""The embeddable sampling API: load an engine once, sample many times, get uint8 images."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .engine import open_engine
from .errors import EngineError, InputError
from .io_spec import NOISE_PRED, SAMPLE, TIMESTEP
from .noise import NoiseSource
from .runners.base import Runner
from .schedulers import DDPMTable, SchedulerConfig, ddpm_step, ddpm_table
from .schedulers.tables import check_steps

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (steps done, total steps)


def to_unit_range(sample: np.ndarray) -> np.ndarray:
    """[B,C,H,W] float in [-1, 1] → [0, 1], as diffusers' pipelines do (x / 2 + 0.5, clamped)."""
    return np.clip(sample / np.float32(2) + np.float32(0.5), np.float32(0), np.float32(1))


def to_uint8(sample: np.ndarray) -> np.ndarray:
    """[B,C,H,W] float in [-1, 1] → [B,H,W,C] uint8 with diffusers' arithmetic (then *255, round)."""
    return (to_unit_range(sample).transpose(0, 2, 3, 1) * np.float32(255)).round().astype(np.uint8)


def resolve_scheduler_config(manifest_config: dict[str, Any], override: str | Path | dict | SchedulerConfig | None) -> SchedulerConfig:
    if override is None:
        return SchedulerConfig.from_dict(manifest_config)
    if isinstance(override, SchedulerConfig):
        return override
    if isinstance(override, dict):
        return SchedulerConfig.from_dict(override)
    return SchedulerConfig.from_file(override)


class Pipeline:
    """A loaded engine plus its scheduler.

    >>> with Pipeline.load("engines/unet.onnx") as pipe:          # doctest: +SKIP
    ...     images = pipe(batch=2, steps=50, seed=0, noise="torch")  # uint8 [2, H, W, 3]
    """

    def __init__(self, runner: Runner, scheduler_config: SchedulerConfig, engine_sha256: str | None = None):
        """Wraps an active ``runner``; :meth:`load` is the usual way in."""
        self.runner = runner
        self.engine_sha256 = engine_sha256
        self.scheduler_config = scheduler_config
        self.channels, self.height, self.width = (int(d) for d in runner.io.sample.shape[1:])
        self._tables: dict[int, DDPMTable] = {}

    @classmethod
    def load(
        cls,
        engine: str | Path,
        scheduler_config: str | Path | dict | SchedulerConfig | None = None,
        device: str = "auto",
        threads: int | None = None,
    ) -> "Pipeline":
        runner, manifest, entry = open_engine(engine, device=device, threads=threads)
        config = resolve_scheduler_config(manifest.scheduler_config, scheduler_config)
        runner.activate()
        return cls(runner, config, entry["sha256"])

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def default_steps(self) -> int:
        return self.scheduler_config.num_train_timesteps

    def table(self, steps: int) -> DDPMTable:
        steps = check_steps(steps, self.scheduler_config.num_train_timesteps)
        if steps not in self._tables:
            self._tables[steps] = ddpm_table(self.scheduler_config, steps)
        return self._tables[steps]

    def noise_source(self, batch: int, seed: int | None, seeds: Sequence[int] | None, noise: str) -> NoiseSource:
        if seeds is not None:
            if len(seeds) != batch:
                raise InputError(f"seeds has {len(seeds)} entries for a batch of {batch}; give one seed per image")
            return NoiseSource.per_image_seeds(noise, seeds)
        return NoiseSource.shared(noise, 0 if seed is None else seed)

    def check_batch(self, batch) -> int:
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise InputError(f"batch must be a whole number of at least 1, got {batch!r}")
        self.runner.check_batch(int(batch))
        return int(batch)

    def denoise(
        self,
        batch: int = 1,
        steps: int | None = None,
        seed: int | None = 0,
        seeds: Sequence[int] | None = None,
        noise: str = "numpy",
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """The sampling loop; returns the final float32 sample [batch, C, H, W] (about [-1, 1])."""
        batch = self.check_batch(batch)
        table = self.table(self.default_steps if steps is None else steps)
        source = self.noise_source(batch, seed, seeds, noise)
        shape = (batch, self.channels, self.height, self.width)
        x = source.draw(shape)
        t = np.empty(batch, dtype=np.float32)
        for i in range(table.num_steps):
            t.fill(table.timesteps[i])
            eps = self.runner.infer({SAMPLE: x, TIMESTEP: t})[NOISE_PRED]
            if not np.isfinite(eps).all():
                raise EngineError(
                    f"the model returned NaN or Inf at step {i + 1}/{table.num_steps} (timestep {table.timesteps[i]}); "
                    "no image was written. Check the engine against the FP32 ONNX model (rebuild with `make engine`)"
                )
            z = source.draw(shape) if table.needs_noise(i) else None
            x = ddpm_step(table, i, eps, x, z)
            if progress is not None:
                progress(i + 1, table.num_steps)
        return x

    def sample(self, *args, **kwargs) -> np.ndarray:
        """Runs the full sampling loop and returns uint8 images [batch, H, W, C].

        Arguments as :meth:`denoise`: ``seed`` seeds one generator for the whole batch (diffusers'
        ``generator=torch.manual_seed(seed)`` with ``noise="torch"``); ``seeds`` gives each image its own
        generator, so an image depends only on its own seed. ``progress(done, total)`` is called after
        every step.
        """
        return to_uint8(self.denoise(*args, **kwargs))

    __call__ = sample
