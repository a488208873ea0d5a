"""The embeddable sampling API: load an engine once, sample many times, get uint8 images."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .cache import AUTO, resolve_cache_dir
from .conditioning import Conditioning, request_rows
from .denoiser import Denoiser
from .engine import open_engine
from .images import to_uint8, to_unit_range  # noqa: F401 (re-exported: the API's image helpers)
from .errors import InputError, ManifestError, RequestTimeoutError
from .reuse import ReuseGraphs, full_steps, graphs_for
from .image_input import shape_text
from .io_spec import IMAGE, IMAGE_CONDITION, LATENTS, TIMESTEP_KINDS
from .manifest import DECODER_PLAN_NAME, ArtifactEntry, Manifest, file_matches
from .noise import NoiseSource
from .requests import SampleRequest
from .results import SampleResult, SamplerSettings
from .runners.base import Runner
from .schedulers import SAMPLERS, Sampler, SchedulerConfig, build_table, scheduler_name_for
from .schedulers.config import read_config_file
from .selection import resolve_engine
from .trajectory import ProgressFn, Trajectory, advance


def resolve_scheduler_config(manifest_config: dict[str, Any], override: str | Path | dict | None) -> dict[str, Any]:
    """The diffusers scheduler config to sample with: the manifest's, or the override (a dict or a file)."""
    if override is None:
        return dict(manifest_config)
    if isinstance(override, dict):
        return dict(override)
    return read_config_file(override)


def read_conditioning(manifest: Manifest) -> Conditioning:
    """The manifest's conditioning section with its files (beside the manifest, hash-checked)."""

    def check_hash(path: Path, digest: str | None) -> None:
        if not file_matches(path, digest):
            raise ManifestError(f"{path} is missing or does not match the manifest's sha256; re-export the model")

    return Conditioning.from_manifest(manifest.conditioning, manifest.path.parent, manifest.io, check_hash)


def decoder_for(manifest: Manifest, unet: ArtifactEntry) -> str:
    """The decoder artifact to run beside a UNet engine: the TensorRT plan beside a plan (when built), else the
    FP32 ONNX decoder."""
    if unet.kind == "tensorrt" and DECODER_PLAN_NAME in manifest.artifacts:
        return DECODER_PLAN_NAME
    return manifest.decoder_artifact


IMG2IMG_STRENGTH = 0.8  # diffusers' img2img pipelines' default strength


def img2img_begin(steps: int, strength: float | None) -> int:
    """The step image-to-image begins at, as diffusers' img2img pipelines' ``get_timesteps`` (the samplers that
    take an image have ``order`` 1): ``steps - min(int(steps * strength), steps)``; refused where no step remains."""
    strength = IMG2IMG_STRENGTH if strength is None else strength
    init = min(int(steps * strength), steps)
    if init == 0:
        raise InputError(f"strength {strength:g} with {steps} steps runs no step (int(steps * strength) is 0); raise "
                         f"strength to at least {1 / steps:.4g} or take more steps")
    return steps - init


