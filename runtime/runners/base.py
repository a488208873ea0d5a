"""One interface for every inference backend, after Polygraphy's runners.

A runner is a context manager: ``activate()`` loads the engine (a session, an execution
context), ``infer(feed)`` maps a dict of named numpy inputs to a dict of named numpy outputs, and
``deactivate()`` releases what ``activate`` made. Inputs are checked against the engine's declared
I/O before they reach the backend, so a wrong shape or dtype gives a clear error instead of a
backend crash.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..errors import EngineError, InputError
from ..io_spec import BATCH, SEQUENCE, UNetIO

if TYPE_CHECKING:
    from ..manifest import ArtifactEntry

T = TypeVar("T")


@dataclass(frozen=True)
class RunnerOptions:
    """What the caller chooses about running an engine (each backend takes what applies to it)."""

    device: str = "auto"  # ONNX Runtime: auto | cpu | cuda
    threads: int | None = None  # intra-op threads (default: usable cores)
    cache_dir: Path | None = None  # per-machine cache of optimized engines (runtime.cache); None: off


class Runner(abc.ABC):
    """``Runner(path, io, entry, options)``: no side effects until :meth:`activate`."""

    name = "runner"

    def __init__(self, path: str | Path, io: UNetIO, entry: ArtifactEntry | None = None, options: RunnerOptions | None = None):
        self.path = Path(path)
        self.io = io
        self.entry = entry  # None for an artifact not yet in a manifest (an export gate's candidate)
        self.options = options or RunnerOptions()
        self.profile = entry.profile if entry is not None else None  # None: any batch size
        self.is_active = False

    # lifecycle -------------------------------------------------------------------------------
    def activate(self) -> Runner:
        if not self.is_active:
            try:
                self._activate()
            except BaseException:
                if self.cache is not None:
                    self.cache.discard()
                raise
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False
        if self.cache is not None:
            self.cache.discard()  # built but never verified: nothing is published

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # the per-machine cache (runtime.cache; runtime.engine.open_engine publishes it) -------------------
    cache = None  # a runtime.cache.RunnerCache, for backends that cache what they build

    @property
    def cache_status(self) -> str:
        return self.cache.status if self.cache is not None else "off"

    def _use_cache(self, backend: str, fields: dict) -> None:
        """Called by a backend's constructor: sets up :attr:`cache` when the options name a cache directory and
        the artifact is in a manifest. ``fields``: what shapes the built form besides the engine and the CPU."""
        if self.options.cache_dir is not None and self.entry is not None:
            from ..cache import RunnerCache, cpu_identity

            fields = {"engine_sha256": self.entry.sha256, **fields, "cpu": cpu_identity()}
            self.cache = RunnerCache(self.options.cache_dir, backend, fields, self.path)

    def _load_or_build(self, load: Callable[[Path], T], build: Callable[[Path | None], T]) -> T:
        """For a backend's ``_activate``: ``load(entry folder)`` from the cache, else ``build(staging folder or
        None)`` (see :meth:`runtime.cache.RunnerCache.load_or_build`)."""
        return build(None) if self.cache is None else self.cache.load_or_build(load, build)

    # inference -------------------------------------------------------------------------------
    def check_batch(self, batch: int) -> None:
        if self.profile is not None and not self.profile.min <= batch <= self.profile.max:
            raise InputError(
                f"batch {batch} is outside the engine's profile {self.profile.min}..{self.profile.max}; "
                "use a batch in that range or rebuild the engine with a wider profile"
            )

    def check_inputs(self, feed: Mapping[str, np.ndarray]) -> int:
        """Validates names, dtypes and shapes; returns the batch size."""
        expected = set(self.io.input_names)
        if set(feed) != expected:
            raise InputError(f"inputs must be exactly {sorted(expected)}, got {sorted(feed)}")
        batch = None
        for spec in self.io.inputs:
            arr = feed[spec.name]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.dtype(spec.dtype):
                got = getattr(arr, "dtype", type(arr).__name__)
                raise InputError(f"input {spec.name!r} must be a numpy {spec.dtype} array, got {got}")
            if arr.ndim != len(spec.shape):
                raise InputError(f"input {spec.name!r} must have {len(spec.shape)} dimensions, got shape {arr.shape}")
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if want == BATCH:
                    if batch is None:
                        batch = got
                    elif got != batch:
                        raise InputError(f"input {spec.name!r} has batch {got}, other inputs have {batch}")
                elif want == SEQUENCE:
                    seq = self.io.sequence
                    if not seq.min <= got <= seq.max:
                        raise InputError(f"input {spec.name!r} has {got} tokens; this engine takes {seq} "
                                         "(rebuild it with a wider --sequence-length range)")
                elif want != got:
                    raise InputError(
                        f"input {spec.name!r} axis {axis} must be {want} (engine shape {spec.shape}), got {arr.shape}"
                    )
        if not batch:
            raise InputError("batch must be at least 1")
        self.check_batch(batch)
        return batch

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise EngineError(f"{self.name} runner is not active; use it as a context manager or call activate()")
        self.check_inputs(feed)
        return self._infer(feed)

    # backend hooks ---------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
