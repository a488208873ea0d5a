"""runtime.images: output folders checked before any work, PNGs with metadata, written atomically."""

import numpy as np
import pytest

from runtime.errors import OutputError
from runtime.images import encode_png, make_output_dir, prepare_output_dir, write_png
from tests.conftest import read_png


def test_prepare_output_dir_creates_nothing_and_refuses_files(tmp_path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        prepare_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="lies under"):
        prepare_output_dir(tmp_path / "file" / "sub")
    with pytest.raises(OutputError, match="cannot"):
        prepare_output_dir("/proc/ddpm-out")


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_with_metadata(tmp_path, channels):
    image = np.random.default_rng(0).integers(0, 256, (8, 6, channels), dtype=np.uint8)
    make_output_dir(tmp_path / "o")
    path = tmp_path / "o" / "x.png"
    write_png(path, image, {"seed": "3", "steps": "10"})
    pixels, text = read_png(path)
    np.testing.assert_array_equal(pixels, image)
    assert text == {"seed": "3", "steps": "10"}
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary file left


def test_encode_png_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32), {})
    with pytest.raises(ValueError, match=r"\[H, W, C\]"):
        encode_png(np.zeros((1, 4, 4, 3), np.uint8), {})


def test_write_png_into_a_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="cannot write"):
        write_png(tmp_path / "missing" / "x.png", np.zeros((2, 2, 3), np.uint8), {})
