"""One sampling request, from every entry point to the engine.

:class:`SampleRequest` is the only shape a request has: the Python API (``Pipeline.sample`` /
``generate`` / ``denoise`` / ``trajectory``, ``StepBatcher.submit``), the CLI (``python -m
runtime.sample``), JSON (the C ABI and the HTTP service) and Triton all build one, through one
constructor each (:meth:`SampleRequest.create`, :meth:`from_args`, :meth:`from_json`,
:meth:`from_triton`), and it checks itself in one place (``__post_init__``). What depends on the
engine (the batch profile, the step count a scheduler config allows, conditioning shapes) is checked
by the pipeline when the request meets it.

Each field declares, in its metadata, what the generated surfaces need: its help text, the JSON types
it accepts, its CLI flag (if any), its Triton input type (if any) and its aliases. Adding a request
field is one field here plus the code that acts on it; the CLI flags, the JSON schema, the Triton
``config.pbtxt`` inputs and the Triton model's reader follow from the metadata.

The image count is ``count`` everywhere (API, CLI ``--count``, JSON, Triton); ``batch`` (``--batch``)
is accepted as its alias: a request's count is not the engine's batch (several requests share one
engine call, and a guided image takes two rows of it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from . import __version__
from .cli import non_negative_number, whole_number
from .errors import InputError, brief
from .guidance import Guidance
from .json_body import NUMBER, parse_object
from .noise import MAX_SEED, NOISE_KINDS, check_seed
from .schedulers import SAMPLERS, check_eta, default_steps_help

def request_field(default: Any, help: str, *, json: tuple | None, cli: Callable | str | None = None,
                  triton: str | None = None, triton_dims: tuple[int, ...] = (1,), aliases: tuple[str, ...] = (),
                  choices: Sequence[str] | None = None, limits: Mapping[str, Any] | None = None, compare: bool = True):
    """A request field and what the generated surfaces need of it.

    ``json``: the JSON types accepted (None: not in JSON); ``cli``: the flag's value parser, "flag" for a
    switch (None: not on the CLI); ``triton``: the Triton input data type (None: not a Triton input) and
    ``triton_dims`` its dims ([1]: a scalar); ``limits``: JSON-schema keywords for the published API
    schema (minimum, items, ...)."""
    meta = {"help": help, "json": json, "cli": cli, "triton": triton, "triton_dims": triton_dims, "aliases": aliases,
            "choices": choices, "limits": dict(limits or {})}
    return field(default=default, metadata=meta, compare=compare)


JSON_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object",
                   type(None): "null"}


def _is_whole(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def whole_number_list(text: str) -> tuple[int, ...]:
    """``--class-labels 3`` or ``0,1,2`` (also ``--timesteps``, ``--cache-full-steps``)."""
    try:
        labels = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None
    if any(x < 0 for x in labels):
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 0, got {text!r}")
    return labels


def npy_file(path: str) -> np.ndarray:
    """A ``--embeddings`` file: a float array saved with ``numpy.save`` (no pickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not a .npy array file ({str(exc).splitlines()[0]})") from None


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
class SamplerSettings:
    """What a request was sampled with, defaults resolved: written into every PNG's metadata."""

    scheduler: str
    steps: int
    eta: float
    config: Mapping[str, Any]  # the sampler's scheduler config (diffusers keys), as used
    full_steps: tuple[int, ...] | None = None  # feature reuse: the steps that ran the full UNet (None: all)


@dataclass(frozen=True)
class SampleRequest:
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
        "ConsistencyModelPipeline's timesteps=; instead of steps); on the command line: 22,0",
        json=(list, type(None)), cli=whole_number_list, triton="TYPE_INT64", triton_dims=(-1,),
        limits={"items": {"type": "integer", "minimum": 0}, "minItems": 1})
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

    def __post_init__(self):
        count = self.count
        if not _is_whole(count) or count < 1:
            raise InputError(f"count (batch) must be a whole number of at least 1, got {brief(count)}")
        object.__setattr__(self, "count", int(count))
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
        if self.steps is not None and (not _is_whole(self.steps) or self.steps < 1):
            raise InputError(f"steps must be a whole number of at least 1, got {brief(self.steps)}")
        if self.timesteps is not None:
            ts = self.timesteps
            if isinstance(ts, (str, bytes)) or not isinstance(ts, (Sequence, np.ndarray)) or len(ts) == 0 \
                    or not all(_is_whole(x) and x >= 0 for x in ts):
                raise InputError(f"timesteps must be a list of whole numbers >= 0, got {brief(ts)}")
            if self.steps is not None:
                raise InputError("give steps or timesteps, not both")
            object.__setattr__(self, "timesteps", tuple(int(x) for x in ts))
        if self.scheduler is not None and self.scheduler not in SAMPLERS:
            raise InputError(f"unknown scheduler {brief(self.scheduler)}; choose one of: {', '.join(SAMPLERS)}")
        object.__setattr__(self, "eta", check_eta(self.eta))
        if self.noise not in NOISE_KINDS:
            raise InputError(f"unknown noise kind {brief(self.noise)}; choose one of {', '.join(NOISE_KINDS)}")
        timeout = self.timeout_s
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.floating))
                                    or not 0 < float(timeout) < math.inf):
            raise InputError(f"timeout_s must be a number of seconds > 0, got {brief(timeout)}")
        labels = self.class_labels
        if labels is not None:
            labels = (labels,) if _is_whole(labels) else labels
            if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, np.ndarray)) or len(labels) == 0 \
                    or not all(_is_whole(x) and x >= 0 for x in labels):
                raise InputError(f"class_labels must be whole numbers >= 0, one per image or one for all, got {brief(self.class_labels)}")
            object.__setattr__(self, "class_labels", tuple(int(x) for x in labels))
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
        if self.cache_interval is not None and (not _is_whole(self.cache_interval) or self.cache_interval < 1):
            raise InputError(f"cache_interval must be a whole number of at least 1 (1: no feature reuse), got "
                             f"{brief(self.cache_interval)}")
        steps = self.cache_full_steps
        if steps is not None:
            if isinstance(steps, (str, bytes)) or not isinstance(steps, (Sequence, np.ndarray)) or len(steps) == 0 \
                    or not all(_is_whole(x) and x >= 0 for x in steps) or any(a >= b for a, b in zip(steps, steps[1:])):
                raise InputError(f"cache_full_steps must be ascending step indices >= 0, got {brief(steps)}")
            if self.cache_interval is not None:
                raise InputError("give cache_interval or cache_full_steps, not both")
            object.__setattr__(self, "cache_full_steps", tuple(int(x) for x in steps))

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

    # constructors, one per entry point -----------------------------------------------------------
    @classmethod
    def create(cls, request: SampleRequest | None = None, /, **values: Any) -> SampleRequest:
        """The Python API's constructor: ``request`` (if given) with ``values`` (field names or aliases) replaced."""
        values = _unalias(cls, values, "")
        if request is None:
            return cls(**values)
        if not isinstance(request, cls):
            raise InputError(f"expected a SampleRequest, got {type(request).__name__}")
        return dataclasses.replace(request, **values) if values else request

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "request", extra: Mapping[str, type | tuple] | None = None):
        """(request, the ``extra`` fields given) from JSON text (C ABI, HTTP); raises InputError with one line."""
        schema = _json_schema(cls)
        data = parse_object(text, what, {**schema, **(extra or {})})
        own = {k: v for k, v in data.items() if k in schema}
        return cls(**_unalias(cls, own, f"{what} ")), {k: v for k, v in data.items() if k not in schema}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """The CLI flags of every request field that has one (generated from the fields' metadata)."""
        for f in fields(cls):
            parse = f.metadata["cli"]
            if parse is None:
                continue
            flags = [_flag(f.name), *(_flag(a) for a in f.metadata["aliases"])]
            if parse == "flag":
                parser.add_argument(*flags, dest=f.name, action="store_true", help=f.metadata["help"])
            else:
                parser.add_argument(*flags, dest=f.name, type=parse, default=f.default, choices=f.metadata["choices"],
                                    help=f.metadata["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SampleRequest:
        """From a namespace parsed with :meth:`add_arguments`'s flags."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.metadata["cli"] is not None})

    def cli_args(self) -> list[str]:
        """The CLI flags that give this request (fields without a flag must be at their defaults)."""
        args: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (not isinstance(value, np.ndarray) and value == f.default):
                continue
            if f.metadata["cli"] is None or isinstance(value, np.ndarray):
                raise InputError(f"{f.name} cannot be given as a command-line value" +
                                 ("; save it with numpy.save and pass the file" if isinstance(value, np.ndarray) else ""))
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            args += [_flag(f.name)] if f.metadata["cli"] == "flag" else [_flag(f.name), str(value)]
        return args

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON request as a JSON schema (an object of the JSON fields and their aliases; nothing else)."""
        properties = {}
        for f in fields(cls):
            if f.metadata["json"] is None:
                continue
            types = [JSON_TYPE_NAMES[t] for t in f.metadata["json"]]
            if "number" in types and "integer" in types:  # a JSON number may be written as an integer
                types.remove("integer")
            prop: dict[str, Any] = {"type": types[0] if len(types) == 1 else types, "description": f.metadata["help"]}
            if f.metadata["choices"]:
                prop["enum"] = [*f.metadata["choices"], *([None] if "null" in types else [])]
            prop.update(f.metadata["limits"])
            if f.default is not None:
                prop["default"] = f.default
            for name in (f.name, *f.metadata["aliases"]):
                properties[name] = prop if name == f.name else {**prop, "description": f"alias of {f.name}"}
        return {"type": "object", "properties": properties, "additionalProperties": False}

    @classmethod
    def triton_inputs(cls) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, Triton data type, dims) of every field that is a Triton input (each optional; dims [1]: a scalar)."""
        return [(f.name, f.metadata["triton"], f.metadata["triton_dims"]) for f in fields(cls) if f.metadata["triton"]]

    @classmethod
    def from_triton(cls, read: Callable[[str], Any]) -> SampleRequest:
        """From a Triton request: ``read(name)`` is the value given for input ``name`` (None when absent): the
        scalar of a [1] input, the array of the others."""
        values = {}
        for f in fields(cls):
            if f.metadata["triton"] and (value := read(f.name)) is not None:
                try:
                    values[f.name] = (_from_triton(f.metadata["triton"], value) if f.metadata["triton_dims"] == (1,)
                                      else np.asarray(value))
                except (TypeError, ValueError, OverflowError) as exc:  # UnicodeDecodeError is a ValueError
                    raise InputError(f"input {f.name!r} is not a {f.metadata['triton'].removeprefix('TYPE_')} value "
                                     f"({type(exc).__name__})") from None
        return cls(**values)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _json_schema(cls: type[SampleRequest]) -> dict[str, tuple]:
    schema = {}
    for f in fields(cls):
        if f.metadata["json"] is not None:
            for name in (f.name, *f.metadata["aliases"]):
                schema[name] = f.metadata["json"]
    return schema


def _unalias(cls: type[SampleRequest], values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Field names for aliases (``batch`` → ``count``); an alias given with its field is refused."""
    known = {f.name: f for f in fields(cls)}
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in values.items():
        name = next((f.name for f in known.values() if key in f.metadata["aliases"]), key)
        if name not in known:
            raise InputError(f"{what}has no field {brief(key)}; known: {', '.join(known)}")
        if name in out:
            alias = key if key != name else given_as[name]
            raise InputError(f"{what}gives both {name!r} and its alias {alias!r}; give one")
        out[name] = value
        given_as[name] = key
    return out


def _from_triton(kind: str, value: Any) -> Any:
    if kind == "TYPE_STRING":
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if kind == "TYPE_BOOL":
        return bool(value)
    if kind == "TYPE_FP32":
        return float(value)
    if isinstance(value, (float, np.floating)) and not float(value).is_integer():
        raise ValueError(f"{value} is not a whole number")
    return int(value)


def _array_sha256(arr: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class SampleResult:
    """What a request gave: uint8 images [count, H, W, C], the request and the settings it was sampled with."""

    images: np.ndarray
    request: SampleRequest
    settings: SamplerSettings
    engine: str  # the engine file's name
    engine_sha256: str | None

    def png_metadata(self, index: int) -> dict[str, str]:
        """The text chunks of image ``index`` (what `runtime.sample` writes, and the service returns)."""
        request, settings = self.request, self.settings
        seeds = request.image_seeds
        return {
            "seed": str(seeds[index] if seeds else request.seed),
            "seed_mode": "per-image" if seeds else "shared",
            "batch_index": str(index),
            "noise": request.noise,
            "steps": str(settings.steps),
            "scheduler": json.dumps({**settings.config, "eta": settings.eta}, sort_keys=True),
            **({"feature_cache_full_steps": ",".join(map(str, settings.full_steps))} if settings.full_steps else {}),
            **self._conditioning_metadata(index),
            "engine": self.engine,
            "engine_sha256": str(self.engine_sha256),
            "software": f"ddpm-deploy {__version__}",
        }

    def _conditioning_metadata(self, index: int) -> dict[str, str]:
        """The image's condition: its class label, the sha256 of its embeddings (float32 little-endian
        bytes), the guidance scale."""
        request, out = self.request, {}
        if request.class_labels is not None:
            labels = request.class_labels
            out["class_label"] = str(labels[index] if len(labels) > 1 else labels[0])
        for name in ("embeddings", "negative_embeddings"):
            value = getattr(request, name)
            if value is not None:
                out[f"{name}_sha256"] = _array_sha256(value[index] if value.ndim == 3 and len(value) > 1 else value.reshape(value.shape[-2:]))
        guidance = request.guidance
        if guidance.active:
            out["guidance_scale"] = repr(guidance.scale)
        if guidance.rescale > 0:
            out["guidance_rescale"] = repr(guidance.rescale)
        return out


SCHEMA_FILE = "docs/request.schema.json"  # the published request schema (tests/runtime/test_requests.py keeps it current)


def schema_text() -> str:
    """The request's JSON schema as published in :data:`SCHEMA_FILE`."""
    return json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "ddpm-deploy sample request",
                       **SampleRequest.json_schema()}, indent=2) + "\n"

