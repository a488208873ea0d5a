"""Which engine of a folder to run: the fastest gated one this CPU has been timed with, or the one asked for.

``python -m export.cpu --engines DIR`` builds what this CPU runs best (FP32, BF16 where it has BF16 units, INT8
where it has VNNI or AMX), gates each, times each here and records the times in each artifact's manifest entry
under ``cpu_timing``, keyed by the CPU (:func:`cpu_key`). Every entry point that takes an engine (the Python API,
``runtime.sample``, the C ABI, the HTTP service, the Triton model) takes the folder too, with a ``precision``:

* ``auto`` (default): the artifact with the fewest seconds per UNet call on this CPU kind; a folder never timed
  on this CPU kind runs ``unet.onnx`` (FP32) and says, in one log line, how to time it;
* ``fp32``, ``bf16``, ``int8``, ``fp16``: that precision's engine (``fp16``: the TensorRT plan where the folder has
  one, else ``unet.fp16.onnx``; ``int8``: ONNX Runtime's before OpenVINO's), refused in one line where the folder
  has none.

A path to an engine file is run as it is (a precision other than ``auto`` must then be the file's).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .cpu import BF16_FLAGS, INT8_FLAGS, cpu_flags, cpu_generation, cpu_model
from .errors import InputError
from .manifest import MANIFEST_NAME, ArtifactEntry, Manifest, artifact_entry, read_manifest
from .reuse import BUILD_KEY

log = logging.getLogger("runtime.selection")

PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")
TIMING_KEY = "cpu_timing"  # an artifact entry's build key: {cpu_key: {"s_per_call": ..., "threads": ..., ...}}
CPU_KINDS = ("onnx", "openvino")  # the backends that run on a CPU (a TensorRT plan needs a GPU)
FP32_NAME = "unet.onnx"
HOW_TO_TIME = "python -m export.cpu --engines {folder}"


def cpu_key() -> str:
    """This CPU kind, as timings are recorded: the model name, its family and model numbers (a VM's name may
    say only "AMD EPYC"), and whether it has BF16 and VNNI units."""
    flags = cpu_flags()
    units = [name for name, kinds in (("bf16", BF16_FLAGS), ("vnni", INT8_FLAGS)) if flags & set(kinds)]
    generation = cpu_generation()
    return f"{cpu_model()}{f' ({generation})' if generation else ''}; {'+'.join(units) or 'no bf16/vnni'}"


def precision_of(entry: ArtifactEntry) -> str:
    """The ``precision`` name an entry answers to (``fp16-mixed`` is fp16)."""
    return "fp16" if entry.precision.startswith("fp16") else entry.precision


def unet_engines(manifest: Manifest) -> dict[str, ArtifactEntry]:
    """The folder's UNet engines: not a decoder, not a feature-reuse graph."""
    return {name: entry for name, entry in manifest.artifacts.items()
            if BUILD_KEY not in entry.build and entry.build.get("role") != "decoder"
            and name != manifest.decoder_artifact}


def timing(entry: ArtifactEntry, key: str | None = None) -> dict[str, Any] | None:
    """The entry's timing on this CPU kind (``key``: another), or None."""
    record = entry.build.get(TIMING_KEY)
    value = record.get(key or cpu_key()) if isinstance(record, dict) else None
    return value if isinstance(value, dict) and isinstance(value.get("s_per_call"), (int, float)) else None


def fastest(manifest: Manifest, key: str | None = None) -> tuple[str, float] | None:
    """(artifact name, seconds per call) of the fastest CPU engine timed on this CPU kind (``key``: another), or
    None."""
    key = key or cpu_key()  # reads /proc/cpuinfo: once, not per engine
    records = {name: timing(entry, key) for name, entry in unet_engines(manifest).items() if entry.kind in CPU_KINDS}
    timed = [(name, record["s_per_call"]) for name, record in records.items() if record is not None]
    return min(timed, key=lambda item: item[1]) if timed else None


def resolve_engine(engine: str | Path, precision: str = "auto") -> Path:
    """The engine file to open for ``engine`` (a file, or a folder with ``manifest.json``) and ``precision``."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path = Path(engine)
    if not path.is_dir():
        if precision != "auto" and path.is_file():
            entry = artifact_entry(path)[1]
            if precision_of(entry) != precision:
                raise InputError(f"{path} is a {entry.precision} engine, not {precision}; pass its folder to choose "
                                 "by precision, or leave precision at auto")
        return path
    if not (path / MANIFEST_NAME).is_file():
        raise InputError(f"{path} is a folder without {MANIFEST_NAME}; pass an engines folder export wrote, or an "
                         "engine file in it")
    manifest = read_manifest(path / MANIFEST_NAME)
    engines = unet_engines(manifest)
    if precision == "auto":
        key = cpu_key()
        best = fastest(manifest, key)
        if best is not None:
            log.info("%s: %s is the fastest engine timed on this CPU (%s: %.3g s per call)", path, best[0], key, best[1])
            return path / best[0]
        if FP32_NAME not in engines:
            raise InputError(f"{path} has no {FP32_NAME}; pass an engine file in it")
        log.info("%s: no engine was timed on this CPU kind (%s), so %s (FP32) runs; `%s` builds and times what "
                 "this CPU runs best", path, key, FP32_NAME, HOW_TO_TIME.format(folder=path))
        return path / FP32_NAME
    # FP16 is a GPU precision: its TensorRT plan first, then the FP16 ONNX model
    matching = sorted((name for name, entry in engines.items() if precision_of(entry) == precision
                       and (entry.kind in CPU_KINDS or precision == "fp16")),
                      key=lambda name: (engines[name].kind != "tensorrt", name))
    if not matching:
        raise InputError(f"{path} has no {precision} engine (it has: {', '.join(sorted(engines)) or 'none'}); "
                         f"build one (`{HOW_TO_TIME.format(folder=path)}`, or export.{precision})")
    return path / matching[0]
