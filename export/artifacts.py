"""What every export stage shares: the artifacts' file names, the staging folders builds write into, and
the cleaner that removes what a killed build left behind.

A stage builds in a staging folder inside the engines folder (``.staging-<stage>-*``: same file system,
so finished files are renamed into place atomically) and removes it when done; a stage that was killed
leaves it, and the next stage run in that folder removes it (:func:`remove_leftovers`; one build per
folder at a time). Every stage stages through :func:`staging`, so the cleaner knows every prefix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from runtime import __version__
from runtime.cli import DISK_FULL
from runtime.manifest import DECODER_PLAN_NAME  # noqa: F401 (re-exported for the export stages)

ONNX_NAME = "unet.onnx"  # export.onnx: the FP32 model every other artifact derives from
FP16_NAME = "unet.fp16.onnx"  # export.fp16
INT8_NAME = "unet.int8.onnx"  # export.int8
OV_NAME, OV_WEIGHTS = "unet.ov.xml", "unet.ov.bin"  # export.bf16 (OpenVINO IR)
OV_INT8_NAME, OV_INT8_WEIGHTS = "unet.int8.ov.xml", "unet.int8.ov.bin"  # export.int8 --backend openvino (NNCF)
PLAN_NAME = "unet.plan"  # export.trt
DECODER_NAME = "decoder.onnx"  # export.onnx, for a latent-diffusion folder (export.decoder)
DECODER_FP16_NAME = "decoder.fp16.onnx"  # export.fp16, beside unet.fp16.onnx
# export.trt's decoder.plan, beside unet.plan: runtime.manifest.DECODER_PLAN_NAME (the runtime picks it by name)

STAGING_PREFIX = ".staging-"
# Prefixes of releases before STAGING_PREFIX: their leftovers are cleaned too.
OLD_STAGING_PREFIXES = (".export-", ".fp16-", ".bf16-")


@contextlib.contextmanager
def staging(folder: Path, stage: str) -> Iterator[Path]:
    """A fresh staging folder for ``stage`` inside ``folder``, removed on exit (a killed build leaves it
    for :func:`remove_leftovers`)."""
    work = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{stage}-", dir=folder))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def raise_if_disk_full(folder: Path, exc: BaseException) -> None:
    """For a backend whose write failure says nothing of why (OpenVINO: "iostream error"): when ``folder``'s
    disk cannot take another MiB, raise the ENOSPC it is (the CLIs turn it into one line); else return."""
    try:
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"\0" * (1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as full:
        if full.errno in DISK_FULL:
            raise OSError(full.errno, os.strerror(full.errno), str(folder)) from exc


def remove_leftovers(folder: Path) -> None:
    """Staging folders and temporary files of builds that were killed (one build per folder at a time)."""
    patterns = [f"{prefix}*" for prefix in (STAGING_PREFIX, *OLD_STAGING_PREFIXES)] + [".*.tmp"]
    for path in [p for pattern in patterns for p in folder.glob(pattern)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def tool_versions() -> dict[str, str]:
    out = {"ddpm-deploy": __version__}
    for pkg in ("torch", "diffusers", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