class Pipeline:
    """A loaded engine plus its scheduler.

    >>> with Pipeline.load("engines/unet.onnx") as pipe:          # doctest: +SKIP
    ...     images = pipe(count=2, steps=50, seed=0, noise="torch")  # uint8 [2, H, W, 3]
    ...     result = pipe.generate(SampleRequest(scheduler="ddim", steps=20))  # images + the settings used
    """

    def __init__(self, runner: Runner, scheduler_config: dict[str, Any], engine_sha256: str | None = None,
                 conditioning: Conditioning | None = None, decoder: Runner | None = None,
                 reuse: ReuseGraphs | None = None):
        """Wraps an active ``runner``; :meth:`load` is the usual way in.

        ``scheduler_config`` is a diffusers scheduler config dict (any scheduler's keys); each
        sampler takes from it what diffusers' ``from_config`` would. ``conditioning``: what a
        conditional engine's labels and unconditional inputs are (the manifest's; default: none declared).
        ``decoder``: a latent model's decoder (an active runner), which turns the final sample into the image.
        ``reuse``: the engine's feature-reuse graphs (opened by the first request with a cache schedule).
        """
        self.runner = runner
        self.reuse = reuse
        self.decoder = decoder
        self.conditioning = conditioning or Conditioning()
        self.engine_sha256 = engine_sha256
        self.scheduler_config = dict(scheduler_config)
        self.default_scheduler = scheduler_name_for(self.scheduler_config)
        self._tables: dict[tuple, tuple[Sampler, Any]] = {}
        self._lock = threading.Lock()
        # refuse an unusable config now (at a step count every sampler takes: PNDM's warm-up needs 4)
        self.table(self.default_scheduler, min(10, SchedulerConfig.from_dict(self.scheduler_config, self.default_scheduler)
                                              .num_train_timesteps))
        self.channels, self.height, self.width = (int(d) for d in runner.io.sample.shape[1:])
        self.denoiser = Denoiser(runner, reuse)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images it returns: the sample's, or a latent model's decoded image's."""
        if self.decoder is None:
            return self.height, self.width, self.channels
        channels, height, width = (int(d) for d in self.decoder.io.outputs[0].shape[1:])
        return height, width, channels

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """A latent model's final sample → its image in [-1, 1] (the decoder engine)."""
        return self.decoder.infer({LATENTS: latents})[IMAGE]

    @classmethod
    def load(
        cls,
        engine: str | Path,
        scheduler_config: str | Path | dict | None = None,
        device: str = "auto",
        threads: int | None = None,
        cache_dir: str | Path | None = AUTO,
        precision: str = "auto",
    ) -> Pipeline:
        """Opens ``engine`` (checked against its manifest): an engine file, or an engines folder, whose engine of
        ``precision`` runs ("auto": the fastest timed on this CPU, see :mod:`runtime.selection`). ``cache_dir``: where
        optimized engines are cached per machine ("auto": ``$DDPM_DEPLOY_CACHE_DIR`` or ``~/.cache/ddpm-deploy``;
        None: no cache)."""
        cache = resolve_cache_dir(cache_dir)
        engine = resolve_engine(engine, precision)
        runner, manifest, entry = open_engine(engine, device=device, threads=threads, cache_dir=cache)
        decoder = None
        try:
            if manifest.decoder:  # a latent model: its decoder beside it
                decoder = open_engine(manifest.path.parent / decoder_for(manifest, entry), device=device, threads=threads,
                                      cache_dir=cache, role="decoder")[0]
            try:
                pair, refusal = graphs_for(manifest, Path(engine).name, entry), None
            except InputError as exc:  # graphs for other engines only: refused when a request asks for a schedule
                pair, refusal = None, exc
            reuse = None if pair is None and refusal is None else ReuseGraphs(
                pair, lambda name, role, like: open_engine(manifest.path.parent / name, device=device, threads=threads,
                                                           cache_dir=cache, role=role, like=like)[0], refusal)
            return cls(runner, resolve_scheduler_config(manifest.scheduler_config, scheduler_config), entry.sha256,
                       read_conditioning(manifest), decoder, reuse)
        except BaseException:
            runner.deactivate()
            if decoder is not None:
                decoder.deactivate()
            raise

    def close(self) -> None:
        self.runner.deactivate()
        if self.decoder is not None:
            self.decoder.deactivate()
        if self.reuse is not None:
            self.reuse.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def table(self, scheduler: str | None = None, steps: int | None = None, eta: float = 0.0,
              timesteps: tuple[int, ...] | None = None, tuned: bool = False, begin: int = 0, **options: Any):
        """(sampler, table) for a scheduler name, step count (None: the sampler's default), eta and timesteps
        given outright (None: from the step count; ``tuned``: the tuned ones for the sampler and steps), a loop
        beginning at step ``begin`` (image-to-image) and a sampler's own options (RePaint's jumps); cached."""
        key = (scheduler or self.default_scheduler, steps, eta, timesteps, tuned, begin, tuple(sorted(options.items())))
        with self._lock:
            made = self._tables.get(key)
        if made is None:
            if begin:
                sampler, table = self.table(key[0], steps, eta, timesteps, tuned, **options)
                made = sampler, (table if sampler.start_at is None else sampler.start_at(table, begin))
            else:
                made = self._checked(*build_table(key[0], self.scheduler_config, steps, eta, timesteps, tuned, **options))
            with self._lock:
                made = self._tables.setdefault(key, made)
        return made

    def request_table(self, request: SampleRequest) -> tuple[Sampler, Any, int]:
        """(sampler, table, the step its loop begins at) of ``request``: image-to-image begins where diffusers'
        img2img pipelines do (``get_timesteps``), every other request at 0."""
        args = (request.sampler_name, request.steps, request.eta, request.timesteps, request.tuned_timesteps)
        jumps = dict(jump_length=request.jump_length, jump_n_sample=request.jump_n_sample)
        sampler, table = self.table(*args, **jumps)
        if sampler.inpaint_state is not None and not request.inpainting:
            raise InputError(f"the {sampler.name} sampler (this engine's default) inpaints: give image and mask_image, "
                             "or name another scheduler")
        if not self.img2img(request):
            return sampler, table, 0
        if sampler.add_noise is None:
            takes = [s.name for s in SAMPLERS.values() if s.add_noise is not None]
            raise InputError(f"image-to-image runs with {', '.join(takes)} (as diffusers' img2img pipelines); the "
                             f"{sampler.name} sampler has none")
        begin = img2img_begin(table.num_steps, request.strength)
        return (sampler, *self.table(*args, begin=begin, **jumps)[1:], begin) if begin else (sampler, table, 0)

    def _checked(self, sampler: Sampler, table: Any) -> tuple[Sampler, Any]:
        """Refuses a sampler that feeds another timestep domain than the engine's, or a learned variance the
        engine does not predict."""
        io = self.runner.io
        domain = io.timestep_domain(table.config.num_train_timesteps)
        if sampler.timestep_kind != domain.kind:
            fitting = [s.name for s in SAMPLERS.values() if s.timestep_kind == domain.kind]
            raise InputError(f"the {sampler.name} sampler feeds the timestep as {TIMESTEP_KINDS[sampler.timestep_kind]}, "
                             f"but this engine's timestep is {TIMESTEP_KINDS[domain.kind]}; use {' or '.join(fitting)}")
        if table.learned_variance and not io.learned_variance:
            raise InputError(f"the scheduler config's variance_type {table.config.variance_type!r} needs a model that "
                             "predicts its variance, and this engine outputs the prediction only; use variance_type "
                             "fixed_small")
        return sampler, table

    def noise_source(self, request: SampleRequest) -> NoiseSource:
        seeds = request.image_seeds
        if seeds is not None:
            return NoiseSource.per_image_seeds(request.noise, seeds)
        return NoiseSource.shared(request.noise, request.seed)

    def settings(self, request: SampleRequest) -> SamplerSettings:
        """What ``request`` samples with, defaults resolved (checked against the scheduler config)."""
        sampler, table, _ = self.request_table(request)
        full = full_steps(table.num_steps, request.cache_interval, request.cache_full_steps)
        given = request.timesteps is not None or request.tuned_timesteps
        img2img = self.img2img(request)
        return SamplerSettings(sampler.name, table.inference_steps, request.eta, table.config.to_dict(),
                               None if full is None else tuple(sorted(full)),
                               tuple(int(t) for t in table.timesteps) if given else None,
                               (IMG2IMG_STRENGTH if request.strength is None else request.strength) if img2img else None,
                               (table.jump_length, table.jump_n_sample) if request.inpainting else None)

    def trajectory(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
                   **fields: Any) -> Trajectory:
        """One request (a :class:`SampleRequest`, or its fields as keywords), checked against this engine
        and ready to advance; nothing is drawn yet."""
        request = SampleRequest.create(request, **fields)
        guidance = request.guidance
        rows = request_rows(self.runner.io, self.conditioning, request)
        self.runner.check_batch(request.count * guidance.rows_per_image)  # the engine's batch profile
        sampler, table, begin = self.request_table(request)
        image = self.check_image(request)
        full = self.denoiser.schedule(table.num_steps, request.cache_interval, request.cache_full_steps)
        initial = state = None
        if request.inpainting:
            state = sampler.inpaint_state(image, request.mask_image)
        elif image is not None:
            def initial(noise: np.ndarray) -> np.ndarray:  # the image noised to the first step's level
                return sampler.add_noise(table, begin, image, noise)
        return Trajectory(sampler, table, self.noise_source(request),
                          (request.count, self.channels, self.height, self.width), rows, progress,
                          guidance, decode=self.decode if self.decoder is not None else None, full_steps=full,
                          begin=begin, initial=initial, state=state)

    @property
    def image_conditioned(self) -> bool:
        """Whether the engine takes the request's image as its condition (super-resolution), not as a start."""
        return IMAGE_CONDITION in self.runner.io.input_names

    def img2img(self, request: SampleRequest) -> bool:
        """Whether ``request`` is image-to-image here: an image, no mask, and an engine that does not take the image
        as its condition."""
        return request.image is not None and not request.inpainting and not self.image_conditioned

    def check_image(self, request: SampleRequest) -> np.ndarray | None:
        """The request's starting image (model range; None: none, or the engine's condition, which
        :func:`runtime.conditioning.request_rows` takes), refused where this engine cannot start from it or it is
        not the model's size."""
        image = request.image
        if image is None or self.image_conditioned:
            return None
        if self.decoder is not None:
            raise InputError("image-to-image and inpainting on a latent model need its encoder, which this engine "
                             "folder does not have (only the decoder is exported)")
        want = (self.channels, self.height, self.width)
        if image.shape[1:] != want:
            raise InputError(f"image is {shape_text(image.shape[1:])}; this model takes {shape_text(want)} (images are "
                             "not resized)")
        return image

    def denoise(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
                **fields: Any) -> np.ndarray:
        """The sampling loop; returns the final float32 sample [count, C, H, W] (about [-1, 1]; [0, 1] for score-SDE).

        The request is a :class:`SampleRequest` or its fields as keywords (every field, its range and default:
        ``docs/request.schema.json``; besides them ``conditioning``, a conditional engine's inputs outright, see
        :mod:`runtime.conditioning`). Past ``timeout_s`` the loop stops with :class:`~runtime.errors.RequestTimeoutError`.
        ``progress(done, total)`` is called after every step.
        """
        return self.run(request, progress, **fields).x

    def run(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
            **fields: Any) -> Trajectory:
        """The sampling loop of :meth:`denoise`; returns the finished trajectory (its ``x``, ``unit_images()``,
        ``uint8_images()``)."""
        request = SampleRequest.create(request, **fields)
        trajectory = self.trajectory(request, progress)
        deadline = None if request.timeout_s is None else time.monotonic() + request.timeout_s
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddpm-noise") as pool:
            while not trajectory.done:
                if deadline is not None and time.monotonic() >= deadline:
                    raise RequestTimeoutError(f"the request did not finish within its timeout "
                                              f"({trajectory.steps_done}/{trajectory.num_steps} steps done)")
                for _, error in advance(self.denoiser, [trajectory], pool):
                    raise error
        return trajectory

    def generate(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
                 **fields: Any) -> SampleResult:
        """:meth:`sample`, with the request and the sampler settings it was sampled with (for metadata)."""
        request = SampleRequest.create(request, **fields)
        return self.result(request, self.run(request, progress).uint8_images())

    def result(self, request: SampleRequest, images: np.ndarray,
               settings: SamplerSettings | None = None) -> SampleResult:
        """``images`` of ``request`` with what they were sampled with (``settings``, when already known)."""
        settings = settings or self.settings(request)
        return SampleResult(images, request, settings, self.runner.path.name, self.engine_sha256)

    def sample(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
               **fields: Any) -> np.ndarray:
        """Runs the full sampling loop and returns uint8 images [count, H, W, C] (arguments as :meth:`denoise`).

        ``seed`` seeds one generator for the whole request (diffusers' ``generator=torch.manual_seed(seed)``
        with ``noise="torch"``); ``seeds`` (or ``per_image_seeds``) gives each image its own generator, so
        an image depends only on its own seed.
        """
        return self.run(request, progress, **fields).uint8_images()

    __call__ = sample
