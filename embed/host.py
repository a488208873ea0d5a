"""What ``libddpm_runtime`` (embed/src/ddpm_runtime.cpp) calls: one :class:`Host` per ``ddpm_open``.

A host is a loaded :class:`runtime.Pipeline` plus a :class:`runtime.batching.StepBatcher`, so requests
from many C++ threads share every UNet call. Requests are a :class:`runtime.requests.SampleRequest` as JSON,
with the ``runtime.sample`` CLI's meaning::

    {"seed": 0, "count": 2, "steps": 50, "scheduler": "ddim", "eta": 0.0, "noise": "numpy",
     "per_image_seeds": false, "timeout_s": 30}

all optional (count 1, seed 0, the scheduler config's own sampler and its default steps, numpy noise,
the handle's timeout_s option); ``seeds`` (one per image) and the alias ``batch`` of ``count`` too.
Images come back as uint8 ``[count, H, W, C]``. Errors are :class:`runtime.errors.DeployError`s
whose first line the C side hands to the caller, with the code :func:`error_code` gives.
"""

from __future__ import annotations

import json
import logging
import os

from runtime import __version__
from runtime.batching import StepBatcher
from runtime.errors import BackendUnavailableError, DeployError, EngineError, InputError, QueueFullError, first_line
from runtime.pipeline import Pipeline
from runtime.requests import NUMBER, SampleRequest, parse_object

log = logging.getLogger(__name__)

# The C header's codes (embed/include/ddpm_runtime.h); keep the two in step.
OK, INVALID_ARGUMENT, BUFFER_TOO_SMALL, ENGINE, BACKEND_UNAVAILABLE, BUSY, FAILED = 0, 1, 2, 3, 4, 5, 6
OPTIONS = {"device": str, "threads": int, "max_batch": int, "max_queue": int, "cache_dir": (str, type(None)), "timeout_s": NUMBER}


class BufferTooSmallError(InputError):
    pass


class Host:
    def __init__(self, engine: str | bytes, options_json: str | bytes = ""):
        engine = os.fsdecode(engine)
        options = parse_object(options_json, "options", OPTIONS)
        self.timeout = options.get("timeout_s")
        self.pipeline = Pipeline.load(engine, device=options.get("device", "auto"), threads=options.get("threads"),
                                      cache_dir=options.get("cache_dir", "auto"))
        try:
            self.batcher = StepBatcher(self.pipeline, options.get("max_batch"), options.get("max_queue", 64))
        except BaseException:
            self.pipeline.close()
            raise

    def image_shape(self) -> tuple[int, int, int]:
        return self.pipeline.image_shape

    def sample(self, request_json: str | bytes, out_len: int) -> bytes:
        """The request's images as bytes (uint8 [count, H, W, C]); checks ``out_len`` before any work."""
        request, _ = SampleRequest.from_json(request_json)
        if request.timeout_s is None and self.timeout is not None:
            request = SampleRequest.create(request, timeout_s=self.timeout)
        height, width, channels = self.image_shape()
        need = request.count * height * width * channels
        if request.count >= 1 and out_len < need:
            raise BufferTooSmallError(
                f"the output buffer holds {out_len} bytes; {request.count} image(s) of {height}x{width}x{channels} need {need}"
            )
        future = self.batcher.submit(request)
        return future.result().tobytes()  # waits without the GIL

    def stats_json(self) -> str:
        st = self.batcher.stats
        return json.dumps({"engine_calls": st.engine_calls, "rows": st.rows, "mean_batch": round(st.mean_batch, 3),
                           "completed": st.completed, "cancelled": st.cancelled, "timed_out": st.timed_out,
                           "failed": st.failed})

    def close(self) -> None:
        try:
            self.batcher.close(drain=True)
        finally:
            self.pipeline.close()


def error_code(exc: BaseException) -> int:
    if isinstance(exc, BufferTooSmallError):
        return BUFFER_TOO_SMALL
    if isinstance(exc, BackendUnavailableError):
        return BACKEND_UNAVAILABLE
    if isinstance(exc, EngineError):
        return ENGINE
    if isinstance(exc, QueueFullError):
        return BUSY
    if isinstance(exc, InputError):
        return INVALID_ARGUMENT
    return FAILED


def describe(exc: BaseException) -> tuple[int, str]:
    """(code, one-line message) for the C side; unexpected errors are logged with their traceback."""
    if not isinstance(exc, DeployError):
        log.error("unexpected error in the embedded runtime", exc_info=exc)
        return FAILED, f"internal error: {type(exc).__name__}: {first_line(exc)}"
    return error_code(exc), first_line(exc)


def version() -> str:
    return __version__
