"""What ``libddpm_runtime`` (embed/src/ddpm_runtime.cpp) calls: one :class:`runtime.host.Host` per ``ddpm_open``.

``ddpm_open``'s options are :class:`runtime.host.HostOptions` as JSON; a request is a
:class:`runtime.requests.SampleRequest` as JSON (its schema: ``docs/request.schema.json``), with the
``runtime.sample`` CLI's meaning. Many C++ threads share the host's step batcher, so their requests share
every UNet call. Images come back as uint8 ``[count, H, W, C]``. Errors are :class:`runtime.errors.DeployError`s
whose first line the C side hands to the caller, with their ``c_code`` (:func:`describe`).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from runtime import __version__
from runtime.errors import C_FAILED, BufferTooSmallError, DeployError, InputError, first_line
from runtime.host import Host as RuntimeHost, HostOptions
from runtime.requests import SampleRequest

log = logging.getLogger(__name__)

STATS = ("engine_calls", "rows", "mean_batch", "completed", "cancelled", "timed_out", "failed")  # the header's keys


class Host:
    """The C ABI's handle: a runtime host opened from the C strings."""

    def __init__(self, engine: str | bytes, options_json: str | bytes = ""):
        self.host = RuntimeHost(os.fsdecode(engine), HostOptions.from_json(options_json))

    def image_shape(self) -> tuple[int, int, int]:
        return self.host.image_shape

    def sample(self, request_json: str | bytes, out_len: int, image: bytes | None = None, image_shape: tuple | None = None,
               mask: bytes | None = None, mask_shape: tuple | None = None) -> bytes:
        """The request's images as bytes (uint8 [count, H, W, C]); checks ``out_len`` before any work. ``image`` /
        ``mask``: ``ddpm_sample_images``' pixel buffers (uint8 bytes of ``*_shape``, [count, H, W, C])."""
        pixels = {}
        for name, data, shape in (("image", image, image_shape), ("mask_image", mask, mask_shape)):
            if data is not None:
                arr = np.frombuffer(data, np.uint8).reshape(shape)
                if name == "mask_image":
                    if shape[3] != 1:
                        raise InputError(f"mask has {shape[3]} channels; give a grayscale mask (channels 1)")
                    arr = arr[..., 0]
                pixels[name] = arr
        request, _ = SampleRequest.from_json(request_json, besides=pixels)
        height, width, channels = self.image_shape()
        need = request.count * height * width * channels
        if out_len < need:
            raise BufferTooSmallError(
                f"the output buffer holds {out_len} bytes; {request.count} image(s) of {height}x{width}x{channels} need {need}"
            )
        return self.host.submit(request).result().tobytes()  # waits without the GIL

    def stats_json(self) -> str:
        stats = self.host.stats()
        return json.dumps({key: stats[key] for key in STATS})

    def close(self) -> None:
        self.host.close(drain=True)


def describe(exc: BaseException) -> tuple[int, str]:
    """(code, one-line message) for the C side; unexpected errors are logged with their traceback."""
    if not isinstance(exc, DeployError):
        log.error("unexpected error in the embedded runtime", exc_info=exc)
        return C_FAILED, f"internal error: {type(exc).__name__}: {first_line(exc)}"
    return exc.c_code, first_line(exc)


def version() -> str:
    return __version__
