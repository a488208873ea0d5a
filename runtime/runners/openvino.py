"""OpenVINO backend (CPU): runs the OpenVINO IR written by ``python -m export.bf16``, in BF16 on CPUs
with BF16 units (or in FP32), and the INT8 IR of ``python -m export.int8 --backend openvino`` on CPUs with
VNNI or AMX.

``openvino`` is imported in ``activate()``, only for an artifact of kind ``openvino``. The precision
comes from the manifest entry (``bf16`` or ``fp32``), and BF16 is refused with a clear message (exit
4) where OpenVINO reports no BF16 capability for this CPU. With ``DDPM_DEPLOY_OPENVINO_CACHE=1`` and a
cache directory the compiled model is cached per machine (``export_model`` / ``import_model``) through
:mod:`runtime.cache`'s one loader, with the same key, integrity check and publication rule as ONNX
Runtime's optimized graphs; it is off by default (CACHE_COMPILED).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, EngineError, first_line
from .base import Runner

log = logging.getLogger(__name__)

BLOB = "compiled.blob"
# Whether Pipeline.load caches the compiled model (export_model / import_model) per machine. On the full
# cat-256 config importing the cached blob is no faster than compiling the IR (FP32, Zen 3: 1.85 vs 1.84 s)
# or slower (BF16, a Zen 4: 3.18 vs 1.14 s): off unless DDPM_DEPLOY_OPENVINO_CACHE=1 (it pays on small
# models: 0.68 vs 1.13 s). docs/bench-openvino-cache-*.md, python -m bench.openvino_cache.
CACHE_COMPILED = os.environ.get("DDPM_DEPLOY_OPENVINO_CACHE", "") == "1"
# an INT8 IR (export.int8 --backend openvino) runs its quantized layers in INT8 and the rest in FP32
PRECISIONS = {"bf16": "bf16", "fp32": "f32", "int8": "f32"}


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise BackendUnavailableError(
            "OpenVINO is not installed here: `pip install 'ddpm-deploy[openvino]'`, or run the ONNX engine "
            "(engines/unet.onnx) on ONNX Runtime"
        ) from None
    return ov


def check_precision(core, precision: str) -> str:
    """OpenVINO's inference precision for ``precision``; BackendUnavailableError where the CPU cannot run it."""
    if precision not in PRECISIONS:
        raise EngineError(f"the manifest asks for OpenVINO precision {precision!r}; this runtime runs {', '.join(PRECISIONS)}")
    if precision == "int8":
        from ..cpu import SIMULATED, int8_arithmetic

        if int8_arithmetic() == SIMULATED:
            raise BackendUnavailableError("this CPU has no VNNI or AMX units, and OpenVINO's INT8 engine cannot run "
                                          "simulated; use the ONNX Runtime engines (unet.int8.onnx or unet.onnx)")
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise BackendUnavailableError(
            "this CPU has no BF16 units (OpenVINO reports no BF16 capability: it needs AVX512_BF16 or AMX); "
            "use the FP32 engine (engines/unet.onnx) on ONNX Runtime"
        )
    return PRECISIONS[precision]


class OpenVinoRunner(Runner):
    """OpenVINO on the CPU. With ``options.cache_dir`` and a manifest entry, the compiled model is cached per
    machine (:mod:`runtime.cache`) when CACHE_COMPILED is set (off by default: it does not pay on the
    reference model)."""

    name = "openvino"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled = None
        self._lock = threading.Lock()
        self._precision = PRECISIONS.get(self.entry.precision if self.entry is not None else "fp32")
        self._core = None
        if CACHE_COMPILED and self._precision is not None:
            try:
                version = metadata.version("openvino")
            except metadata.PackageNotFoundError:  # activate() says so, with what to install
                version = None
            if version is not None:
                self._use_cache("openvino", {"external_data": self.entry.external_data if self.entry else {},
                                             "backend_version": version, "options": self._config()})

    def _config(self) -> dict[str, str]:
        config = {"INFERENCE_PRECISION_HINT": self._precision, "PERFORMANCE_HINT": "LATENCY"}
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.options.threads)
        return config

    def _load_cached(self, folder: Path):
        return self._core.import_model(io.BytesIO((folder / BLOB).read_bytes()), "CPU", self._config())

    def _build(self, staged: Path | None):
        try:
            compiled = self._core.compile_model(self._core.read_model(str(self.path)), "CPU", self._config())
        except Exception as exc:
            raise EngineError(f"OpenVINO cannot load {self.path}: {first_line(exc)}; rebuild it with `python -m export.bf16`") from None
        if staged is not None:
            stream = io.BytesIO()
            compiled.export_model(stream)
            (staged / BLOB).write_bytes(stream.getvalue())
        return compiled

    def _activate(self) -> None:
        ov = import_openvino()
        self._core = ov.Core()
        check_precision(self._core, self.entry.precision if self.entry is not None else "fp32")
        self._compiled = self._load_or_build(self._load_cached, self._build)

    def _deactivate(self) -> None:
        self._compiled = None
        self._core = None

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:  # one infer request at a time; OpenVINO uses all threads within it
            request = self._compiled.create_infer_request()
            request.infer({name: np.ascontiguousarray(value) for name, value in feed.items()})
            return {spec.name: np.array(request.get_tensor(spec.name).data, dtype=spec.dtype, copy=True) for spec in self.io.outputs}
