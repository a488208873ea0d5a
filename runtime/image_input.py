"""Images a request brings: the starting image of image-to-image and inpainting, and inpainting's mask.

A request's ``image`` and ``mask_image`` arrive as PNG (base64 in JSON, a file on the command line), as uint8
pixel arrays (the Python API, ``.npy`` files, Triton, the C ABI's buffers), or as float arrays already in the
model's range (diffusers' tensor inputs). Each is read here into one form, checked for what does not depend on
the engine, and nothing is resized: a size that is not the model's is refused by the pipeline with the expected
shape.

* :func:`image_array`: float32 [N, C, H, W] in [-1, 1] (uint8 pixels as diffusers' image processors map them,
  ``2 * (p / 255) - 1``); N is 1 (one image for every image of the request) or one per image.
* :func:`mask_array`: float32 [N, 1 or C, H, W] of 0 and 1, RePaintPipeline's convention: white (1) keeps a pixel,
  black (0) is inpainted; gray thresholded at 0.5 as it does (pixels from 128 up keep).

PNGs are opened lazily: the pixel count is checked against :data:`MAX_IMAGE_PIXELS` from the header, before a
byte is decompressed (a decompression bomb costs nothing), and a truncated or corrupt PNG is refused in one line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import math
import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError, brief

MAX_IMAGE_PIXELS = 2048 * 2048  # per image: above any UNet2DModel's sample (the reference model's is 256 x 256)
MAX_IMAGES = 4096  # images in one request's list (the request's count bounds it further)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODES = {"L": 1, "RGB": 3}  # what a PNG decodes to ("P" palettes and "LA"/"RGBA" as said in decode_png)
F32 = np.float32


def decode_png(data: bytes, what: str, gray: bool = False) -> np.ndarray:
    """PNG bytes → uint8 [H, W, C] (C 1 or 3; ``gray``: [H, W], converted to luminance as PIL's "L" does, as
    RePaintPipeline converts a mask). Palette images become RGB; an alpha channel is refused (it has no meaning
    here). InputError (one line) for anything that is not a PNG within :data:`MAX_IMAGE_PIXELS`."""
    data = bytes(data)
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{what} is not a PNG (it does not start with the PNG signature)")
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InputError(f"{what} is not a readable PNG (no IHDR header)")
    width, height = struct.unpack(">II", data[16:24])  # the header's claim, checked before anything is decoded
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"{what} is {width}x{height} pixels, more than {MAX_IMAGE_PIXELS} (no model takes it)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(io.BytesIO(data), formats=["PNG"])
            pil.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, EOFError, struct.error, zlib.error) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
        raise InputError(f"{what} is not a readable PNG ({why})") from None
    mode = pil.mode
    if mode in ("LA", "RGBA", "PA") or (mode == "P" and "transparency" in pil.info):
        if not gray:
            raise InputError(f"{what} has an alpha channel ({mode}); give an RGB or grayscale PNG")
    if gray:
        return np.asarray(pil.convert("L"), dtype=np.uint8)
    if mode == "P":
        pil = pil.convert("RGB")
    elif mode not in MODES:
        raise InputError(f"{what} is a {mode} PNG; give an 8-bit RGB or grayscale PNG")
    pixels = np.asarray(pil, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _decode_text(text: str, what: str, gray: bool) -> np.ndarray:
    """A base64 PNG (JSON), optionally as a ``data:image/png;base64,`` URL."""
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if head != "data:image/png;base64":
            raise InputError(f"{what} is a data URL of {brief(head, 40)}; give data:image/png;base64 or plain base64")
    if len(text) > 4 * (MAX_IMAGE_PIXELS * 4 // 3 + (1 << 20)):
        raise InputError(f"{what} is {len(text)} characters of base64, larger than any PNG a model takes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what} is not base64 (a PNG, base64-encoded)") from None
    return decode_png(data, what, gray)


def _items(value: Any, what: str, gray: bool) -> np.ndarray | list[np.ndarray]:
    """A request's value as an array, or as a list of decoded PNGs (one per image)."""
    if isinstance(value, str):
        return _decode_text(value, what, gray)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return decode_png(value, what, gray)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, bytes)) for v in value):
        if len(value) > MAX_IMAGES:
            raise InputError(f"{what} lists {len(value)} images, more than {MAX_IMAGES}")
        return [_decode_text(v, f"{what}[{i}]", gray) if isinstance(v, str) else decode_png(v, f"{what}[{i}]", gray)
                for i, v in enumerate(value)]
    raise InputError(f"{what} must be a PNG (base64 in JSON), a list of them (one per image) or a pixel array, "
                     f"got {brief(value)}")


def _stacked(items: np.ndarray | list[np.ndarray], what: str) -> np.ndarray:
    if isinstance(items, np.ndarray):
        return items
    shapes = {item.shape for item in items}
    if len(shapes) > 1:
        raise InputError(f"{what} lists images of different sizes ({', '.join(str(list(s)) for s in sorted(shapes))})")
    return np.stack(items)


