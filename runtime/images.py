"""Writing sampled images: PNG with text metadata, each written atomically."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .atomic import atomic_write_bytes
from .errors import OutputError


def to_unit_range(sample: np.ndarray, unit_data: bool = False) -> np.ndarray:
    """[B,C,H,W] float → [0, 1], as diffusers' pipelines do: x / 2 + 0.5 for data in [-1, 1], the sample
    itself for data in [0, 1] (``unit_data``: score-SDE), clamped."""
    if not unit_data:
        sample = sample / np.float32(2) + np.float32(0.5)
    return np.clip(sample, np.float32(0), np.float32(1))


def to_uint8(sample: np.ndarray, unit_data: bool = False) -> np.ndarray:
    """[B,C,H,W] float → [B,H,W,C] uint8 with diffusers' arithmetic (to [0, 1], then *255, round)."""
    return (to_unit_range(sample, unit_data).transpose(0, 2, 3, 1) * np.float32(255)).round().astype(np.uint8)


def prepare_output_dir(out: str | Path) -> Path:
    """Checks that ``out`` is, or can become, a writable folder. Creates nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} is a file; pass a folder for --out")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"output path {out} lies under {probe}, which is a file; pass a folder for --out")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write to {probe} ({exc.strerror}); pass a writable folder for --out") from None
    return out


def encode_png(image: np.ndarray, metadata: dict[str, str]) -> bytes:
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {image.dtype} {image.shape}")
    pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, str(value))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def write_png(path: str | Path, image: np.ndarray, metadata: dict[str, str]) -> None:
    data = encode_png(image, metadata)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc.strerror}); pass a writable folder for --out") from None


def make_output_dir(out: Path) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out} ({exc.strerror}); pass a writable folder for --out") from None
