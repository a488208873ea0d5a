"""ONNX Runtime backend."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from ..errors import BackendUnavailableError, EngineError, first_line
from .base import Runner

log = logging.getLogger(__name__)

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
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only; warnings go through our logging
    return opts


def choose_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
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


class OrtRunner(Runner):
    name = "onnxruntime"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = self.options.threads
        self._session: ort.InferenceSession | None = None

    def _activate(self) -> None:
        self.providers = choose_providers(self.options.device)
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=session_options(self.threads), providers=self.providers
            )
        except Exception as exc:  # onnxruntime raises its own pybind exception types
            raise EngineError(
                f"ONNX Runtime cannot load {self.path}: {first_line(exc)}; rebuild it with `python -m export.onnx`"
            ) from None
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