def _float_array(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.size > MAX_IMAGES * MAX_IMAGE_PIXELS:
        raise InputError(f"{what} has {arr.size} values, more than any request takes")
    with np.errstate(over="ignore"):
        out = np.asarray(arr, dtype=F32)
    if not np.isfinite(out).all():
        raise InputError(f"{what} holds NaN or Inf (or values beyond float32)")
    return out


def image_array(value: Any, what: str = "image") -> np.ndarray | None:
    """A request's ``image`` as float32 [N, C, H, W] in the model's range (None stays None).

    uint8 pixels: [H, W], [H, W, C] or [N, H, W, C] (PNG, arrays); floats: [C, H, W] or [N, C, H, W], taken as they
    are (diffusers' preprocessed tensors)."""
    if value is None:
        return None
    arr = _stacked(_items(value, what, gray=False), what)
    if arr.dtype == np.uint8:
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim == 3:
            arr = arr[None]
        _check_layout(arr, 4, 1, what, "pixels must be [height, width, channels] or [count, height, width, channels]")
        out = F32(2.0) * (arr.astype(F32) / F32(255.0)) - F32(1.0)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    if arr.dtype.kind != "f":
        raise InputError(f"{what} must be uint8 pixels or a float array in the model's range, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    _check_layout(arr, 4, 2, what, "as floats must be [channels, height, width] or [count, channels, height, width]")
    return np.ascontiguousarray(_float_array(arr, what))


def mask_array(value: Any, what: str = "mask_image") -> np.ndarray | None:
    """A request's ``mask_image`` as float32 [N, 1 or C, H, W] of 0 (inpaint) and 1 (keep); None stays None.

    uint8 or bool: [H, W] or [N, H, W] (a grayscale PNG; a color PNG is converted to luminance); floats: [H, W],
    [N, 1, H, W] or [N, C, H, W]. Thresholded at 0.5 (uint8: 128 and up keep)."""
    if value is None:
        return None
    arr = _stacked(_items(value, what, gray=True), what)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype == np.uint8:
        if arr.ndim == 2:
            arr = arr[None]
        _check_layout(arr, 3, 1, what, "pixels must be grayscale [height, width] or [count, height, width]")
        unit = arr.astype(F32) / F32(255.0)
        return np.ascontiguousarray((unit >= F32(0.5)).astype(F32)[:, None])
    if arr.dtype.kind != "f":
        raise InputError(f"{what} must be grayscale uint8 pixels or a float array, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None, None]
    _check_layout(arr, 4, 2, what, "as floats must be [height, width], [count, 1, height, width] or "
                  "[count, channels, height, width]")
    return np.ascontiguousarray((_float_array(arr, what) >= F32(0.5)).astype(F32))


def _check_layout(arr: np.ndarray, rank: int, height_axis: int, what: str, layouts: str) -> None:
    """Refuses ``arr`` unless it has ``rank`` axes, none empty, and at most :data:`MAX_IMAGE_PIXELS` per image (height
    and width at ``height_axis`` and the axis after); ``layouts``: the message's "must be ..." part."""
    if arr.ndim != rank or 0 in arr.shape:
        raise InputError(f"{what} {layouts}, got shape {list(arr.shape)}")
    pixels = arr.shape[height_axis] * arr.shape[height_axis + 1]
    if pixels > MAX_IMAGE_PIXELS:
        raise InputError(f"{what} has {pixels} pixels per image, more than {MAX_IMAGE_PIXELS} (no model takes it)")


def read_image_file(path: str | Path, gray: bool = False) -> np.ndarray:
    """A ``--image`` / ``--mask-image`` file: a PNG, or a ``.npy`` array (no pickles) as :func:`image_array` takes."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not a .npy array file ({str(exc).splitlines()[0]})") from None
    if not data.startswith(PNG_SIGNATURE):
        raise InputError(f"{path} is not a PNG (it does not start with the PNG signature); give a .png or .npy file")
    return decode_png(data, str(path), gray)


def image_file(path: str) -> np.ndarray:
    """``--image``'s parser."""
    try:
        return read_image_file(path)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def mask_file(path: str) -> np.ndarray:
    """``--mask-image``'s parser (a color PNG converted to luminance)."""
    try:
        return read_image_file(path, gray=True)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def png_base64_bound(height: int, width: int, channels: int) -> int:
    """The most characters a legitimate PNG of that size takes as base64 (stored, unfiltered: each row's filter
    byte, zlib's and PNG's framing), for body limits."""
    raw = height * (width * channels + 1)
    png = raw + 5 * math.ceil(raw / 16384 + 1) + 12 * math.ceil(raw / 8192 + 1) + 4096
    return 4 * math.ceil(png / 3) + 8


def shape_text(shape: Sequence[int]) -> str:
    """[C, H, W] as 'H x W with C channel(s)' for messages."""
    c, h, w = shape
    return f"{h}x{w} with {c} channel{'s' if c != 1 else ''}"
