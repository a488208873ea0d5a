"""Tuned timestep schedules (runtime.schedulers.tuned): a request's ``tuned_timesteps`` samples exactly as the same
timesteps given outright, on every surface, and is refused in one line where nothing was tuned."""

import numpy as np
import pytest

from runtime import Pipeline
from runtime.errors import InputError
from runtime.requests import SampleRequest
from runtime.schedulers.tuned import TUNED, tuned_timesteps


@pytest.fixture(scope="module")
def pipe(demo_engine):
    with Pipeline.load(demo_engine, device="cpu", cache_dir=None) as p:
        yield p


@pytest.mark.parametrize("sampler,steps", list(TUNED))
def test_tuned_equals_the_same_timesteps_given_outright(pipe, sampler, steps):
    tuned = pipe.generate(scheduler=sampler, steps=steps, tuned_timesteps=True, count=2, seed=4)
    given = pipe.generate(scheduler=sampler, timesteps=list(TUNED[(sampler, steps)]), count=2, seed=4)
    np.testing.assert_array_equal(tuned.images, given.images)
    assert tuned.png_metadata(0)["timesteps"] == ",".join(map(str, TUNED[(sampler, steps)]))
    assert "timesteps" not in pipe.generate(scheduler=sampler, steps=steps, seed=4).png_metadata(0)


def test_refusals(pipe):
    with pytest.raises(InputError, match=r"no tuned timesteps for dpmpp-2m at 25 steps; tuned: dpmpp-3m 5, dpmpp-3m 6"):
        pipe.generate(scheduler="dpmpp-2m", steps=25, tuned_timesteps=True)
    with pytest.raises(InputError, match="no tuned timesteps for ddim at 5 steps"):
        pipe.generate(scheduler="ddim", steps=5, tuned_timesteps=True)
    with pytest.raises(InputError, match="tuned_timesteps takes steps"):
        SampleRequest(tuned_timesteps=True, timesteps=[999, 500])
    with pytest.raises(InputError, match="tuned_timesteps takes steps"):
        SampleRequest(tuned_timesteps=True)
    with pytest.raises(InputError, match="index a 1000-step training schedule; this model's has 2000"):
        tuned_timesteps("dpmpp-3m", 5, 2000)


def test_every_surface_takes_it():
    request, _ = SampleRequest.from_json('{"scheduler": "dpmpp-3m", "steps": 5, "tuned_timesteps": true}')
    assert request.tuned_timesteps and "--tuned-timesteps" in request.cli_args()
    assert "tuned_timesteps" in {name for name, _, _ in SampleRequest.triton_inputs()}
    assert SampleRequest.json_schema()["properties"]["tuned_timesteps"]["type"] == "boolean"
