"""runtime.steps: the sampler as data. A loop that follows the plan (in numpy here, in C++ in
tests/embed/test_loop.py) reproduces the runtime's own trajectory from its recorded model outputs and noise:
bit for bit for epsilon prediction, within a derived bound where DDIM's epsilon is folded into coefficients."""

import json
import subprocess
import sys

import numpy as np
import pytest

from runtime import Pipeline
from runtime.errors import InputError
from runtime.guidance import Guidance
from runtime.steps import COLUMNS, FORMAT, as_arrays, plan
from runtime.trajectory import Trajectory
from tests.conftest import ROOT

F32 = np.float32
U = float(np.finfo(F32).eps) / 2  # unit roundoff of float32

CASES = [  # (id, scheduler, steps, eta, scheduler config overrides)
    ("ddpm-12", "ddpm", 12, 0.0, {}),
    ("ddpm-7-fixed_large-noclip", "ddpm", 7, 0.0, {"variance_type": "fixed_large", "clip_sample": False}),
    ("ddim-10", "ddim", 10, 0.0, {}),
    ("ddim-9-eta0.7", "ddim", 9, 0.7, {}),
    ("ddim-6-eta1-trailing-noclip", "ddim", 6, 1.0, {"timestep_spacing": "trailing", "clip_sample": False}),
    ("dpmpp-2m-10", "dpmpp-2m", 10, 0.0, {}),
    ("dpmpp-2m-3", "dpmpp-2m", 3, 0.0, {}),
    ("dpmpp-2m-12-karras-sigma_min", "dpmpp-2m", 12, 0.0, {"use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}),
    ("dpmpp-2m-16-trailing-sigma_min", "dpmpp-2m", 16, 0.0, {"timestep_spacing": "trailing", "final_sigmas_type": "sigma_min"}),
]
FOLDED = [  # DDIM's epsilon folded into c_x and c_m: not the runtime's order of roundings
    ("ddim-8-v", "ddim", 8, 0.0, {"prediction_type": "v_prediction"}),
    ("ddim-8-sample-eta0.5", "ddim", 8, 0.5, {"prediction_type": "sample"}),
]
EXACT_OTHER = [  # other prediction types where no coefficient is folded
    ("ddpm-8-v", "ddpm", 8, 0.0, {"prediction_type": "v_prediction"}),
    ("ddpm-8-sample", "ddpm", 8, 0.0, {"prediction_type": "sample"}),
    ("dpmpp-2m-8-v", "dpmpp-2m", 8, 0.0, {"prediction_type": "v_prediction"}),
]


def record(engine, scheduler, steps, eta, overrides, monkeypatch, **fields):
    """The runtime's trajectory on ``engine``: per step (x, model output, noise), and the final x. ``fields``:
    request fields besides the default two images, seed 11, torch noise (a guided request records 2n rows)."""
    recorded, rows = [], []
    apply, combine = Trajectory.apply, Guidance.combine

    def engine_rows(self, output):  # the denoiser hands each trajectory's rows of the engine output to its guidance
        rows.append(output.copy())
        return combine(self, output)

    def recording(self, prediction, noise):
        recorded.append((self.x.copy(), rows.pop(), None if noise is None else noise.copy()))
        apply(self, prediction, noise)

    monkeypatch.setattr(Guidance, "combine", engine_rows)
    monkeypatch.setattr(Trajectory, "apply", recording)
    with Pipeline.load(engine, device="cpu") as pipe:
        config = {**pipe.scheduler_config, **overrides}
        pipe.scheduler_config = config
        final = pipe.denoise(**{"count": 2, "seed": 11, "noise": "torch", **fields}, steps=steps, scheduler=scheduler, eta=eta)
    monkeypatch.undo()
    return config, recorded, final


def plan_step(cols, i, clip_range, x, m, z, prev_x0):
    """runtime/steps.py's formula, one float32 rounding per operation (as ddpm_loop.hpp does)."""
    c = {name: cols[name][i] for name in COLUMNS}
    x0 = (c["x0_x"] * x - c["x0_m"] * m) / c["x0_div"]
    if c["clip"]:
        x0 = np.minimum(np.maximum(x0, -clip_range), clip_range)
    out = c["c_x0"] * x0
    if c["c_x"] != 0:
        out = out + c["c_x"] * x
    if c["c_m"] != 0:
        out = out + c["c_m"] * m
    if c["c_d"] != 0:
        out = out + c["c_d"] * (c["c_r"] * (x0 - prev_x0))
    if c["noise"]:
        out = out + c["c_z"] * z
    return out, x0


@pytest.mark.parametrize("case", CASES + EXACT_OTHER, ids=lambda c: c[0])
def test_plan_reproduces_the_runtime_bit_for_bit(case, demo_engine, monkeypatch):
    _, scheduler, steps, eta, overrides = case
    config, recorded, final = record(demo_engine, scheduler, steps, eta, overrides, monkeypatch)
    p = plan(scheduler, config, steps, eta)
    cols, clip_range = as_arrays(p), F32(p["clip_range"] or 0)
    assert p["steps"] == len(recorded) and p["format"] == FORMAT
    x, prev_x0 = recorded[0][0], None
    for i, (x_runtime, m, z) in enumerate(recorded):
        np.testing.assert_array_equal(x, x_runtime, err_msg=f"before step {i}")
        assert cols["noise"][i] == (z is not None)
        x, prev_x0 = plan_step(cols, i, clip_range, x, m, z, prev_x0)
    np.testing.assert_array_equal(x, final)


@pytest.mark.parametrize("case", FOLDED, ids=lambda c: c[0])
def test_folded_coefficients_within_their_rounding_bound(case, demo_engine, monkeypatch):
    """One step at a time from the runtime's own x: the runtime computes eps then d * eps; the plan computes
    (d / sb) * x and (d * sa / sb) * m. Each side rounds at most 6 times along any term, so the two differ
    by at most 12 U of the sum of the terms' magnitudes (first order)."""
    _, scheduler, steps, eta, overrides = case
    config, recorded, final = record(demo_engine, scheduler, steps, eta, overrides, monkeypatch)
    p = plan(scheduler, config, steps, eta)
    cols, clip_range = as_arrays(p), F32(p["clip_range"] or 0)
    worst = 0.0
    for i, (x, m, z) in enumerate(recorded):
        got, _ = plan_step(cols, i, clip_range, x, m, z, None)
        expected = recorded[i + 1][0] if i + 1 < len(recorded) else final
        x0 = (cols["x0_x"][i] * x - cols["x0_m"][i] * m) / cols["x0_div"][i]
        magnitude = (np.abs(cols["c_x0"][i] * x0) + np.abs(cols["c_x"][i] * x) + np.abs(cols["c_m"][i] * m)
                     + (np.abs(cols["c_z"][i] * z) if z is not None else 0)).astype(np.float64)
        bound = 12 * U * magnitude + np.finfo(F32).tiny
        ratio = np.abs(got.astype(np.float64) - expected) / bound
        worst = max(worst, float(ratio.max()))
    print(f"\n{case[0]}: worst |plan - runtime| / bound = {worst:.3f}")
    assert worst <= 1.0


def test_plan_columns_are_the_tables(demo_engine):
    """Spot checks against the tables themselves (the tests above check the whole arithmetic)."""
    from runtime.schedulers import build_table

    with Pipeline.load(demo_engine, device="cpu") as pipe:
        config = pipe.scheduler_config
    _, ddim = build_table("ddim", config, 10, 0.0)
    p = as_arrays(plan("ddim", config, 10))
    np.testing.assert_array_equal(p["timestep"], ddim.timesteps)
    np.testing.assert_array_equal(p["x0_div"], ddim.sqrt_alpha_prod)
    np.testing.assert_array_equal(p["c_m"], ddim.direction_coeff)
    assert not p["noise"].any() and (p["c_d"] == 0).all()
    _, dpm = build_table("dpmpp-2m", config, 10, 0.0)
    p = as_arrays(plan("dpmpp-2m", config, 10))
    assert (p["c_d"] != 0).tolist() == (dpm.order == 2).tolist()


def steps_cli(*args):
    return subprocess.run([sys.executable, "-m", "runtime.steps", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_writes_json_and_npz_with_the_same_plan(demo_engine, tmp_path):
    for name in ("plan.json", "plan.npz"):
        r = steps_cli("--engine", demo_engine, "--scheduler", "dpmpp-2m", "--steps", 12, "--out", tmp_path / name)
        assert r.returncode == 0, r.stderr
    from_json = as_arrays(json.loads((tmp_path / "plan.json").read_text()))
    npz = np.load(tmp_path / "plan.npz")
    meta = json.loads(str(npz["meta"]))
    assert meta["sampler"] == "dpmpp-2m" and meta["steps"] == 12 and "columns" not in meta
    for name in COLUMNS:
        np.testing.assert_array_equal(npz[name], from_json[name], err_msg=name)
        assert npz[name].dtype == from_json[name].dtype


@pytest.mark.parametrize("args, fragment", [
    (("--out", "{tmp}/plan.txt"), "must end in .json or .npz"),
    (("--out", "{tmp}/no/such/plan.json"), "is not a folder"),
    (("--out", "{tmp}/plan.json", "--scheduler", "ddim", "--steps", "0"), "steps must be"),
    (("--out", "{tmp}/plan.json", "--scheduler", "euler"), "invalid choice"),
])
def test_cli_errors_are_one_line(args, fragment, demo_engine, tmp_path):
    r = steps_cli("--engine", demo_engine, *(a.format(tmp=tmp_path) for a in args))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("scheduler,config", [("pndm", {}), ("cm", {"_class_name": "CMStochasticIterativeScheduler"}),
                                              ("sde-ve", {"_class_name": "ScoreSdeVeScheduler"}),
                                              ("ddpm", {"variance_type": "learned_range"}), ("dpmpp-3m", {}),
                                              ("unipc-2m", {}), ("unipc-3m", {})])
def test_samplers_a_plan_cannot_express_are_refused_in_one_line(scheduler, config):
    """PNDM's multistep combinations, score-SDE's norms, consistency models' input scaling, a per-pixel
    learned variance, and the multistep solvers that carry more than one previous data prediction (DPM-Solver++
    3M) or a corrected sample (UniPC) are not the plan's linear form: refused, and the native loop never sees them."""
    with pytest.raises(InputError) as info:
        plan(scheduler, config, 10)
    assert "plan" in str(info.value) and "\n" not in str(info.value)
