"""runtime.denoiser: the feed built from the engine's declaration; conditioning checked per request."""

import numpy as np
import pytest

from runtime.denoiser import Denoiser
from runtime.errors import InputError
from tests.runtime.standin_unet import SHAPE, StandinUNet


def test_unconditional_engine_takes_no_conditioning():
    denoiser = Denoiser(StandinUNet().activate())
    assert denoiser.conditioning_names == ()
    assert denoiser.check_conditioning(None, 2) == {}
    with pytest.raises(InputError, match="takes conditioning inputs: none; got class_labels"):
        denoiser.check_conditioning({"class_labels": [1, 2]}, 2)


def test_conditioning_is_checked_against_the_declaration_and_fed():
    runner = StandinUNet(class_labels=True).activate()
    denoiser = Denoiser(runner)
    assert denoiser.conditioning_names == ("class_labels",)
    with pytest.raises(InputError, match="takes conditioning inputs: class_labels; got none"):
        denoiser.check_conditioning(None, 2)
    with pytest.raises(InputError, match=r"must have shape \(2,\)"):
        denoiser.check_conditioning({"class_labels": [1, 2, 3]}, 2)
    cond = denoiser.check_conditioning({"class_labels": [1, 2]}, 2)
    assert cond["class_labels"].dtype == np.int64  # converted to the declared dtype
    x = np.ones((2, *SHAPE), np.float32)
    eps = denoiser(x, np.zeros(2, np.float32), cond)
    np.testing.assert_allclose(eps[:, 0, 0, 0], [0.51, 0.52], rtol=1e-6)
