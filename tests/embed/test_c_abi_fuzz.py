"""Hypothesis against libddpm_runtime through ctypes, in this process: any request text gets a code and one
line (never a crash, never an "internal error"); the handle keeps working after each."""

import ctypes
import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from runtime.requests import SampleRequest  # noqa: E402

pytestmark = pytest.mark.build
OK, INVALID, BUFFER, FAILED = 0, 1, 2, 6

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
field_names = st.sampled_from([*SampleRequest.json_schema()["properties"], "format", "sed", ""])
# Mostly request-shaped objects (field names of the request type with any JSON values), then any text and bytes.
requests = st.one_of(
    st.dictionaries(field_names, json_values, max_size=5).map(json.dumps),
    st.dictionaries(field_names, json_values, max_size=5).map(lambda d: json.dumps(d)[: len(json.dumps(d)) // 2]),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
)


@pytest.fixture(scope="module")
def abi(embed_build, demo_engine):
    lib = ctypes.CDLL(str(embed_build / "libddpm_runtime.so"))
    lib.ddpm_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.ddpm_sample.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t]
    lib.ddpm_close.argtypes = [ctypes.c_void_p]
    lib.ddpm_last_error.restype = ctypes.c_char_p
    handle = ctypes.c_void_p()
    # a short default deadline: a valid request with every default (1000 steps) times out rather than runs
    code = lib.ddpm_open(str(demo_engine).encode(), b'{"max_batch": 4, "timeout_s": 0.5}', ctypes.byref(handle))
    assert code == OK, lib.ddpm_last_error()
    yield lib, handle
    lib.ddpm_close(handle)


def sample(abi, body: bytes, capacity: int = 4 * 16 * 16):
    lib, handle = abi
    out = (ctypes.c_uint8 * capacity)()
    code = lib.ddpm_sample(handle, body.replace(b"\0", b""), out, capacity)
    return code, (lib.ddpm_last_error() or b"").decode("utf-8", "replace")


@given(body=requests)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
          derandomize=True)
def test_any_request_text_gets_a_code_and_one_line(abi, body):
    raw = body if isinstance(body, bytes) else body.encode()
    code, message = sample(abi, raw)
    assert code in (OK, INVALID, BUFFER, FAILED), (raw, code, message)
    if code == FAILED:  # the only failure a request may cause: its deadline
        assert "did not finish within its timeout" in message, (raw, message)
    if code != OK:
        assert message and "\n" not in message and "internal error" not in message and "Traceback" not in message, (raw, message)


def test_adversarial_bodies_are_invalid_argument(abi):
    from tests.serve.scenario import ADVERSARIAL

    for name, body in ADVERSARIAL:
        code, message = sample(abi, body)
        assert code in (INVALID, BUFFER) and message and "\n" not in message and "internal error" not in message, (name, code, message)
        assert len(message) < 300, (name, message[:300])  # no echo of a huge input


@pytest.mark.parametrize("body", [b"\xff\xfe{", b'{"steps": 2, "noise": "\xc3"}', b"[" * 100_000, b'{"seed": 1e400}'],
                         ids=["not utf-8", "bad utf-8 in a string", "nested 100000 deep", "number overflow"])
def test_regressions_are_invalid_argument(abi, body):
    code, message = sample(abi, body)
    assert code == INVALID and "\n" not in message, (code, message)
    assert sample(abi, b'{"steps": 2}')[0] == OK  # the handle still works
