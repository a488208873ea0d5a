"""STAND-INS for TensorRT, cuda-python and Polygraphy's build loaders: they check our wiring, not TensorRT.

No TensorRT can be installed on these machines, and the GPU machines sometimes lent have none. These
modules let ``export.trt``'s main and ``TrtRunner`` run end to end anyway:

* ``tensorrt``: only classes, members and enum values whose names appear in every TensorRT release we
  support (``shared/reference/tensorrt-api/``; :func:`public_names` is checked against those lists). A
  "plan" is JSON describing the engine's tensors; "execute" computes a known function of the inputs:
  ``noise_pred = 0.5 * sample + timestep / 1000`` (a latent decoder: ``image = 0.5 * latents``, nearest-upsampled;
  a feature-reuse full graph also outputs ``deep_feature = timestep / 1000``, and a shallow graph gives
  ``0.5 * sample + deep_feature[:, 0, 0, 0]``: the timestep of the full step that kept the feature).
* ``cuda.bindings.runtime``: device memory is host memory (``cudaMalloc`` hands out the address of a
  numpy buffer, copies are ``memmove``), calls return cuda-python's ``(error, value)`` tuples.
* ``polygraphy.backend.trt``: records the loaders' arguments and returns a plan for the ONNX model's
  declared I/O.

Failures are injected through :class:`Faults`.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np

VERSION = "10.12.0"


@dataclass
class Faults:
    error_35: bool = False  # cudaGetDeviceCount -> cudaErrorInsufficientDriver
    no_context: bool = False  # create_execution_context() -> None
    plan_override: dict = field(default_factory=dict)  # changes to the built plan's tensor table
    build_error: str | None = None  # Polygraphy raises this


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class Stream:
    def __init__(self, value: int):
        self._value = value

    def getPtr(self) -> int:
        return self._value


def make_cudart(faults: Faults) -> types.ModuleType:
    m = types.ModuleType("cuda.bindings.runtime")
    memory: dict[int, np.ndarray] = {}
    ok = cudaError_t.cudaSuccess

    def malloc(n):
        buf = np.zeros(n, np.uint8)
        memory[buf.ctypes.data] = buf
        return ok, buf.ctypes.data

    def memcpy(dst, src, n, kind, stream):
        ctypes.memmove(dst, src, n)
        return (ok,)

    props = types.SimpleNamespace(name=b"Stand-in GPU", major=9, minor=0)
    m.cudaError_t = cudaError_t
    m.cudaMemcpyKind = cudaMemcpyKind
    m.cudaGetDeviceCount = lambda: (cudaError_t.cudaErrorInsufficientDriver, None) if faults.error_35 else (ok, 1)
    m.cudaGetDevice = lambda: (ok, 0)
    m.cudaGetDeviceProperties = lambda device: (ok, props)
    m.cudaGetErrorName = lambda err: (ok, cudaError_t(int(err)).name.encode())
    m.cudaMalloc = malloc
    def free(ptr):
        memory.pop(ptr, None)
        return (ok,)

    m.cudaFree = free
    m.cudaMemcpyAsync = memcpy
    m.cudaStreamCreate = lambda: (ok, Stream(7))
    m.cudaStreamDestroy = lambda stream: (ok,)
    m.cudaStreamSynchronize = lambda stream: (ok,)
    m.memory = memory
    return m


# -- tensorrt ------------------------------------------------------------------------------------------
class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    INT64 = 10


class TensorIOMode(enum.IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class Logger:
    WARNING = 2

    def __init__(self, severity=WARNING):
        self.severity = severity


class ICudaEngine:
    def __init__(self, plan: dict, faults: Faults):
        self._tensors = plan["tensors"]
        self._faults = faults

    @property
    def num_io_tensors(self) -> int:
        return len(self._tensors)

    def get_tensor_name(self, index: int) -> str:
        return self._tensors[index]["name"]

    def _tensor(self, name):
        return next(t for t in self._tensors if t["name"] == name)

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self._tensor(name)["mode"]]

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._tensor(name)["dtype"]]

    def get_tensor_profile_shape(self, name: str, profile_index: int):
        t = self._tensor(name)
        return t["min"], t["opt"], t["max"]

    def create_execution_context(self):
        return None if self._faults.no_context else IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self._engine = engine
        self._shapes: dict[str, tuple] = {}
        self._addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        self._shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int), "TensorRT takes the stream as an integer handle"

        def view(name, count):
            return np.ctypeslib.as_array(ctypes.cast(self._addresses[name], ctypes.POINTER(ctypes.c_float)), (count,))

        if "latents" in self._shapes:  # a latent model's decoder: image = 0.5 * the latents, nearest-upsampled
            shape = self._shapes["latents"]
            latents = view("latents", int(np.prod(shape))).reshape(shape)
            image_shape = tuple(self._engine._tensor("image")["max"])
            factor = image_shape[2] // shape[2]
            image = view("image", shape[0] * int(np.prod(image_shape[1:]))).reshape(shape[0], *image_shape[1:])
            image[...] = np.float32(0.5) * latents.repeat(factor, axis=2).repeat(factor, axis=3)
            return True
        shape = self._shapes["sample"]
        n = int(np.prod(shape))

        sample = view("sample", n).reshape(shape)
        t = view("timestep", shape[0])
        out = view("noise_pred", n).reshape(shape)
        names = {tensor["name"] for tensor in self._engine._tensors}
        if "deep_feature" in self._shapes:  # a feature-reuse shallow graph: the kept feature's first value for t / 1000
            feature_shape = self._shapes["deep_feature"]
            kept = view("deep_feature", int(np.prod(feature_shape))).reshape(feature_shape)[:, 0, 0, 0]
            out[...] = np.float32(0.5) * sample + kept[:, None, None, None]
            return True
        out[...] = np.float32(0.5) * sample + (t / np.float32(1000))[:, None, None, None]
        if "deep_feature" in names:  # a feature-reuse full graph: the feature is t / 1000 everywhere
            feature_shape = (shape[0], *self._engine._tensor("deep_feature")["max"][1:])
            feature = view("deep_feature", int(np.prod(feature_shape))).reshape(feature_shape)
            feature[...] = (t / np.float32(1000))[:, None, None, None]
        return True


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        try:
            plan = json.loads(bytes(data))
        except ValueError:
            return None
        return ICudaEngine(plan, FAULTS)


FAULTS = Faults()


def make_tensorrt() -> types.ModuleType:
    m = types.ModuleType("tensorrt")
    m.__version__ = VERSION
    for obj in (DataType, TensorIOMode, MemoryPoolType, Logger, Runtime, ICudaEngine, IExecutionContext):
        setattr(m, obj.__name__, obj)
    return m


def public_names() -> set[str]:
    """Every class, member and enum value name the stand-in defines (each must exist in TensorRT)."""
    names = set()
    for obj in (DataType, TensorIOMode, MemoryPoolType, Logger, Runtime, ICudaEngine, IExecutionContext):
        names.add(obj.__name__)
        names.update(n for n in vars(obj) if not n.startswith("_"))
        if isinstance(obj, enum.EnumMeta):
            names.update(obj.__members__)
    return names


# -- polygraphy -------------------------------------------------------------------------------------------
class PolygraphyException(Exception):
    pass


def make_polygraphy(faults: Faults, calls: dict) -> dict[str, types.ModuleType]:
    class Profile(dict):
        def add(self, name, min, opt, max):
            self[name] = (tuple(min), tuple(opt), tuple(max))
            return self

    def NetworkFromOnnxPath(path, strongly_typed=None):
        calls["network"] = {"path": path, "strongly_typed": strongly_typed}
        return ("network", path)

    def CreateConfig(**kwargs):
        calls["config"] = kwargs
        return ("config", kwargs)

    class EngineBytesFromNetwork:
        def __init__(self, network, config=None, save_timing_cache=None):
            calls["build"] = {"network": network, "config": config, "save_timing_cache": save_timing_cache}

        def __call__(self):
            if faults.build_error:
                raise PolygraphyException(faults.build_error)
            (profile,) = calls["config"]["profiles"]
            import onnx

            graph = onnx.load(calls["network"]["path"], load_external_data=False).graph
            int64 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.INT64}
            tensors = [
                {"name": name, "mode": "INPUT", "dtype": "INT64" if name in int64 else "FLOAT", "min": lo, "opt": opt, "max": hi}
                for name, (lo, opt, hi) in profile.items()
            ]
            if "latents" in profile:  # a decoder: its image's shape from the ONNX file being built
                dims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:]
                lo, opt, hi = ((p[0], *dims) for p in profile["latents"])
                tensors.append({"name": "image", "mode": "OUTPUT", "dtype": "FLOAT", "min": lo, "opt": opt, "max": hi})
            else:
                lo, opt, hi = profile["sample"]
                tensors.append({"name": "noise_pred", "mode": "OUTPUT", "dtype": "FLOAT", "min": lo, "opt": opt, "max": hi})
                for output in graph.output:
                    if output.name == "deep_feature":  # a feature-reuse full graph's second output
                        dims = [d.dim_value for d in output.type.tensor_type.shape.dim][1:]
                        lo, opt, hi = ((p[0], *dims) for p in profile["sample"])
                        tensors.append({"name": "deep_feature", "mode": "OUTPUT", "dtype": "FLOAT", "min": lo, "opt": opt,
                                        "max": hi})
            for t in tensors:
                t.update(faults.plan_override.get(t["name"], {}))
            return json.dumps({"tensors": tensors}).encode()

    root = types.ModuleType("polygraphy")
    backend = types.ModuleType("polygraphy.backend")
    trt_mod = types.ModuleType("polygraphy.backend.trt")
    exc_mod = types.ModuleType("polygraphy.exception")
    trt_mod.Profile, trt_mod.NetworkFromOnnxPath = Profile, NetworkFromOnnxPath
    trt_mod.CreateConfig, trt_mod.EngineBytesFromNetwork = CreateConfig, EngineBytesFromNetwork
    exc_mod.PolygraphyException = PolygraphyException
    return {"polygraphy": root, "polygraphy.backend": backend, "polygraphy.backend.trt": trt_mod,
            "polygraphy.exception": exc_mod}


def install(monkeypatch, faults: Faults | None = None) -> dict:
    """Puts the stand-ins into sys.modules for one test; returns the record of Polygraphy calls."""
    global FAULTS
    FAULTS = faults or Faults()
    calls: dict = {}
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    cudart = make_cudart(FAULTS)
    bindings.runtime = cudart
    cuda.bindings = bindings
    modules = {"tensorrt": make_tensorrt(), "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": cudart,
               **make_polygraphy(FAULTS, calls)}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls
