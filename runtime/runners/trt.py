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
from ..io_spec import BatchProfile, UNetIO
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
        try:
            from importlib.metadata import version

            installed = version("cuda-python")
        except Exception:  # not installed at all (or only a package providing a `cuda` namespace)
            installed = None
        if installed is not None:
            raise BackendUnavailableError(
                f"cuda-python {installed} has no cuda.bindings (it arrived in 12.6.1): "
                "`pip install 'ddpm-deploy[gpu]'` to get a matching version, or use the ONNX engine"
            ) from None
        raise BackendUnavailableError(
            "cuda-python is not installed here: `pip install 'ddpm-deploy[gpu]'`, or use the ONNX engine"
        ) from None
    return cudart


def error_name(cudart, err) -> str:
    """``cudaErrorInsufficientDriver (35)``: the error's name from cuda-python, and its number."""
    try:
        name = cudart.cudaGetErrorName(err)
        name = name[1] if isinstance(name, tuple) else name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # an unknown code: its number says enough
        name = str(err)
    return f"{name} ({int(err)})"


def cuda_call(result, cudart=None):
    """cuda-python returns (error, *values); raise on error (with the error's name), return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call failed: {error_name(cudart, err) if cudart is not None else err}")
    return values[0] if len(values) == 1 else values


def handle(obj) -> int:
    """The integer value of a cuda-python handle (a stream) for TensorRT; cuda-python 13 deprecates int(obj)."""
    get_ptr = getattr(obj, "getPtr", None)
    return int(get_ptr()) if get_ptr is not None else int(obj)


# cudaErrorInsufficientDriver / cudaErrorNoDevice: a CUDA runtime newer than the driver, or no GPU
_DRIVER_TOO_OLD = 35
_NO_DEVICE = 100


def gpu_facts(cudart) -> dict[str, Any]:
    """Name and compute capability of the current GPU; BackendUnavailableError when there is none."""
    err, count = cudart.cudaGetDeviceCount()
    if int(err) == _DRIVER_TOO_OLD:
        raise BackendUnavailableError(
            f"no NVIDIA driver here, or one older than this cuda-python's CUDA runtime ({error_name(cudart, err)}): "
            "on a GPU machine, install the TensorRT and cuda-python pair for the driver's CUDA major "
            "(`pip install 'ddpm-deploy[gpu-cu12]'` for a CUDA 12 driver) or update the driver; "
            "or use the ONNX engine on ONNX Runtime"
        )
    if int(err) != 0 or count < 1:
        why = f"cudaGetDeviceCount: {error_name(cudart, err)}" if int(err) != 0 else "no device"
        raise BackendUnavailableError(
            f"no CUDA GPU is visible here ({why}); TensorRT plans need one. Use the ONNX engine on ONNX Runtime"
        )
    device = cuda_call(cudart.cudaGetDevice(), cudart)
    props = cuda_call(cudart.cudaGetDeviceProperties(device), cudart)
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


def check_engine_io(trt, engine, io: UNetIO, profile: BatchProfile | None, path) -> None:
    """The deserialized engine's I/O against the manifest: names, input/output modes, dtypes, the batch
    profile (profile 0's min/max shapes of every input)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    want = {t.name: (trt.TensorIOMode.INPUT, t) for t in io.inputs} | {t.name: (trt.TensorIOMode.OUTPUT, t) for t in io.outputs}
    if sorted(names) != sorted(want):
        raise EngineError(f"{path} has tensors {sorted(names)}, its manifest declares {sorted(want)}; rebuild the plan")
    for name, (mode, spec) in want.items():
        if engine.get_tensor_mode(name) != mode:
            raise EngineError(f"{path}: {name} is not an {'input' if mode == trt.TensorIOMode.INPUT else 'output'} "
                              "as the manifest declares; rebuild the plan")
        dtypes = {"float32": trt.DataType.FLOAT, "float16": trt.DataType.HALF, "int32": trt.DataType.INT32,
                  "int64": trt.DataType.INT64}
        actual = engine.get_tensor_dtype(name)
        if actual != dtypes.get(spec.dtype):
            raise EngineError(f"{path}: {name} is {getattr(actual, 'name', actual)}, the manifest declares {spec.dtype}; "
                              "rebuild the plan")
        if mode == trt.TensorIOMode.INPUT and profile is not None:
            lo, _, hi = engine.get_tensor_profile_shape(name, 0)
            want_lo, want_hi = io.shapes(profile.min, "min")[name], io.shapes(profile.max, "max")[name]
            if tuple(lo) != want_lo or tuple(hi) != want_hi:
                raise EngineError(
                    f"{path}: {name}'s profile is {tuple(lo)}..{tuple(hi)}, the manifest declares "
                    f"{want_lo}..{want_hi}; rebuild the plan"
                )


class TrtRunner(Runner):
    name = "tensorrt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._trt = self._cudart = None
        self._engine = self._context = self._stream = None
        self._buffers: dict[tuple, dict[str, tuple[int, int]]] = {}  # input shapes -> name -> (device ptr, bytes)
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
        check_engine_io(trt, self._engine, self.io, self.profile, self.path)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(
                f"TensorRT could not create an execution context for {self.path} (out of GPU memory?); "
                "free GPU memory or use a smaller batch profile"
            )
        self._stream = cuda_call(self._cudart.cudaStreamCreate(), self._cudart)

    def _deactivate(self) -> None:
        for buffers in self._buffers.values():
            for ptr, _ in buffers.values():
                cuda_call(self._cudart.cudaFree(ptr), self._cudart)
        self._buffers.clear()
        if self._stream is not None:
            cuda_call(self._cudart.cudaStreamDestroy(self._stream), self._cudart)
        self._context = self._engine = self._stream = None

    def _device_buffers(self, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, int]]:
        """Device buffers for this feed's shapes (batch and, for a dynamic sequence axis, tokens)."""
        key = tuple(feed[spec.name].shape for spec in self.io.inputs)
        if key not in self._buffers:
            batch = key[0][0]
            shapes = {spec.name: feed[spec.name].shape for spec in self.io.inputs}
            shapes |= {spec.name: spec.concrete(batch) for spec in self.io.outputs}
            buffers = {}
            for spec in self.io.inputs + self.io.outputs:
                nbytes = int(np.prod(shapes[spec.name])) * np.dtype(spec.dtype).itemsize
                buffers[spec.name] = (cuda_call(self._cudart.cudaMalloc(nbytes), self._cudart), nbytes)
            self._buffers[key] = buffers
        return self._buffers[key]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._infer_locked(feed)

    def _infer_locked(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        batch = next(iter(feed.values())).shape[0]
        buffers = self._device_buffers(feed)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self.io.inputs:
            host = np.ascontiguousarray(feed[spec.name])
            ptr, nbytes = buffers[spec.name]
            self._context.set_input_shape(spec.name, host.shape)
            cuda_call(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, nbytes, h2d, self._stream), cudart)
            self._context.set_tensor_address(spec.name, ptr)
        outputs = {}
        for spec in self.io.outputs:
            outputs[spec.name] = np.empty(spec.concrete(batch), dtype=spec.dtype)
            self._context.set_tensor_address(spec.name, buffers[spec.name][0])
        if not self._context.execute_async_v3(handle(self._stream)):
            raise EngineError(f"TensorRT failed to run {self.path}")
        for name, host in outputs.items():
            ptr, nbytes = buffers[name]
            cuda_call(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, nbytes, d2h, self._stream), cudart)
        cuda_call(cudart.cudaStreamSynchronize(self._stream), cudart)
        return outputs
