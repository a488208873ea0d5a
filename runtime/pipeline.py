"""The embeddable sampling API: load an engine once, sample many times, get uint8 images."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .cache import AUTO, resolve_cache_dir
from .denoiser import Denoiser
from .engine import open_engine
from .errors import InputError
from .noise import NoiseSource
from .runners.base import Runner
from .schedulers import Sampler, build_table, scheduler_name_for
from .schedulers.config import read_config_file
from .trajectory import ProgressFn, Trajectory, advance


def to_unit_range(sample: np.ndarray) -> np.ndarray:
    """[B,C,H,W] float in [-1, 1] → [0, 1], as diffusers' pipelines do (x / 2 + 0.5, clamped)."""
    return np.clip(sample / np.float32(2) + np.float32(0.5), np.float32(0), np.float32(1))


def to_uint8(sample: np.ndarray) -> np.ndarray:
    """[B,C,H,W] float in [-1, 1] → [B,H,W,C] uint8 with diffusers' arithmetic (then *255, round)."""
    return (to_unit_range(sample).transpose(0, 2, 3, 1) * np.float32(255)).round().astype(np.uint8)


def resolve_scheduler_config(manifest_config: dict[str, Any], override: str | Path | dict | None) -> dict[str, Any]:
    """The diffusers scheduler config to sample with: the manifest's, or the override (a dict or a file)."""
    if override is None:
        return dict(manifest_config)
    if isinstance(override, dict):
        return dict(override)
    return read_config_file(override)


class Pipeline:
    """A loaded engine plus its scheduler.

    >>> with Pipeline.load("engines/unet.onnx") as pipe:          # doctest: +SKIP
    ...     images = pipe(batch=2, steps=50, seed=0, noise="torch")  # uint8 [2, H, W, 3]
    """

    def __init__(self, runner: Runner, scheduler_config: dict[str, Any], engine_sha256: str | None = None):
        """Wraps an active ``runner``; :meth:`load` is the usual way in.

        ``scheduler_config`` is a diffusers scheduler config dict (any scheduler's keys); each
        sampler takes from it what diffusers' ``from_config`` would.
        """
        self.runner = runner
        self.engine_sha256 = engine_sha256
        self.scheduler_config = dict(scheduler_config)
        self.default_scheduler = scheduler_name_for(self.scheduler_config)
        build_table(self.default_scheduler, self.scheduler_config, 1)  # refuse an unusable config now
        self.channels, self.height, self.width = (int(d) for d in runner.io.sample.shape[1:])
        self.denoiser = Denoiser(runner)
        self._tables: dict[tuple, tuple[Sampler, Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        engine: str | Path,
        scheduler_config: str | Path | dict | None = None,
        device: str = "auto",
        threads: int | None = None,
        cache_dir: str | Path | None = AUTO,
    ) -> Pipeline:
        """Opens ``engine`` (checked against its manifest). ``cache_dir``: where optimized engines are
        cached per machine ("auto": ``$DDPM_DEPLOY_CACHE_DIR`` or ``~/.cache/ddpm-deploy``; None: no cache)."""
        runner, manifest, entry = open_engine(engine, device=device, threads=threads, cache_dir=resolve_cache_dir(cache_dir))
        try:
            return cls(runner, resolve_scheduler_config(manifest.scheduler_config, scheduler_config), entry.sha256)
        except BaseException:
            runner.deactivate()
            raise

    def close(self) -> None:
        self.runner.deactivate()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def table(self, scheduler: str | None = None, steps: int | None = None, eta: float = 0.0):
        """(sampler, table) for a scheduler name, step count (None: the sampler's default) and eta; cached."""
        key = (scheduler or self.default_scheduler, steps, eta)
        with self._lock:
            if key not in self._tables:
                self._tables[key] = build_table(key[0], self.scheduler_config, steps, eta)
            return self._tables[key]

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

    def trajectory(
        self,
        batch: int = 1,
        steps: int | None = None,
        seed: int | None = 0,
        seeds: Sequence[int] | None = None,
        noise: str = "numpy",
        progress: ProgressFn | None = None,
        scheduler: str | None = None,
        eta: float = 0.0,
        conditioning: dict[str, np.ndarray] | None = None,
    ) -> Trajectory:
        """One request, checked and ready to advance (arguments as :meth:`denoise`); nothing is drawn yet."""
        batch = self.check_batch(batch)
        sampler, table = self.table(scheduler, steps, eta)
        source = self.noise_source(batch, seed, seeds, noise)
        cond = self.denoiser.check_conditioning(conditioning, batch)
        return Trajectory(sampler, table, source, (batch, self.channels, self.height, self.width), cond, progress)

    def denoise(
        self,
        batch: int = 1,
        steps: int | None = None,
        seed: int | None = 0,
        seeds: Sequence[int] | None = None,
        noise: str = "numpy",
        progress: ProgressFn | None = None,
        scheduler: str | None = None,
        eta: float = 0.0,
        conditioning: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """The sampling loop; returns the final float32 sample [batch, C, H, W] (about [-1, 1]).

        ``scheduler``: ddpm, ddim or dpmpp-2m (default: the one the scheduler config was written for);
        ``steps``: default the sampler's own (``runtime.schedulers.default_steps_help()``); ``eta``: DDIM's noise scale;
        ``conditioning``: the engine's inputs besides sample and timestep, if it has any.
        """
        trajectory = self.trajectory(batch, steps, seed, seeds, noise, progress, scheduler, eta, conditioning)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddpm-noise") as pool:
            while not trajectory.done:
                for _, error in advance(self.denoiser, [trajectory], pool):
                    raise error
        return trajectory.x

    def sample(self, *args, **kwargs) -> np.ndarray:
        """Runs the full sampling loop and returns uint8 images [batch, H, W, C].

        Arguments as :meth:`denoise`: ``seed`` seeds one generator for the whole batch (diffusers'
        ``generator=torch.manual_seed(seed)`` with ``noise="torch"``); ``seeds`` gives each image its own
        generator, so an image depends only on its own seed. ``progress(done, total)`` is called after
        every step.
        """
        return to_uint8(self.denoise(*args, **kwargs))

    __call__ = sample
