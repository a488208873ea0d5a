"""runtime.image_input: PNGs and arrays into the model's range, masks thresholded as RePaintPipeline does, and every
bad image refused in one line before anything is decoded that need not be."""

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from runtime.errors import InputError
from runtime.image_input import (MAX_IMAGE_PIXELS, decode_png, image_array, mask_array, png_base64_bound,
                                 read_image_file)


def png(array: np.ndarray | Image.Image, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    (array if isinstance(array, Image.Image) else Image.fromarray(array, mode)).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


RGB = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_pixels_map_to_the_model_range_as_diffusers_image_processors():
    out = image_array(png(RGB))
    expected = 2.0 * (RGB.astype(np.float32) / 255.0) - 1.0  # VaeImageProcessor: /255, then 2x - 1, in float32
    assert out.shape == (1, 3, 16, 16) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], expected.transpose(2, 0, 1))
    np.testing.assert_array_equal(image_array(RGB), out)  # a uint8 array is the same pixels
    assert image_array(base64.b64encode(png(RGB)).decode()).tobytes() == out.tobytes()
    assert image_array("data:image/png;base64," + base64.b64encode(png(RGB)).decode()).tobytes() == out.tobytes()
    floats = np.zeros((2, 3, 16, 16), np.float32)
    assert image_array(floats) is not None and image_array(floats).shape == (2, 3, 16, 16)  # diffusers' tensors
    gray = image_array(png(RGB[:, :, 0]))
    assert gray.shape == (1, 1, 16, 16)
    palette = Image.fromarray(RGB).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    np.testing.assert_array_equal(image_array(buf.getvalue())[0],
                                  image_array(np.asarray(palette.convert("RGB")))[0])
    listed = image_array([base64.b64encode(png(RGB)).decode(), base64.b64encode(png(255 - RGB)).decode()])
    assert listed.shape == (2, 3, 16, 16)


def test_masks_threshold_at_one_half_white_keeps():
    gray = np.array([[0, 127, 128, 255]], np.uint8)
    np.testing.assert_array_equal(mask_array(png(gray))[0, 0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(mask_array(gray)[0, 0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(mask_array(np.array([[0.2, 0.5, 0.9]], np.float32))[0, 0], [[0, 1, 1]])
    color = np.zeros((2, 2, 3), np.uint8)
    color[0] = 255
    np.testing.assert_array_equal(mask_array(png(color))[0, 0], [[1, 1], [0, 0]])  # converted to luminance ("L")
    assert mask_array(np.ones((1, 3, 4, 4), np.float32)).shape == (1, 3, 4, 4)  # diffusers' per-channel tensor


@pytest.mark.parametrize("value, message", [
    (b"GIF89a....", "is not a PNG (it does not start with the PNG signature)"),
    (png(RGB)[:60], "is not a readable PNG"),
    (png(RGB)[:-20] + b"\0" * 20, "is not a readable PNG"),
    (bomb_png(60000, 60000), f"is 60000x60000 pixels, more than {MAX_IMAGE_PIXELS}"),
    (png(np.zeros((4, 4, 4), np.uint8), "RGBA"), "has an alpha channel (RGBA)"),
    (png(Image.new("I;16", (4, 4))), "give an 8-bit RGB or grayscale PNG"),
    ("data:image/gif;base64,R0lGOD", "is a data URL of 'data:image/gif;base64'"),
    ([base64.b64encode(png(RGB)).decode(), base64.b64encode(png(RGB[:8])).decode()], "lists images of different sizes"),
    (np.zeros((2, 2, 2, 2, 2), np.uint8), "pixels must be [height, width, channels] or [count, height, width, channels]"),
    (np.zeros((4, 4), np.float32), "as floats must be [channels, height, width]"),
])
def test_bad_images_are_refused_in_one_line(value, message):
    with pytest.raises(InputError) as info:
        image_array(value)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_bomb_is_refused_before_decoding():
    """The pixel count is read from the header: a 2^31-pixel claim costs no memory and no time."""
    import time

    started = time.perf_counter()
    with pytest.raises(InputError, match="more than"):
        decode_png(bomb_png(1 << 16, 1 << 15), "image")
    assert time.perf_counter() - started < 1


def test_files_png_or_npy(tmp_path):
    (tmp_path / "a.png").write_bytes(png(RGB))
    np.save(tmp_path / "a.npy", RGB)
    np.testing.assert_array_equal(read_image_file(tmp_path / "a.png"), RGB)
    np.testing.assert_array_equal(read_image_file(tmp_path / "a.npy"), RGB)
    (tmp_path / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="is not a PNG"):
        read_image_file(tmp_path / "b.png")
    with pytest.raises(InputError, match="cannot read"):
        read_image_file(tmp_path / "missing.png")


def test_the_body_allowance_holds_the_largest_png_of_a_size():
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # incompressible
    for compress_level in (0, 9):
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, format="PNG", compress_level=compress_level)
        assert len(base64.b64encode(buf.getvalue())) <= png_base64_bound(256, 256, 3)
