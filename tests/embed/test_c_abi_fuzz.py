"""Hypothesis against libddpm_runtime through ctypes, in this process: any request text gets a code and one
line (never a crash, never an "internal error"); the handle keeps working after each."""

import ctypes
import json

import numpy as np
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


class Pixels(ctypes.Structure):
    """embed/include/ddpm_runtime.h's ddpm_pixels."""
    _fields_ = [("data", ctypes.POINTER(ctypes.c_uint8)), ("count", ctypes.c_size_t), ("height", ctypes.c_size_t),
                ("width", ctypes.c_size_t), ("channels", ctypes.c_size_t)]

    @classmethod
    def of(cls, array: np.ndarray) -> "Pixels":
        array = np.ascontiguousarray(array, np.uint8)
        pixels = cls(array.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), *array.shape)
        pixels.keep = array  # the buffer lives as long as the struct
        return pixels


@pytest.fixture(scope="module")
def abi(embed_build, demo_engine):
    lib = ctypes.CDLL(str(embed_build / "libddpm_runtime.so"))
    lib.ddpm_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.ddpm_sample.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t]
    lib.ddpm_close.argtypes = [ctypes.c_void_p]
    lib.ddpm_sample_images.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Pixels), ctypes.POINTER(Pixels),
                                       ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t]
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


def test_pixel_buffers_equal_base64_pngs_and_bad_ones_are_invalid_argument(abi, demo_engine):
    """ddpm_sample_images: the image and mask as uint8 buffers give the images the same request gives with base64
    PNGs in its JSON (the demo model: 16x16, one channel)."""
    from runtime.image_input import image_array, mask_array
    from tests.serve.scenario import RING, TOP_HALF

    lib, _ = abi
    handle = ctypes.c_void_p()  # without the fuzzing handle's short deadline
    assert lib.ddpm_open(str(demo_engine).encode(), b'{"max_batch": 4}', ctypes.byref(handle)) == OK, lib.ddpm_last_error()
    ring = np.round((image_array(RING)[0, 0] + 1) / 2 * 255).astype(np.uint8)  # the PNG's pixels back
    top = (mask_array(TOP_HALF)[0, 0] * 255).astype(np.uint8)
    request = {"seed": 3, "steps": 6, "jump_length": 2, "jump_n_sample": 2}

    def run(body: dict, image=None, mask=None):
        out = (ctypes.c_uint8 * (16 * 16))()
        text = json.dumps(body).encode()
        if image is None and mask is None:
            code = lib.ddpm_sample(handle, text, out, len(out))
        else:
            code = lib.ddpm_sample_images(handle, text, None if image is None else ctypes.byref(image),
                                          None if mask is None else ctypes.byref(mask), out, len(out))
        return code, bytes(out), (lib.ddpm_last_error() or b"").decode()

    by_json = run({**request, "image": RING, "mask_image": TOP_HALF})
    by_pixels = run(request, Pixels.of(ring[None, :, :, None]), Pixels.of(top[None, :, :, None]))
    assert by_json[0] == by_pixels[0] == OK, (by_json[2], by_pixels[2])
    assert by_json[1] == by_pixels[1]
    img2img = run({"seed": 4, "steps": 10, "scheduler": "ddim", "strength": 0.5}, Pixels.of(ring[None, :, :, None]))
    assert img2img[0] == OK, img2img[2]
    for image, mask, message in [
        (Pixels.of(np.zeros((1, 8, 8, 1), np.uint8)), None, "image is 8x8 with 1 channel; this model takes 16x16"),
        (Pixels.of(ring[None, :, :, None]), Pixels.of(np.zeros((1, 16, 16, 3), np.uint8)), "give a grayscale mask"),
        (Pixels(None, 1, 16, 16, 1), None, "image.data is NULL"),
        (Pixels(None, 0, 16, 16, 1), None, "zero or overflowing dimension"),
        (Pixels(None, 1 << 40, 1 << 40, 16, 1), None, "zero or overflowing dimension"),
    ]:
        code, _, error = run({"steps": 4, "scheduler": "ddim", "strength": 0.5}, image, mask)
        assert code == INVALID and message in error and "\n" not in error, (message, code, error)
    code, _, error = run({**request, "image": RING, "mask_image": TOP_HALF}, Pixels.of(ring[None, :, :, None]))
    assert code == INVALID and "gives image and so does the pixel buffer" in error, error
    assert lib.ddpm_close(handle) == OK
