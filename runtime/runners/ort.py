"""ONNX Runtime backend. An INT8 engine (``export.int8``, precision ``int8``) runs on ONNX Runtime's integer kernels
on a CPU with VNNI or AMX, and is refused elsewhere (:mod:`runtime.cpu`, exit 4) unless its arithmetic is simulated."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..cpu import SIMULATED, int8_arithmetic
from ..errors import BackendUnavailableError, EngineError, first_line
from .base import Runner

log = logging.getLogger(__name__)

# ONNX Runtime's wheels: each unpacks into the same onnxruntime/ folder, and pip treats them as unrelated packages
ORT_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")
NO_ORT = ("ONNX Runtime is not installed here: `pip install 'ddpm-deploy[cpu]'` (onnxruntime), or "
          "`pip install 'ddpm-deploy[gpu]'` (onnxruntime-gpu) on an NVIDIA GPU host")


def installed_wheels() -> list[str]:
    """The ONNX Runtime wheels pip has installed here."""
    from importlib import metadata

    found = []
    for name in ORT_WHEELS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def _import_onnxruntime():
    """onnxruntime (None when missing: refused with NO_ORT, exit 4, when an engine needs it); one warning line when
    several of its wheels are installed, since the last one installed overwrote the others' files."""
    try:
        import onnxruntime
    except ImportError:
        return None
    wheels = installed_wheels()
    if len(wheels) > 1:
        log.warning("%s are all installed: they share one onnxruntime/ folder, so the last one installed overwrote the "
                    "others (ONNX Runtime supports one); `pip uninstall -y %s`, then install one: "
                    "'ddpm-deploy[cpu]' or 'ddpm-deploy[gpu]'", " and ".join(wheels), " ".join(wheels))
    return onnxruntime


ort = _import_onnxruntime()


def require_onnxruntime():
    if ort is None:
        raise BackendUnavailableError(NO_ORT)
    return ort


PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def default_threads() -> int:
    """Threads for one inference: the cores this process may run on (convolutions scale with cores)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options chosen for a UNet called many times with the same shapes.

    * all graph optimizations (constant folding, conv+activation and layout fusions);
    * intra-op threads = usable cores; one inter-op thread and sequential execution, since the
      UNet is a chain where parallel branches gain nothing and extra pools steal cores;
    * spinning left at ORT's default: the loop calls the session back to back.
    """
    opts = require_onnxruntime().SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only; warnings go through our logging
    return opts


def choose_providers(device: str) -> list[str]:
    available = require_onnxruntime().get_available_providers()
    if device == "auto":
        device = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if device not in PROVIDERS:
        raise BackendUnavailableError(f"unknown device {device!r}; use auto, cpu or cuda")
    if PROVIDERS[device] not in available:
        raise BackendUnavailableError(
            f"ONNX Runtime here has no {PROVIDERS[device]} (available: {', '.join(available)}); "
            "install onnxruntime-gpu for CUDA or use --device cpu"
        )
    return [PROVIDERS[device]] + (["CPUExecutionProvider"] if device != "cpu" else [])


CACHED_MODEL = "model.onnx"
CACHED_DATA = "model.onnx.data"
# An INT8 engine computed in FP32 (runtime.cpu.SIMULATED): ONNX Runtime leaves its Q/DQ pairs unfused.
SIMULATE_INT8 = {"session.disable_quant_qdq": "1"}
# Saved with the optimized graph: weights already packed for this CPU's kernels (loads in a third of the
# time), in a data file beside it.
SAVE_OPTIMIZED = {
    "session.save_prepacked_constant_initializers": "1",
    "session.optimized_model_external_initializers_file_name": CACHED_DATA,
    "session.optimized_model_external_initializers_min_size_in_bytes": "1024",
}


class OrtRunner(Runner):
    """ONNX Runtime. With ``options.cache_dir`` and a manifest entry, the optimized graph is cached per
    machine (:mod:`runtime.cache`); ``cache_status`` says what happened."""

    name = "onnxruntime"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = self.options.threads
        self._session: ort.InferenceSession | None = None
        self.providers = choose_providers(self.options.device)
        # how an INT8 engine runs on this CPU (runtime.cpu; refused here, as a missing provider is); None: not INT8
        self.int8 = int8_arithmetic() if self.entry is not None and self.entry.precision == "int8" else None
        self._use_cache("onnxruntime", {
            "backend_version": ort.__version__,
            "options": {"graph_optimization_level": "ORT_ENABLE_ALL", "providers": self.providers, "saved": SAVE_OPTIMIZED,
                        **({"int8": self.int8} if self.int8 else {})},
        })

    def _session_for(self, path: Path, opts: ort.SessionOptions) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise EngineError(
                f"ONNX Runtime cannot load {self.path}: {first_line(exc)}; rebuild it with `python -m export.onnx`"
            ) from None

    def _load_cached(self, folder: Path) -> ort.InferenceSession:
        """The cached optimized graph, opened with optimizations off (they are done)."""
        opts = session_options(self.threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(folder / CACHED_MODEL), sess_options=opts, providers=self.providers)

    def _build(self, staged: Path | None) -> ort.InferenceSession:
        """A session on the engine file, saving its optimized graph into ``staged`` (for the cache) when given."""
        opts = session_options(self.threads)
        if self.int8 == SIMULATED:
            for key, value in SIMULATE_INT8.items():
                opts.add_session_config_entry(key, value)
        if staged is not None:
            opts.optimized_model_filepath = str(staged / CACHED_MODEL)
            for key, value in SAVE_OPTIMIZED.items():
                opts.add_session_config_entry(key, value)
        return self._session_for(self.path, opts)

    def _activate(self) -> None:
        self._session = self._load_or_build(self._load_cached, self._build)
        graph = {i.name: i.shape for i in self._session.get_inputs()}
        if sorted(graph) != sorted(self.io.input_names):
            raise EngineError(
                f"{self.path} has inputs {sorted(graph)}, its manifest declares {self.io.input_names}; rebuild the engine"
            )
        for spec in self.io.inputs:
            fixed = [(axis, d) for axis, d in enumerate(spec.shape) if isinstance(d, int)]
            actual = graph[spec.name]
            if len(actual) != len(spec.shape) or any(actual[axis] != d for axis, d in fixed):
                raise EngineError(
                    f"{self.path} takes {spec.name} of shape {actual} but its manifest declares {list(spec.shape)} "
                    "(an engine built for another image size or model); rebuild the engine and its manifest together"
                )
        log.debug("ORT session on %s with %s", self.providers, self.threads)

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._session.run(self.io.output_names, dict(feed))
        return dict(zip(self.io.output_names, outputs))
