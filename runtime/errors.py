"""Exceptions raised by the runtime. Each message says what the user can do about it.

Each class carries what every surface answers with it, side by side: ``exit_code`` (the CLIs), ``http_status``
(the HTTP service) and ``c_code`` (the C ABI, ``embed/include/ddpm_runtime.h``'s ``DDPM_ERR_*``; Triton sends
the message alone). An exception that is no :class:`DeployError` is a bug: exit 1, HTTP 500, ``C_FAILED``.
"""

# The C ABI's codes (embed/include/ddpm_runtime.h); keep the two in step.
C_OK, C_INVALID_ARGUMENT, C_BUFFER_TOO_SMALL, C_ENGINE, C_BACKEND_UNAVAILABLE, C_BUSY, C_FAILED = 0, 1, 2, 3, 4, 5, 6


def brief(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: what a message may echo of a user's input (a 20 MB string
    must not become a 20 MB error line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DeployError(Exception):
    """Base class: a problem the user can act on (CLIs print it as one line and exit with ``exit_code``)."""

    exit_code = 2
    http_status = 500
    c_code = C_FAILED


class InputError(DeployError, ValueError):
    """An argument is out of range or of the wrong kind."""

    http_status = 400
    c_code = C_INVALID_ARGUMENT


class BufferTooSmallError(InputError):
    """The caller's output buffer cannot hold the images (the C ABI's ``out_len``)."""

    c_code = C_BUFFER_TOO_SMALL


class EngineError(DeployError):
    """The engine file is missing, unreadable, not a model, or not what its manifest describes."""

    c_code = C_ENGINE


class ManifestError(EngineError):
    """The manifest beside an engine is missing, malformed or does not match the engine."""


class SchedulerConfigError(DeployError):
    """The scheduler configuration asks for something this runtime does not implement, or is malformed."""


class BackendUnavailableError(DeployError):
    """The backend an engine needs (ONNX Runtime provider, TensorRT, a GPU) is not available here. Exit code 4."""

    exit_code = 4
    c_code = C_BACKEND_UNAVAILABLE


class OutputError(DeployError):
    """Images cannot be written where the user asked."""


class GateError(DeployError):
    """A built artifact failed its accuracy gate; it was not written. CLIs exit with code 3."""

    exit_code = 3


class QueueFullError(DeployError):
    """The step batcher's queue is full; retry later (a service answers 503)."""

    http_status = 503
    c_code = C_BUSY


class RequestCancelledError(DeployError):
    """The request was cancelled (by the caller, or because the batcher closed without draining)."""

    http_status = 499  # the client is gone (nginx's code); nobody reads the answer


class RequestTimeoutError(DeployError):
    """The request did not finish within its timeout (a service answers 504)."""

    http_status = 504
