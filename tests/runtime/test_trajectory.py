"""runtime.trajectory: a request's state, and advance() sharing one engine call among requests."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from runtime.denoiser import Denoiser
from runtime.errors import EngineError
from runtime.noise import NoiseSource
from runtime.schedulers import build_table
from runtime.trajectory import Trajectory, advance
from tests.runtime.standin_unet import SHAPE, StandinUNet

CONFIG = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}


def trajectory(scheduler, steps, seed, rows=1, eta=0.0, progress=None):
    sampler, table = build_table(scheduler, CONFIG, steps, eta)
    return Trajectory(sampler, table, NoiseSource.shared("numpy", seed), (rows, *SHAPE), None, progress)


def run_alone(tr, denoiser):
    while not tr.done:
        assert advance(denoiser, [tr]) == []
    return tr.x


def test_noise_is_drawn_on_first_use_only():
    tr = trajectory("ddpm", 3, seed=1)
    assert tr._x is None  # a queued request holds no sample
    np.testing.assert_array_equal(tr.x, NoiseSource.shared("numpy", 1).draw((1, *SHAPE)))


@pytest.mark.parametrize("with_pool", [False, True], ids=["inline-noise", "pooled-noise"])
def test_shared_calls_give_each_request_its_own_result(with_pool):
    requests = [("ddpm", 6, 1, 1, 0.0), ("ddim", 4, 2, 2, 0.7), ("dpmpp-2m", 5, 3, 1, 0.0)]
    runner = StandinUNet().activate()
    denoiser = Denoiser(runner)
    alone = [run_alone(trajectory(*r), denoiser) for r in requests]
    runner.calls.clear()
    together = [trajectory(*r) for r in requests]
    with ThreadPoolExecutor(1) as pool:
        while not all(t.done for t in together):
            assert advance(denoiser, [t for t in together if not t.done], pool if with_pool else None) == []
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a, t.x)
    assert runner.calls[0] == 4 and len(runner.calls) == 6  # rows of all three per call, the longest sets the count


def test_progress_reports_each_step():
    seen = []
    run_alone(trajectory("ddim", 3, seed=0, progress=lambda done, total: seen.append((done, total))), Denoiser(StandinUNet().activate()))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_nonfinite_rows_fail_their_request_alone():
    sick, healthy = trajectory("ddim", 4, seed=1), trajectory("ddim", 10, seed=2)
    nan_at = float(sick.table.timesteps[0])
    assert nan_at not in healthy.table.timesteps
    failed = advance(Denoiser(StandinUNet(nan_at=nan_at).activate()), [sick, healthy])
    assert [t for t, _ in failed] == [sick] and isinstance(failed[0][1], EngineError)
    assert "NaN or Inf at step 1/4" in str(failed[0][1])
    assert healthy.step_index == 1 and sick.step_index == 0


def test_a_failing_progress_callback_fails_its_request_only():
    def boom(done, total):
        raise RuntimeError("callback")

    bad, good = trajectory("ddpm", 2, seed=1, progress=boom), trajectory("ddpm", 2, seed=2)
    failed = advance(Denoiser(StandinUNet().activate()), [bad, good])
    assert [t for t, _ in failed] == [bad] and good.step_index == 1


def test_conditions_of_different_lengths_take_one_call_per_length():
    """On an engine with a dynamic sequence axis, rows of different token counts cannot be concatenated."""
    from runtime.io_spec import SequenceRange
    runner = StandinUNet(sequence=SequenceRange(2, 3, 4)).activate()
    denoiser = Denoiser(runner)

    def conditioned(tokens, seed):
        tr = trajectory("ddim", 3, seed)
        tr.conditioning = {"encoder_hidden_states": np.full((1, tokens, 3), tokens / 10, np.float32)}
        return tr

    alone = [run_alone(conditioned(n, s), denoiser) for n, s in ((2, 1), (4, 2), (2, 3))]
    together = [conditioned(n, s) for n, s in ((2, 1), (4, 2), (2, 3))]
    assert [len(g) for g in denoiser.groups(together)] == [2, 1]
    runner.calls.clear()
    while not all(t.done for t in together):
        assert advance(denoiser, together) == []
    assert runner.calls == [2, 1] * 3
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a, t.x)
