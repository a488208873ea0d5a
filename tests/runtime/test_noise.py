import numpy as np
import pytest
import torch

from runtime.errors import InputError
from runtime.noise import NoiseSource
from runtime.torch_rng import TorchCompatibleGenerator

# Bit-exact: runtime.torch_rng evaluates torch's vectorised Cephes log/sincos with its FMAs.
# (torch's scalar fallback for CPUs without AVX2 uses libm instead and would differ by ulps.)

SHAPES = [(1,), (5,), (15,), (16,), (17,), (210,), (1, 3, 8, 8), (2, 3, 17, 13), (1, 3, 256, 256)]


@pytest.mark.parametrize("seed", [0, 1, 42, 123456789, 2**32 + 7])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_randn_matches_torch(seed, shape):
    ours = TorchCompatibleGenerator(seed).randn(shape)
    ref = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).numpy()
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("seed", [0, 7])
def test_stream_continues_across_draws(seed):
    """Mixed sizes: the float path, the tail redraw and the cached double normal all advance the stream."""
    draws = [(3,), (210,), (1,), (4, 4), (7,), (1, 3, 8, 8), (5,), (33,)]
    g = torch.Generator().manual_seed(seed)
    ours = TorchCompatibleGenerator(seed)
    for shape in draws:
        np.testing.assert_array_equal(ours.randn(shape), torch.randn(shape, generator=g).numpy())


def test_per_image_seeds_match_a_list_of_generators():
    from diffusers.utils.torch_utils import randn_tensor

    seeds = [11, 3, 5]
    shape = (3, 3, 8, 8)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    src = NoiseSource.per_image_seeds("torch", seeds)
    for _ in range(3):  # the initial latents, then two steps' noise
        np.testing.assert_array_equal(src.draw(shape), randn_tensor(shape, generator=gens).numpy())


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_image_noise_does_not_depend_on_batch(kind):
    alone = NoiseSource.per_image_seeds(kind, [9]).draw((1, 3, 4, 4))
    in_batch = NoiseSource.per_image_seeds(kind, [1, 9, 2]).draw((3, 3, 4, 4))
    np.testing.assert_array_equal(alone[0], in_batch[1])


def test_numpy_noise_is_deterministic_and_seed_dependent():
    a = NoiseSource.shared("numpy", 5).draw((2, 3, 4, 4))
    np.testing.assert_array_equal(a, NoiseSource.shared("numpy", 5).draw((2, 3, 4, 4)))
    assert not np.array_equal(a, NoiseSource.shared("numpy", 6).draw((2, 3, 4, 4)))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "3", True])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(InputError, match="seed"):
        NoiseSource.shared("numpy", seed)


def test_unknown_noise_kind_is_refused():
    with pytest.raises(InputError, match="numpy, torch"):
        NoiseSource.shared("jax", 0)
