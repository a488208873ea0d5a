"""TensorRT backend: runs a plan built by ``python -m export.trt``.

``tensorrt`` and cuda-python (``cuda.bindings``) are imported only when a plan is opened; no torch,
no pycuda. Before deserializing, the plan's manifest entry is checked against the installed
TensorRT version and the GPU's compute capability (a plan is tied to both). Device buffers are
allocated once per batch size and reused across steps; inference is ``execute_async_v3`` on a
CUDA stream. An execution context (and its buffers and stream) serves one call at a time: calls
on one runner from several threads are serialized by a lock; for parallel TensorRT inference give
each concurrent caller its own runner (``Pipeline.load`` of the same plan).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, EngineError
from .base import Runner


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed here: `pip install 'ddpm-deploy[gpu]'` on a machine with an NVIDIA GPU, "
            "or run the ONNX engine (engines/unet.onnx or unet.fp16.onnx) on ONNX Runtime"
        ) from None
    return trt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailableError(
            "cuda-python is not installed here: `pip install 'ddpm-deploy[gpu]'`, or use the ONNX engine"
        ) from None
    return cudart


def cuda_call(result):
    """cuda-python returns (error, *values); raise on error, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


def gpu_facts(cudart) -> dict[str, Any]:
    """Name and compute capability of the current GPU; BackendUnavailableError when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count < 1:
        raise BackendUnavailableError("no CUDA GPU is visible here; TensorRT plans need one. Use the ONNX engine on ONNX Runtime")
    device = cuda_call(cudart.cudaGetDevice())
    props = cuda_call(cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\0") if isinstance(props.name, bytes) else str(props.name)
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}"}


def check_plan_compatibility(build: Mapping[str, Any], tensorrt_version: str, compute_capability: str) -> None:
    """A plan runs only on the TensorRT version and GPU architecture it was built for (unless built
    version-/hardware-compatible, which the manifest records)."""
    built = build.get("tensorrt", {})
    if built.get("version") != tensorrt_version and not built.get("version_compatible"):
        raise EngineError(
            f"this plan was built with TensorRT {built.get('version')}, this machine has {tensorrt_version}; "
            "rebuild it here with `make engine`"
        )
    if built.get("compute_capability") != compute_capability and not built.get("hardware_compatible"):
        raise EngineError(
            f"this plan was built for GPU compute capability {built.get('compute_capability')} ({built.get('gpu')}), "
            f"this GPU is {compute_capability}; rebuild it here with `make engine`"
        )


class TrtRunner(Runner):
    name = "tensorrt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._trt = self._cudart = None
        self._engine = self._context = self._stream = None
        self._buffers: dict[int, dict[str, tuple[int, int]]] = {}  # batch -> name -> (device ptr, bytes)
        self._lock = threading.Lock()

    def _activate(self) -> None:
        self._trt = trt = import_tensorrt()
        self._cudart = import_cudart()
        facts = gpu_facts(self._cudart)
        check_plan_compatibility(self.entry.build if self.entry is not None else {}, trt.__version__, facts["compute_capability"])
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self._engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise EngineError(f"TensorRT cannot deserialize {self.path}; rebuild it with `make engine`")
        self._context = self._engine.create_execution_context()
        self._stream = cuda_call(self._cudart.cudaStreamCreate())

    def _deactivate(self) -> None:
        for buffers in self._buffers.values():
            for ptr, _ in buffers.values():
                cuda_call(self._cudart.cudaFree(ptr))
        self._buffers.clear()
        if self._stream is not None:
            cuda_call(self._cudart.cudaStreamDestroy(self._stream))
        self._context = self._engine = self._stream = None

    def _device_buffers(self, batch: int) -> dict[str, tuple[int, int]]:
        if batch not in self._buffers:
            buffers = {}
            for spec in self.io.inputs + self.io.outputs:
                nbytes = int(np.prod(spec.concrete(batch))) * np.dtype(spec.dtype).itemsize
                buffers[spec.name] = (cuda_call(self._cudart.cudaMalloc(nbytes)), nbytes)
            self._buffers[batch] = buffers
        return self._buffers[batch]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._infer_locked(feed)

    def _infer_locked(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        batch = next(iter(feed.values())).shape[0]
        buffers = self._device_buffers(batch)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.io.inputs:
            host = np.ascontiguousarray(feed[spec.name])
            ptr, nbytes = buffers[spec.name]
            self._context.set_input_shape(spec.name, host.shape)
            cuda_call(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, nbytes, h2d, self._stream))
            self._context.set_tensor_address(spec.name, ptr)
        outputs = {}
        for spec in self.io.outputs:
            outputs[spec.name] = np.empty(spec.concrete(batch), dtype=spec.dtype)
            self._context.set_tensor_address(spec.name, buffers[spec.name][0])
        if not self._context.execute_async_v3(self._stream):
            raise EngineError(f"TensorRT failed to run {self.path}")
        for name, host in outputs.items():
            ptr, nbytes = buffers[name]
            cuda_call(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, nbytes, d2h, self._stream))
        cuda_call(cudart.cudaStreamSynchronize(self._stream))
        return outputs
