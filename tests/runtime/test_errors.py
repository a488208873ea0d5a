"""runtime.errors: each class's exit code, HTTP status and C ABI code, side by side, and the header in step."""

import re

import pytest

from runtime import errors
from tests.conftest import ROOT


def test_the_c_codes_are_the_headers():
    header = (ROOT / "embed" / "include" / "ddpm_runtime.h").read_text()
    declared = {name: int(value) for name, value in re.findall(r"\bDDPM_(OK|ERR_[A-Z_]+) = (\d+)", header)}
    ours = {name.removeprefix("C_"): getattr(errors, name) for name in dir(errors) if name.startswith("C_")}
    assert {("ERR_" + k if k != "OK" else k): v for k, v in ours.items()} == declared


@pytest.mark.parametrize("cls, exit_code, status, c_code", [
    (errors.InputError, 2, 400, errors.C_INVALID_ARGUMENT),
    (errors.BufferTooSmallError, 2, 400, errors.C_BUFFER_TOO_SMALL),
    (errors.EngineError, 2, 500, errors.C_ENGINE),
    (errors.ManifestError, 2, 500, errors.C_ENGINE),
    (errors.BackendUnavailableError, 4, 500, errors.C_BACKEND_UNAVAILABLE),
    (errors.GateError, 3, 500, errors.C_FAILED),
    (errors.QueueFullError, 2, 503, errors.C_BUSY),
    (errors.RequestTimeoutError, 2, 504, errors.C_FAILED),
    (errors.RequestCancelledError, 2, 499, errors.C_FAILED),
    (errors.SchedulerConfigError, 2, 500, errors.C_FAILED),
])
def test_each_class_carries_its_codes(cls, exit_code, status, c_code):
    assert (cls.exit_code, cls.http_status, cls.c_code) == (exit_code, status, c_code)


def test_every_surface_reads_the_class():
    from embed.host import describe

    assert describe(errors.QueueFullError("full")) == (errors.C_BUSY, "full")
    assert describe(ValueError("a bug"))[0] == errors.C_FAILED
