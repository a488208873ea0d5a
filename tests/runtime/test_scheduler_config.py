import json

import pytest

from runtime.errors import SchedulerConfigError
from runtime.schedulers import SchedulerConfig


def test_reads_diffusers_keys_and_ignores_others(tmp_path):
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps({"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.03,
                                "clip_sample": False, "some_future_key": 1}))
    cfg = SchedulerConfig.from_file(path)
    assert cfg.beta_end == 0.03 and cfg.clip_sample is False and cfg.variance_type == "fixed_small"


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"variance_type": "fixed_large_log"}, "variance_type"),
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"beta_schedule": "laplace"}, "beta_schedule"),
        ({"timestep_spacing": "karras"}, "timestep_spacing"),
        ({"thresholding": True}, "thresholding"),
        ({"num_train_timesteps": 0}, "num_train_timesteps"),
        ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
        ({"clip_sample_range": 0}, "clip_sample_range"),
    ],
)
def test_unsupported_values_are_refused_with_the_key(raw, match):
    with pytest.raises(SchedulerConfigError, match=match):
        SchedulerConfig.from_dict(raw)


def test_unreadable_file_says_what_to_do(tmp_path):
    with pytest.raises(SchedulerConfigError, match="does not exist"):
        SchedulerConfig.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(SchedulerConfigError, match="cannot read"):
        SchedulerConfig.from_file(bad)
