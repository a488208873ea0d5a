"""Previews of a running request (the jobs API's event stream): the predicted x0 every k steps."""

import numpy as np
import pytest

from runtime import Pipeline
from runtime.batching import StepBatcher
from runtime.requests import SampleRequest


@pytest.fixture(scope="module")
def pipe(demo_engine):
    with Pipeline.load(demo_engine, device="cpu") as p:
        yield p


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpmpp-2m"])
def test_previews_every_k_steps_and_the_last_is_the_image(pipe, scheduler):
    """At the last step x0 is what DDIM and DPM-Solver++ step to (the final alpha is one: the image itself, bit for
    bit in uint8); DDPM adds no noise at its last step, so its x0 is its image too."""
    seen = {}
    with StepBatcher(pipe, max_batch=4) as batcher:
        holder = {}

        def progress(done, total):
            tr = holder.get("trajectory")
            if tr is not None and tr.preview is not None:
                seen[done], tr.preview = tr.preview, None

        request = SampleRequest(seed=3, steps=10, scheduler=scheduler, count=2)
        future = batcher.submit(request, progress=progress, preview_every=4)
        holder["trajectory"] = future.trajectory
        images = future.result(60)
    np.testing.assert_array_equal(images, pipe.sample(request))  # previews change nothing
    assert set(seen) >= {8, 10} and set(seen) <= {4, 8, 10}, sorted(seen)  # 4 may pass before the holder is set
    assert all(p.shape == images.shape and p.dtype == np.uint8 for p in seen.values())
    np.testing.assert_array_equal(seen[10], images)
    assert not np.array_equal(seen[8], images)  # an estimate two steps early is not the image yet


def test_no_preview_where_the_sample_is_not_variance_preserving(pipe):
    """sde-ve's and consistency models' samples are x0 + sigma * z (init_noise_sigma > 1): no VP formula applies."""
    from types import SimpleNamespace

    from runtime.schedulers.prediction import predicted_x0

    x = np.ones((1, 1, 2, 2), np.float32)
    ve = SimpleNamespace(config=object(), init_noise_sigma=80.0, unit_data=False)
    assert predicted_x0(ve, 0, x, x) is None
