"""embed/include/ddpm_loop.hpp: the C++ loop replays the runtime's recorded model outputs and noise through
a plan written by `python -m runtime.steps` and gives the runtime's trajectory bit for bit (built with
-march=native and -ffp-contract=off: FMA units present, no fused operations)."""

import subprocess

import numpy as np
import pytest

from runtime.steps import plan, write
from tests.runtime.test_steps import CASES, EXACT_OTHER, record

pytestmark = pytest.mark.build


def replay(embed_build, plan_file, recorded, final, tmp_path):
    """Feeds the recorded model outputs and noise through loop_replay; asserts x after every step is the runtime's."""
    x0 = recorded[0][0]
    zeros = np.zeros_like(x0)
    x0.tofile(tmp_path / "x.bin")
    np.concatenate([m.ravel() for _, m, _ in recorded]).tofile(tmp_path / "m.bin")
    np.concatenate([(zeros if z is None else z).ravel() for _, _, z in recorded]).tofile(tmp_path / "z.bin")
    r = subprocess.run([str(embed_build / "loop_replay"), plan_file, str(x0.size), tmp_path / "x.bin",
                        tmp_path / "m.bin", tmp_path / "z.bin", tmp_path / "out.bin"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    trace = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(len(recorded), *x0.shape)
    expected = [x for x, _, _ in recorded[1:]] + [final]
    for i, (got, want) in enumerate(zip(trace, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"after step {i}")


@pytest.mark.parametrize("case", CASES + EXACT_OTHER, ids=lambda c: c[0])
def test_cpp_loop_reproduces_the_runtime_bit_for_bit(case, embed_build, demo_engine, monkeypatch, tmp_path):
    _, scheduler, steps, eta, overrides = case
    config, recorded, final = record(demo_engine, scheduler, steps, eta, overrides, monkeypatch)
    write(plan(scheduler, config, steps, eta), tmp_path / "plan.json")
    replay(embed_build, tmp_path / "plan.json", recorded, final, tmp_path)


@pytest.mark.parametrize("scheduler,steps", [("ddim", 6), ("dpmpp-2m", 6), ("ddpm", 8)])
def test_cpp_loop_reproduces_a_guided_trajectory_bit_for_bit(scheduler, steps, embed_build, xattn_engine, monkeypatch, tmp_path):
    """A guided plan: the loop doubles the sample, the recorded 2n outputs are combined as the runtime does."""
    config, recorded, final = record(xattn_engine, scheduler, steps, 0.0, {}, monkeypatch, class_labels=[0, 2],
                                     guidance_scale=3.5, seed=2)
    assert recorded[0][1].shape[0] == 4  # two rows per image
    write(plan(scheduler, config, steps, guidance_scale=3.5), tmp_path / "plan.json")
    replay(embed_build, tmp_path / "plan.json", recorded, final, tmp_path)


def test_a_foreign_file_is_refused(embed_build, tmp_path):
    (tmp_path / "plan.json").write_text('{"format": "something else"}')
    r = subprocess.run([str(embed_build / "loop_replay"), tmp_path / "plan.json", "4", *(tmp_path / n for n in ("x", "m", "z", "o"))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a ddpm-deploy.steps/1 plan" in r.stderr

