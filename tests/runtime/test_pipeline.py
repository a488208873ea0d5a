"""The Python API: load once, sample many times, uint8 images, progress callback."""

import numpy as np
import pytest

from runtime import Pipeline
from runtime.errors import InputError


@pytest.fixture(scope="module")
def pipe(tiny_engine):
    with Pipeline.load(tiny_engine, device="cpu") as p:
        yield p


def test_returns_uint8_images(pipe):
    images = pipe(batch=2, steps=4, seed=1)
    assert images.dtype == np.uint8 and images.shape == (2, 16, 16, 3)
    assert images.std() > 0


def test_same_seed_same_images_and_progress(pipe):
    calls = []
    a = pipe(batch=1, steps=5, seed=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
    np.testing.assert_array_equal(a, pipe(batch=1, steps=5, seed=3))
    assert not np.array_equal(a, pipe(batch=1, steps=5, seed=4))


@pytest.mark.parametrize("noise", ["numpy", "torch"])
def test_per_image_seed_independent_of_batch(pipe, noise):
    alone = pipe(batch=1, steps=4, seeds=[8], noise=noise)
    in_batch = pipe(batch=3, steps=4, seeds=[1, 8, 2], noise=noise)
    np.testing.assert_array_equal(alone[0], in_batch[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch": 0}, "batch"),
        ({"batch": 2.0}, "batch"),
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"seed": -1}, "seed"),
        ({"batch": 2, "seeds": [1]}, "one seed per image"),
        ({"noise": "cuda"}, "noise"),
    ],
)
def test_bad_arguments_raise_input_error(pipe, kwargs, match):
    with pytest.raises(InputError, match=match):
        pipe(**{"steps": 2, **kwargs})
