"""runtime.denoiser: the feed built from the engine's declaration, a step's rows, and predictions from one shared call."""

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


def _trajectory(scheduler, steps, guidance=None, labels=None):
    from runtime.guidance import NO_GUIDANCE
    from runtime.noise import NoiseSource
    from runtime.schedulers import build_table
    from runtime.trajectory import Trajectory

    config = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}
    sampler, table = build_table(scheduler, config, steps)
    conditioning = None if labels is None else {"class_labels": np.asarray(labels, np.int64)}
    return Trajectory(sampler, table, NoiseSource.shared("numpy", 0), (1, *SHAPE), conditioning,
                      guidance=guidance or NO_GUIDANCE)


def test_rows_double_guided_images_and_carry_the_tables_timestep():
    from runtime.guidance import Guidance

    denoiser = Denoiser(StandinUNet(class_labels=True).activate())
    tr = _trajectory("ddim", 4, Guidance(3.0), labels=[10, 2])  # null class row first, then the condition
    x, t = denoiser.rows(tr)
    assert x.shape == (2, *SHAPE) and np.array_equal(x[0], x[1]) and np.array_equal(x[0], tr.x[0])
    assert t.tolist() == [float(tr.table.model_timestep(0))] * 2


def test_predict_combines_each_trajectorys_rows_in_one_call():
    from runtime.guidance import Guidance

    runner = StandinUNet(class_labels=True).activate()
    denoiser = Denoiser(runner)
    guided, plain = _trajectory("ddim", 4, Guidance(3.0), labels=[10, 2]), _trajectory("ddpm", 6, labels=[5])
    assert denoiser.groups([guided, plain]) == [[guided, plain]]
    first, second = denoiser.predict([guided, plain])
    assert runner.calls == [3]  # two guided rows and one plain row, one call
    x, t = denoiser.rows(guided)
    rows = denoiser(x, t, {"class_labels": np.array([10, 2])})
    np.testing.assert_array_equal(first, Guidance(3.0).combine(rows))
    x, t = denoiser.rows(plain)
    np.testing.assert_array_equal(second, denoiser(x, t, {"class_labels": np.array([5])}))
