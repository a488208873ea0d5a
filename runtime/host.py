"""One host behind every service surface: an engine, its step batcher, one options schema, limits, deadlines.

The HTTP service's replicas (``serve.app``), the C ABI (``embed.host``) and the Triton model
(``embed.triton.model``) each hold a :class:`Host`; what differs between them is only how a request
arrives and how an answer or an error leaves (each error class carries its exit code, HTTP status and C
ABI code: :mod:`runtime.errors`). Requests are :class:`runtime.requests.SampleRequest` (its JSON schema:
``SampleRequest.json_schema()``, published as ``docs/request.schema.json``).

Options (:class:`HostOptions`, a JSON object for the C ABI, Triton's model parameters, the service config's
fields of the same names): ``device``, ``precision``, ``threads``, ``cache_dir`` (how the engine is opened: the
engine may be an engines folder, whose engine of ``precision`` runs, :mod:`runtime.selection`), ``max_batch``,
``max_queue`` (the batcher), ``timeout_s`` (a request's default deadline and its ceiling), ``max_count``,
``max_steps`` (per-request limits).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batching import SampleFuture, StepBatcher
from .cache import AUTO
from .errors import InputError, brief
from .json_body import NUMBER, check_object, parse_object
from .pipeline import Pipeline
from .requests import SampleRequest
from .selection import PRECISIONS
from .trajectory import ProgressFn


@dataclass(frozen=True)
class HostOptions:
    """How a host opens its engine and what it admits; every field optional."""

    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # an engines folder's engine: "auto" (the fastest timed on this CPU) or a precision
    threads: int | None = None  # ONNX Runtime threads (default: the cores it may use)
    cache_dir: str | None = AUTO  # the per-machine engine cache ("auto": $DDPM_DEPLOY_CACHE_DIR or ~/.cache; null: none)
    max_batch: int | None = None  # rows per UNet call (default 8, or a TensorRT plan's profile max)
    max_queue: int = 64  # requests waiting for admission; more are refused (busy)
    timeout_s: float | None = None  # a request's default deadline (seconds from submission) and its ceiling
    max_count: int | None = None  # images per request
    max_steps: int | None = None  # sampler steps per request

    SCHEMA = {"device": str, "precision": str, "threads": (int, type(None)), "cache_dir": (str, type(None)),
              "max_batch": (int, type(None)), "max_queue": int, "timeout_s": (*NUMBER, type(None)),
              "max_count": (int, type(None)), "max_steps": (int, type(None))}

    def __post_init__(self):
        for name in ("threads", "max_batch", "max_count", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"option {name} must be at least 1, got {brief(value)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"option precision must be one of {', '.join(PRECISIONS)}, got {brief(self.precision)}")
        if self.max_queue < 0:
            raise InputError(f"option max_queue must be >= 0, got {brief(self.max_queue)}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise InputError(f"option timeout_s must be > 0, got {brief(self.timeout_s)}")

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "options") -> HostOptions:
        """From a JSON object (empty text: the defaults); raises InputError with one line."""
        return cls(**parse_object(text, what, cls.SCHEMA))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], what: str = "options") -> HostOptions:
        """From the fields of another config (only this schema's names, types checked)."""
        return cls(**check_object(dict(values), what, cls.SCHEMA))

    @classmethod
    def from_strings(cls, values: Mapping[str, str], what: str = "parameters") -> HostOptions:
        """From text values (Triton's model parameters): numbers parsed, empty text left at the default."""
        out: dict[str, Any] = {}
        for name, text in values.items():
            if name not in cls.SCHEMA or text == "":
                continue
            kinds = cls.SCHEMA[name] if isinstance(cls.SCHEMA[name], tuple) else (cls.SCHEMA[name],)
            try:
                out[name] = text if str in kinds else int(text) if int in kinds and float not in kinds else float(text)
            except ValueError:
                raise InputError(f"{what} {name!r} is not a number: {brief(text)}") from None
        return cls(**out)

    def admit(self, request: SampleRequest) -> SampleRequest:
        """``request`` within this host's limits, with the default deadline where it gives none; InputError else."""
        if self.max_count is not None and request.count > self.max_count:
            raise InputError(f"count must be at most {self.max_count} here, got {request.count}")
        if self.max_steps is not None and request.steps is not None and request.steps > self.max_steps:
            raise InputError(f"steps must be at most {self.max_steps} here, got {request.steps}")
        if self.timeout_s is None:
            return request
        if request.timeout_s is None:
            return dataclasses.replace(request, timeout_s=self.timeout_s)
        if request.timeout_s > self.timeout_s:
            raise InputError(f"timeout_s must be in (0, {self.timeout_s:g}] here, got {request.timeout_s:g}")
        return request


class Host:
    """An engine and its step batcher, shared by every request of one surface.

    >>> with Host("engines/unet.onnx", HostOptions(max_batch=8, timeout_s=60)) as host:   # doctest: +SKIP
    ...     images = host.submit(SampleRequest(steps=20)).result()
    """

    def __init__(self, engine: str | Path, options: HostOptions | None = None,
                 on_call: Callable[[int, float], None] | None = None):
        self.options = options = options or HostOptions()
        self.pipeline = Pipeline.load(engine, device=options.device, threads=options.threads, cache_dir=options.cache_dir,
                                      precision=options.precision)
        try:
            self.batcher = StepBatcher(self.pipeline, options.max_batch, options.max_queue, on_call=on_call)
        except BaseException:
            self.pipeline.close()
            raise

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images a request gets."""
        return self.pipeline.image_shape

    def submit(self, request: SampleRequest, progress: ProgressFn | None = None, preview_every: int = 0) -> SampleFuture:
        """Queues ``request`` (admitted by the options first); a Future of its uint8 images [count, H, W, C]."""
        return self.batcher.submit(self.options.admit(request), progress=progress, preview_every=preview_every)

    def stats(self) -> dict[str, Any]:
        """The batcher's counters, its mean rows per call, queue length and requests in flight."""
        st = self.batcher.stats
        return {**vars(st), "mean_batch": round(st.mean_batch, 3), "queue_length": self.batcher.queue_length,
                "in_flight": self.batcher.in_flight}

    def close(self, drain: bool = True) -> None:
        try:
            self.batcher.close(drain=drain)
        finally:
            self.pipeline.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc) -> None:
        self.close(drain=exc[0] is None)
