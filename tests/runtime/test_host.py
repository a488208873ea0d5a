"""runtime.host: one options schema (JSON, Triton's text parameters, the service config's fields), the limits and
deadlines every surface applies, and the host itself."""

import dataclasses

import numpy as np
import pytest

from runtime import Pipeline
from runtime.errors import InputError
from runtime.host import Host, HostOptions
from runtime.requests import SampleRequest


def test_options_from_json_text_and_another_config():
    assert HostOptions.from_json("") == HostOptions()
    options = HostOptions.from_json('{"max_batch": 4, "timeout_s": 30, "cache_dir": null, "max_count": 2}')
    assert (options.max_batch, options.timeout_s, options.cache_dir, options.max_count) == (4, 30, None, 2)
    assert HostOptions.from_strings({"max_batch": "4", "max_queue": "7", "timeout_s": "2.5", "device": "cpu",
                                     "threads": ""}) == HostOptions(device="cpu", max_batch=4, max_queue=7, timeout_s=2.5)
    assert HostOptions.from_mapping({"max_steps": 50}).max_steps == 50


@pytest.mark.parametrize("make, message", [
    (lambda: HostOptions.from_json('{"max_batch": 0}'), "max_batch must be at least 1"),
    (lambda: HostOptions.from_json('{"max_queue": -1}'), "max_queue must be >= 0"),
    (lambda: HostOptions.from_json('{"timeout_s": 0}'), "timeout_s must be > 0"),
    (lambda: HostOptions.from_json('{"max_batch": "4"}'), "wrong type"),
    (lambda: HostOptions.from_json('{"batch": 4}'), "unknown field"),
    (lambda: HostOptions.from_strings({"max_batch": "four"}), "not a number"),
    (lambda: HostOptions.from_mapping({"max_count": True}), "wrong type"),
])
def test_bad_options_are_one_line(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_admit_applies_limits_and_the_default_deadline():
    options = HostOptions(timeout_s=30, max_count=2, max_steps=50)
    assert options.admit(SampleRequest()).timeout_s == 30
    assert options.admit(SampleRequest(timeout_s=5)).timeout_s == 5
    for request, message in ((SampleRequest(count=3), "count must be at most 2"),
                             (SampleRequest(steps=51), "steps must be at most 50"),
                             (SampleRequest(timeout_s=31), "timeout_s must be in")):
        with pytest.raises(InputError, match=message):
            options.admit(request)
    assert HostOptions().admit(SampleRequest(count=9, timeout_s=1e6)).timeout_s == 1e6  # no limits set


def test_a_host_samples_as_the_pipeline_does(tiny_engine):
    request = SampleRequest(steps=3, scheduler="ddim", seed=2, count=2)
    with Host(tiny_engine, HostOptions(device="cpu", max_batch=4, timeout_s=60)) as host:
        images = host.submit(request).result(timeout=60)
        assert host.image_shape == images.shape[1:]
        stats = host.stats()
        assert stats["completed"] == 1 and stats["rows"] == 6 and stats["in_flight"] == 0
    with Pipeline.load(tiny_engine, device="cpu") as pipe:
        np.testing.assert_array_equal(images, pipe.sample(dataclasses.replace(request, timeout_s=60)))
