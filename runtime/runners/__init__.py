"""Inference backends behind one interface (:class:`~runtime.runners.base.Runner`), chosen by the kind
the manifest records for an artifact.

Every runner is built the same way, ``Runner(path, io, entry, options)``, with no side effects (after
Polygraphy's lazy loaders): the backend's module is imported only when an artifact of its kind is
opened, and the backend library itself (onnxruntime's session, TensorRT and CUDA) is touched only in
``activate()``. A new backend is one module with a Runner subclass and one line here.
"""

from __future__ import annotations

import importlib

from ..errors import ManifestError
from .base import Runner, RunnerOptions

# artifact kind (the manifest entry's "kind") -> "module:class"
BACKENDS = {
    "onnx": "runtime.runners.ort:OrtRunner",
    "tensorrt": "runtime.runners.trt:TrtRunner",
    "openvino": "runtime.runners.openvino:OpenVinoRunner",
}


def runner_class(kind: str) -> type[Runner]:
    if kind not in BACKENDS:
        raise ManifestError(
            f"the manifest says this artifact is of kind {kind!r}, which this runtime cannot run "
            f"(it runs: {', '.join(BACKENDS)}); rebuild the engine or upgrade ddpm-deploy"
        )
    module, _, cls = BACKENDS[kind].partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["BACKENDS", "Runner", "RunnerOptions", "runner_class"]
