"""One sampling request, from every entry point to the engine.

:class:`SampleRequest` is the only shape a request has: the Python API (``Pipeline.sample`` /
``generate`` / ``denoise`` / ``trajectory``, ``StepBatcher.submit``), the CLI (``python -m
runtime.sample``), JSON (the C ABI and the HTTP service) and Triton all build one, through one
constructor each (:meth:`SampleRequest.create`, :meth:`from_args`, :meth:`from_json`,
:meth:`from_triton`), and it checks itself in one place (``__post_init__``). What depends on the
engine (the batch profile, the step count a scheduler config allows, conditioning shapes) is checked
by the pipeline when the request meets it.

Each field declares (:func:`runtime.surfaces.request_field`) what the generated surfaces need: its help
text, the JSON types it accepts, its CLI flag (if any), its Triton input type (if any), its aliases and its
limits. Adding a request field is one field here plus the code that acts on it; the CLI flags, the JSON
schema (``docs/request.schema.json``), the Triton ``config.pbtxt`` inputs and the Triton model's reader follow
from the declaration (:mod:`runtime.surfaces`). What a request gave, with its PNG metadata, is
:class:`runtime.results.SampleResult`.

The image count is ``count`` everywhere (API, CLI ``--count``, JSON, Triton); ``batch`` (``--batch``)
is accepted as its alias: a request's count is not the engine's batch (several requests share one
engine call, and a guided image takes two rows of it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cli import non_negative_number, whole_number
from .errors import InputError, brief
from .guidance import Guidance
from .image_input import image_array, image_file, mask_array, mask_file
from .json_body import NUMBER
from .noise import MAX_SEED, NOISE_KINDS, check_seed
from .results import SampleResult, SamplerSettings  # noqa: F401 (re-exported: their module is runtime.results)
from .schedulers import SAMPLERS, check_eta, default_steps_help
from .schedulers.repaint import DEFAULT_JUMP_LENGTH, DEFAULT_JUMP_N_SAMPLE, check_jump
from .surfaces import RequestSurfaces, npy_file, request_field, whole_number_list

def _is_whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _whole_at_least(value: Any, minimum: int, rule: str) -> int | None:
    """An optional whole number >= ``minimum`` as an int; InputError("``rule``, got ...") otherwise."""
    if value is not None and (not _is_whole(value) or value < minimum):
        raise InputError(f"{rule}, got {brief(value)}")
    return None if value is None else int(value)


def _whole_numbers(value: Any, rule: str, ascending: bool = False) -> tuple[int, ...] | None:
    """An optional non-empty list of whole numbers >= 0 (strictly ascending where asked) as a tuple;
    InputError("``rule``, got ...") otherwise."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)) or len(value) == 0 \
            or not all(_is_whole(x) and x >= 0 for x in value) \
            or (ascending and any(a >= b for a, b in zip(value, value[1:]))):
        raise InputError(f"{rule}, got {brief(value)}")
    return tuple(int(x) for x in value)


def check_guidance_scale(scale: Any) -> float:
    """A finite number >= 1 (1: no guidance; diffusers guides above 1), as a float; InputError otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)) \
            or not 1 <= float(scale) < math.inf:
        raise InputError(f"guidance_scale must be a number >= 1 (1: no guidance), got {brief(scale)}")
    return float(scale)


MAX_EMBEDDING_VALUES = 1 << 24  # 64 MiB of float32 per request: past any engine's condition


def _embeddings(value: Any, what: str) -> np.ndarray:
    """A request's embeddings as float32 [sequence, dim] or [n, sequence, dim], finite; InputError otherwise."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise InputError(f"{what} must be a float array (float16, float32 or float64), got {value.dtype}")
        arr = value
    elif isinstance(value, (list, tuple)):
        try:
            arr = np.array(value)
        except (ValueError, TypeError):
            raise InputError(f"{what} must be a rectangular array of numbers") from None
    else:
        raise InputError(f"{what} must be an array of numbers, got {brief(value)}")
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        got = {"U": "text", "S": "text", "b": "booleans", "O": "a ragged or mixed array"}.get(arr.dtype.kind, str(arr.dtype))
        raise InputError(f"{what} must hold numbers (float32), got {got}")
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise InputError(f"{what} must be [sequence, dim] or [count, sequence, dim], got shape {list(arr.shape)}")
    if arr.size > MAX_EMBEDDING_VALUES:
        raise InputError(f"{what} has {arr.size} values, more than {MAX_EMBEDDING_VALUES}")
    with np.errstate(over="ignore"):
        arr = np.array(arr, dtype=np.float32, order="C")  # a copy: the caller's array stays theirs (and writable)
    if not np.isfinite(arr).all():
        raise InputError(f"{what} holds NaN or Inf (or values beyond float32)")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True)
