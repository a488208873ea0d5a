"""diffusers' own scheduler test fixtures (``tests/schedulers/test_schedulers.py``, ``SchedulerCommonTest``),
rebuilt in numpy, to reproduce the golden values of its full-loop tests with this runtime's samplers."""

import numpy as np

from runtime.schedulers import build_table, scheduler_name_for

# SchedulerCommonTest.dummy_sample_deter: arange(4 * 3 * 8 * 8) / 768 laid out (3, 8, 8, 4), batch first
N = 4 * 3 * 8 * 8


def dummy_sample_deter() -> np.ndarray:
    sample = (np.arange(N, dtype=np.float32) / np.float32(N)).reshape(3, 8, 8, 4)
    return np.ascontiguousarray(sample.transpose(3, 0, 1, 2))


def dummy_model(sample: np.ndarray, t) -> np.ndarray:
    """SchedulerCommonTest.dummy_model: sample * t / (t + 1), in float32."""
    return sample * np.float32(t) / np.float32(t + 1)


def full_loop(scheduler: str, config: dict, steps: int = 10) -> np.ndarray:
    """The suite's ``full_loop``: ``steps`` steps of the dummy model from the deterministic sample."""
    sampler, table = build_table(scheduler, config, steps)
    sample, state = dummy_sample_deter(), None
    for i, t in enumerate(table.timesteps):
        sample, state = sampler.step(table, i, dummy_model(sample, t), sample, None, state)
    return sample


def full_loop_mean(config: dict) -> float:
    """The suite's golden figure: mean |sample| after ``full_loop`` with the sampler the config names."""
    return float(np.mean(np.abs(full_loop(scheduler_name_for(config), config))))
