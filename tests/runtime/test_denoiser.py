"""runtime.denoiser: the feed built from the engine's declaration."""

import numpy as np

from runtime.denoiser import Denoiser
from tests.runtime.standin_unet import SHAPE, StandinUNet


def test_unconditional_engine_takes_no_conditioning():
    denoiser = Denoiser(StandinUNet().activate())
    assert denoiser.conditioning_names == ()
    x = np.ones((2, *SHAPE), np.float32)
    np.testing.assert_allclose(denoiser(x, np.zeros(2, np.float32))[:, 0, 0, 0], [0.5, 0.5])


def test_conditioning_inputs_are_fed_by_name():
    denoiser = Denoiser(StandinUNet(class_labels=True).activate())
    assert denoiser.conditioning_names == ("class_labels",)
    x = np.ones((2, *SHAPE), np.float32)
    eps = denoiser(x, np.zeros(2, np.float32), {"class_labels": np.array([1, 2])})
    np.testing.assert_allclose(eps[:, 0, 0, 0], [0.51, 0.52], rtol=1e-6)