class SampleRequest(RequestSurfaces):
    """One request: ``count`` images, sampled with one sampler from seeded noise.

    ``seed`` seeds one generator for the whole request (diffusers' ``generator=torch.manual_seed(seed)``
    with ``noise="torch"``); ``per_image_seeds`` gives image *i* its own generator seeded ``seed + i``,
    and ``seeds`` names each image's seed outright: either way an image depends only on its own seed.
    """

    count: int = request_field(1, "images to sample (default 1)", json=(int,), cli=whole_number(1), triton="TYPE_INT32",
                               aliases=("batch",), limits={"minimum": 1})
    seed: int = request_field(0, "seed (default 0)", json=(int,), cli=whole_number(0, MAX_SEED), triton="TYPE_UINT64",
                              limits={"minimum": 0, "maximum": MAX_SEED})
    per_image_seeds: bool = request_field(
        False, "give image i its own generator seeded SEED+i, so an image does not depend on its batch",
        json=(bool,), cli="flag", triton="TYPE_BOOL")
    seeds: tuple[int, ...] | None = request_field(
        None, "one seed per image (instead of seed)", json=(list, type(None)),
        limits={"items": {"type": "integer", "minimum": 0, "maximum": MAX_SEED}, "minItems": 1})
    steps: int | None = request_field(
        None, f"inference steps (default: {default_steps_help()})", json=(int, type(None)), cli=whole_number(1),
        triton="TYPE_INT32", limits={"minimum": 1})
    scheduler: str | None = request_field(
        None, "sampler (default: the scheduler config's own, DDPM for the reference model)", json=(str, type(None)),
        cli=str, triton="TYPE_STRING", choices=tuple(SAMPLERS))
    timesteps: tuple[int, ...] | None = request_field(
        None, "the steps outright, descending indices of the training discretisation (consistency models, as "
        "ConsistencyModelPipeline's timesteps=; DPM-Solver++, as its set_timesteps(timesteps=): tuned schedules; "
        "instead of steps); on the command line: 22,0",
        json=(list, type(None)), cli=whole_number_list, triton="TYPE_INT64", triton_dims=(-1,),
        limits={"items": {"type": "integer", "minimum": 0}, "minItems": 1})
    tuned_timesteps: bool = request_field(
        False, "the timesteps tuned by measurement for this sampler and steps (runtime.schedulers.tuned: dpmpp-3m 5 "
        "and 6, dpmpp-2m 6) instead of the spaced ones", json=(bool,), cli="flag", triton="TYPE_BOOL")
    eta: float = request_field(0.0, "DDIM noise scale, >= 0 (default 0: deterministic)", json=NUMBER,
                               cli=non_negative_number, triton="TYPE_FP32", limits={"minimum": 0})
    noise: str = request_field(
        "numpy", "numpy (fast, default) or torch (reproduces torch.manual_seed(SEED) as diffusers' pipelines use it)",
        json=(str,), cli=str, triton="TYPE_STRING", choices=NOISE_KINDS)
    timeout_s: float | None = request_field(
        None, "seconds from submission after which the request fails (default: none, or the service's)",
        json=(*NUMBER, type(None)), triton="TYPE_FP32", aliases=("timeout",), limits={"exclusiveMinimum": 0})
    class_labels: tuple[int, ...] | None = request_field(
        None, "class label of each image, or one for all (a class-conditional model, or one with a label embedding "
        "table); on the command line: 3 or 0,1,2", json=(list, int, type(None)), cli=whole_number_list,
        triton="TYPE_INT64", triton_dims=(-1,), limits={"items": {"type": "integer", "minimum": 0}, "minItems": 1})
    embeddings: np.ndarray | None = request_field(
        None, "a cross-attention model's condition: [sequence, dim] for all images or [count, sequence, dim] "
        "(on the command line: a .npy file)", json=(list, type(None)), cli=npy_file, triton="TYPE_FP32",
        triton_dims=(-1, -1, -1), compare=False)
    negative_embeddings: np.ndarray | None = request_field(
        None, "what guidance steers away from, shaped like embeddings (default: the model's null embedding)",
        json=(list, type(None)), cli=npy_file, triton="TYPE_FP32", triton_dims=(-1, -1, -1), compare=False)
    guidance_scale: float = request_field(
        1.0, "classifier-free guidance scale, >= 1; above 1 each image runs a conditional and an unconditional "
        "row, combined as diffusers does (default 1: no guidance)", json=NUMBER, cli=float, triton="TYPE_FP32",
        limits={"minimum": 1})
    guidance_rescale: float = request_field(
        0.0, "guidance rescale, in [0, 1], with a guidance_scale above 1: the guided prediction's standard deviation "
        "brought towards the conditional one's by this fraction, against over-exposure (diffusers' guidance_rescale, "
        "Lin et al. 2023; default 0: off)", json=NUMBER, cli=float, triton="TYPE_FP32",
        limits={"minimum": 0, "maximum": 1})
    conditioning: Mapping[str, np.ndarray] | None = request_field(
        None, "the engine's conditioning inputs outright, one row per image (instead of class_labels / embeddings)",
        json=None, compare=False)
    cache_interval: int | None = request_field(
        None, "feature reuse (DeepCache): run the full UNet every N-th step and only its outer blocks, on the deep "
        "feature kept from the last full step, in between (needs the engine folder's graphs from export.deepcache; "
        "default: none, every step full)", json=(int, type(None)), cli=whole_number(1), triton="TYPE_INT32",
        limits={"minimum": 1})
    cache_full_steps: tuple[int, ...] | None = request_field(
        None, "feature reuse with a non-uniform schedule: the step indices (from 0) that run the full UNet, ascending "
        "(step 0 always does); instead of cache_interval; on the command line: 0,1,2,4,8", json=(list, type(None)),
        cli=whole_number_list, triton="TYPE_INT64", triton_dims=(-1,),
        limits={"items": {"type": "integer", "minimum": 0}, "minItems": 1})
    image: np.ndarray | None = request_field(
        None, "the starting image of image-to-image (with strength) and inpainting (with mask_image), the size of "
        "the model's sample (no resizing): a PNG (base64 in JSON; a .png or .npy file on the command line) for every "
        "image, or a list of them, one per image", json=(str, list, type(None)), cli=image_file, triton="TYPE_UINT8",
        triton_dims=(-1, -1, -1, -1), triton_name="input_image", compare=False,
        limits={"contentEncoding": "base64", "contentMediaType": "image/png", "minItems": 1,
                "items": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}})
    mask_image: np.ndarray | None = request_field(
        None, "inpainting (the repaint sampler) of image: white keeps a pixel, black is inpainted (grayscale, "
        "thresholded at 0.5, as RePaintPipeline); a PNG as image, or a list of them", json=(str, list, type(None)),
        cli=mask_file, triton="TYPE_UINT8", triton_dims=(-1, -1, -1), compare=False,
        limits={"contentEncoding": "base64", "contentMediaType": "image/png", "minItems": 1,
                "items": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}})
    strength: float | None = request_field(
        None, "image-to-image: how far image is noised, in (0, 1] (1: pure noise); the last int(steps * strength) "
        "steps run, as diffusers' img2img pipelines (default with an image and no mask: 0.8)",
        json=(*NUMBER, type(None)), cli=float, triton="TYPE_FP32", limits={"exclusiveMinimum": 0, "maximum": 1})
    jump_length: int | None = request_field(
        None, f"repaint: steps forward before each jump back (default {DEFAULT_JUMP_LENGTH}, as RePaintPipeline)",
        json=(int, type(None)), cli=whole_number(1), triton="TYPE_INT32", limits={"minimum": 1})
    jump_n_sample: int | None = request_field(
        None, f"repaint: how many times each jump is made (default {DEFAULT_JUMP_N_SAMPLE}, as RePaintPipeline)",
        json=(int, type(None)), cli=whole_number(1), triton="TYPE_INT32", limits={"minimum": 1})

    def __post_init__(self):
        count = _whole_at_least(self.count, 1, "count (batch) must be a whole number of at least 1")
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "seed", check_seed(self.seed))
        if not isinstance(self.per_image_seeds, (bool, np.bool_)):
            raise InputError(f"per_image_seeds must be true or false, got {brief(self.per_image_seeds)}")
        object.__setattr__(self, "per_image_seeds", bool(self.per_image_seeds))
        if self.seeds is not None:
            if isinstance(self.seeds, (str, bytes)) or not isinstance(self.seeds, (Sequence, np.ndarray)):
                raise InputError(f"seeds must be a list of whole numbers, one per image, got {brief(self.seeds)}")
            if len(self.seeds) != count:
                raise InputError(f"seeds has {len(self.seeds)} entries for a count of {count}; give one seed per image")
            if self.per_image_seeds:
                raise InputError("give seeds or per_image_seeds, not both")
            object.__setattr__(self, "seeds", tuple(check_seed(s) for s in self.seeds))
        elif self.per_image_seeds and self.seed + count - 1 > MAX_SEED:
            raise InputError(f"seed {self.seed} with per-image seeds needs seeds up to {self.seed + count - 1}, "
                             f"above {MAX_SEED}")
        object.__setattr__(self, "steps", _whole_at_least(self.steps, 1, "steps must be a whole number of at least 1"))
        object.__setattr__(self, "timesteps", _whole_numbers(self.timesteps, "timesteps must be a list of whole numbers >= 0"))
        if self.timesteps is not None and self.steps is not None:
            raise InputError("give steps or timesteps, not both")
        if self.tuned_timesteps and (self.timesteps is not None or self.steps is None):
            raise InputError("tuned_timesteps takes steps (and a scheduler), not timesteps: the tuned schedule of that "
                             "sampler at that many steps")
        if self.scheduler is not None and self.scheduler not in SAMPLERS:
            raise InputError(f"unknown scheduler {brief(self.scheduler)}; choose one of: {', '.join(SAMPLERS)}")
        object.__setattr__(self, "eta", check_eta(self.eta))
        if self.noise not in NOISE_KINDS:
            raise InputError(f"unknown noise kind {brief(self.noise)}; choose one of {', '.join(NOISE_KINDS)}")
        timeout = self.timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.floating))
                                    or not 0 < float(timeout) < math.inf):
            raise InputError(f"timeout_s must be a number of seconds > 0, got {brief(timeout)}")
        labels = (self.class_labels,) if _is_whole(self.class_labels) else self.class_labels
        object.__setattr__(self, "class_labels", _whole_numbers(
            labels, "class_labels must be whole numbers >= 0, one per image or one for all"))
        for name in ("embeddings", "negative_embeddings"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _embeddings(getattr(self, name), name))
        object.__setattr__(self, "guidance_scale", check_guidance_scale(self.guidance_scale))
        rescale = self.guidance_rescale
        if isinstance(rescale, bool) or not isinstance(rescale, (int, float, np.floating, np.integer)) \
                or not 0 <= float(rescale) <= 1:
            raise InputError(f"guidance_rescale must be a number in [0, 1] (0: off), got {brief(rescale)}")
        object.__setattr__(self, "guidance_rescale", float(rescale))
        if self.guidance_rescale > 0 and self.guidance_scale <= 1:
            raise InputError("guidance_rescale applies to guided requests only; give a guidance_scale above 1")
        if self.conditioning is not None and not isinstance(self.conditioning, Mapping):
            raise InputError(f"conditioning must map input names to arrays, got {type(self.conditioning).__name__}")
        object.__setattr__(self, "cache_interval", _whole_at_least(
            self.cache_interval, 1, "cache_interval must be a whole number of at least 1 (1: no feature reuse)"))
        object.__setattr__(self, "cache_full_steps", _whole_numbers(
            self.cache_full_steps, "cache_full_steps must be ascending step indices >= 0", ascending=True))
        if self.cache_full_steps is not None and self.cache_interval is not None:
            raise InputError("give cache_interval or cache_full_steps, not both")
        self._check_images()

    def _check_images(self) -> None:
        """image, mask_image, strength and RePaint's jumps: what they need of each other (the engine checks sizes)."""
        image, mask = image_array(self.image), mask_array(self.mask_image)
        for name, value in (("image", image), ("mask_image", mask)):
            if value is not None and len(value) not in (1, self.count):
                raise InputError(f"{name} holds {len(value)} images for a count of {self.count}; give one for all or "
                                 "one per image")
            object.__setattr__(self, name, value)
        strength = self.strength
        if strength is not None:
            if isinstance(strength, bool) or not isinstance(strength, (int, float, np.floating, np.integer)) \
                    or not 0 < float(strength) <= 1:
                raise InputError(f"strength must be a number in (0, 1] (strength 0 would run no step), got "
                                 f"{brief(strength)}")
            object.__setattr__(self, "strength", float(strength))
        for name in ("jump_length", "jump_n_sample"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_jump(getattr(self, name), name))
        if mask is not None:
            if image is None:
                raise InputError("mask_image inpaints an image; give image too")
            if mask.shape[2:] != image.shape[2:]:
                raise InputError(f"mask_image is {mask.shape[2]}x{mask.shape[3]} and image {image.shape[2]}x"
                                 f"{image.shape[3]}; give a mask of the image's size")
            if mask.shape[1] not in (1, image.shape[1]):
                raise InputError(f"mask_image has {mask.shape[1]} channels and image {image.shape[1]}; give a "
                                 "grayscale mask")
            if strength is not None:
                raise InputError("strength is image-to-image's; inpainting (with mask_image) runs the whole schedule")
            if self.scheduler not in (None, "repaint"):
                raise InputError(f"inpainting (mask_image) runs the repaint sampler, not {self.scheduler}; leave "
                                 "scheduler out or give repaint")
        elif self.scheduler == "repaint":
            raise InputError("the repaint sampler inpaints: give image and mask_image")
        elif strength is not None and image is None:
            raise InputError("strength is image-to-image's; give image too")
        if (self.jump_length is not None or self.jump_n_sample is not None) and mask is None:
            raise InputError("jump_length and jump_n_sample are repaint's (inpainting); give image and mask_image")

    @property
    def inpainting(self) -> bool:
        return self.mask_image is not None

    @property
    def sampler_name(self) -> str | None:
        """The sampler it asks for: its scheduler, repaint for inpainting, or None (the engine's default)."""
        return "repaint" if self.inpainting else self.scheduler

    # what the request means ----------------------------------------------------------------------
    @property
    def guidance(self) -> Guidance:
        """Its classifier-free guidance as one value (:data:`runtime.guidance.NO_GUIDANCE` when unguided)."""
        return Guidance.of(self.guidance_scale, self.guidance_rescale)

    @property
    def image_seeds(self) -> tuple[int, ...] | None:
        """Each image's seed (per-image generators), or None: one generator seeded ``seed`` for all."""
        if self.seeds is not None:
            return self.seeds
        return tuple(self.seed + i for i in range(self.count)) if self.per_image_seeds else None
