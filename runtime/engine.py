"""Opening an engine file: existence, manifest and hash checks, then the runner for its format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import EngineError
from .manifest import Manifest, verify_artifact
from .runners.base import Runner

ENGINE_SUFFIXES = (".onnx", ".plan")


def open_engine(path: str | Path, device: str = "auto", threads: int | None = None) -> tuple[Runner, Manifest, dict[str, Any]]:
    """Checks ``path`` against its manifest and returns an (inactive) runner, the manifest and the entry."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an engine file" if path.is_dir() else "does not exist"
        raise EngineError(f"engine {path} {what}; build one with `make engine` (or `python -m export.onnx`) and pass its path")
    if path.suffix not in ENGINE_SUFFIXES:
        raise EngineError(f"engine {path} must end in {' or '.join(ENGINE_SUFFIXES)} (an ONNX model or a TensorRT plan)")
    manifest, entry = verify_artifact(path)
    io = manifest.io
    if path.suffix == ".onnx":
        from .runners.ort import OrtRunner

        return OrtRunner(path, io, device=device, threads=threads), manifest, entry
    from .runners.trt import TrtRunner

    return TrtRunner(path, io, entry), manifest, entry
