"""embed/include/ddpm_loop.hpp: the C++ loop replays the runtime's recorded model outputs and noise through
a plan written by `python -m runtime.steps` and gives the runtime's trajectory bit for bit (built with
-march=native and -ffp-contract=off: FMA units present, no fused operations)."""

import subprocess

import numpy as np
import pytest

from runtime.steps import plan, write
from tests.runtime.test_steps import CASES, EXACT_OTHER, record

pytestmark = pytest.mark.build


@pytest.mark.parametrize("case", CASES + EXACT_OTHER, ids=lambda c: c[0])
def test_cpp_loop_reproduces_the_runtime_bit_for_bit(case, embed_build, demo_engine, monkeypatch, tmp_path):
    _, scheduler, steps, eta, overrides = case
    config, recorded, final = record(demo_engine, scheduler, steps, eta, overrides, monkeypatch)
    write(plan(scheduler, config, steps, eta), tmp_path / "plan.json")
    x0 = recorded[0][0]
    zeros = np.zeros_like(x0)
    x0.tofile(tmp_path / "x.bin")
    np.concatenate([m.ravel() for _, m, _ in recorded]).tofile(tmp_path / "m.bin")
    np.concatenate([(zeros if z is None else z).ravel() for _, _, z in recorded]).tofile(tmp_path / "z.bin")
    r = subprocess.run([str(embed_build / "loop_replay"), tmp_path / "plan.json", str(x0.size), tmp_path / "x.bin",
                        tmp_path / "m.bin", tmp_path / "z.bin", tmp_path / "out.bin"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    trace = np.fromfile(tmp_path / "out.bin", dtype=np.float32).reshape(len(recorded), *x0.shape)
    expected = [x for x, _, _ in recorded[1:]] + [final]
    for i, (got, want) in enumerate(zip(trace, expected)):
        np.testing.assert_array_equal(got, want, err_msg=f"after step {i}")


def test_a_foreign_file_is_refused(embed_build, tmp_path):
    (tmp_path / "plan.json").write_text('{"format": "something else"}')
    r = subprocess.run([str(embed_build / "loop_replay"), tmp_path / "plan.json", "4", *(tmp_path / n for n in ("x", "m", "z", "o"))],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not a ddpm-deploy.steps/1 plan" in r.stderr
