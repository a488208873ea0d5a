"""``python -m runtime.steps``: a sampler as data, for sampling loops written in other languages.

For one sampler, step count and eta, every step of the sampling loop becomes a row of float32
coefficients. A native loop (``embed/include/ddpm_loop.hpp``) runs any engine with them:

    m   = engine(x, t)                                   # model output at timestep t
    m   = u + s * (c - u)                                # guided plans (guidance_scale s > 1): the engine ran
                                                         # [x; x] with unconditional rows first, m = [u; c]
    x0  = (x0_x * x - x0_m * m) / x0_div                 # predicted x0 (epsilon: x0_x 1, x0_m sqrt(1-a), x0_div sqrt(a))
    x0  = clamp(x0, -clip_range, clip_range)             # where "clip" is true
    out = (c_x0 * x0 + c_x * x) + c_m * m                # in this order; terms with a zero coefficient are skipped
    out = out + c_d * (c_r * (x0 - prev_x0))             # where c_d != 0 (DPM-Solver++ second order)
    out = out + c_z * z                                  # where "noise": z standard normal
    prev_x0 = x0; x = out

Each operation is one float32 rounding, in the order the numpy runtime rounds, so for epsilon-
prediction models (DDPM, DDIM, DPM-Solver++ 2M) a loop that follows it reproduces the runtime's
trajectory bit for bit given the same model outputs and noise (``tests/runtime/test_steps.py``, and
the C++ loop in ``tests/embed``). For v- and sample-prediction models DDIM's epsilon is folded into
c_x and c_m: exact in real arithmetic, within a few float32 roundings per step in practice.

The first sample is ``init_noise_sigma * z`` (1 for these samplers); the final sample maps to pixels
as ``round(clamp(x / 2 + 0.5, 0, 1) * 255)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import publish
from .cli import ArgumentParser, run, setup_logging
from .errors import DeployError, InputError
from .guidance import Guidance
from .requests import check_guidance_scale
from .manifest import artifact_entry
from .schedulers import SAMPLERS, build_table, default_steps_help, scheduler_name_for
from .schedulers.config import read_config_file
from .schedulers.prediction import x0_coefficients

PROG = "runtime.steps"
FORMAT = "ddpm-deploy.steps/1"
F32 = np.float32
COLUMNS = ("timestep", "x0_x", "x0_m", "x0_div", "clip", "c_x0", "c_x", "c_m", "c_d", "c_r", "noise", "c_z")


def plan(scheduler: str, config: dict[str, Any], steps: int | None = None, eta: float = 0.0,
         guidance_scale: float = 1.0) -> dict[str, Any]:
    """The plan (a JSON-able dict, columns as float lists) of ``scheduler`` for a diffusers scheduler config;
    ``guidance_scale`` > 1: classifier-free guidance (the loop runs each image's unconditional and
    conditional rows and combines them as :meth:`runtime.guidance.Guidance.combine` does without rescale)."""
    guidance = Guidance.of(check_guidance_scale(guidance_scale))
    sampler, table = build_table(scheduler, config, steps, eta)
    cfg = table.config
    k = table.num_steps
    cols: dict[str, np.ndarray] = {name: np.zeros(k, dtype=F32) for name in COLUMNS}
    cols["timestep"] = table.timesteps.astype(np.int64)
    clip = bool(getattr(cfg, "clip_sample", False))
    if sampler.plan_row is None:
        raise InputError(f"the {sampler.name} sampler cannot be written as a plan")
    for i in range(k):
        row = dict(sampler.plan_row(table, i))
        sa, sb = row.pop("sa"), row.pop("sb")
        row["x0_x"], row["x0_m"], row["x0_div"] = x0_coefficients(cfg.prediction_type, sa, sb)
        row["noise"] = table.needs_noise(i)
        row["c_z"] = table.noise_std[i] if row["noise"] else F32(0)
        for name, value in row.items():
            cols[name][i] = value
    return {
        "format": FORMAT,
        "software": f"ddpm-deploy {__version__}",
        "sampler": sampler.name,
        "steps": k,
        "eta": float(eta) if sampler.uses_eta else 0.0,
        "guidance_scale": float(np.float32(guidance.scale)),  # NO_GUIDANCE's scale is 1
        "prediction_type": cfg.prediction_type,
        "clip_range": float(F32(cfg.clip_sample_range)) if clip else None,
        "init_noise_sigma": 1.0,
        "num_train_timesteps": cfg.num_train_timesteps,
        "columns": {
            name: [bool(v) for v in cols[name]] if name in ("clip", "noise")
            else [int(v) for v in cols[name]] if name == "timestep"
            else [float(v) for v in cols[name]]  # a float32 as a double: exact, and exact back
            for name in COLUMNS
        },
    }


def as_arrays(p: dict[str, Any]) -> dict[str, np.ndarray]:
    """A plan's columns as typed arrays (timestep int64, clip/noise bool, the rest float32)."""
    out = {}
    for name, values in p["columns"].items():
        dtype = np.int64 if name == "timestep" else bool if name in ("clip", "noise") else F32
        out[name] = np.asarray(values, dtype=dtype)
    return out


def write(p: dict[str, Any], path: Path) -> None:
    """JSON, or .npz (the columns as arrays plus a ``meta`` JSON string); atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".npz":
        meta = {key: value for key, value in p.items() if key != "columns"}
        with open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **as_arrays(p))
    else:
        head = {key: value for key, value in p.items() if key != "columns"}
        lines = [f" {json.dumps(key)}: {json.dumps(value)}," for key, value in head.items()]
        columns = [f"  {json.dumps(name)}: {json.dumps(values)}" for name, values in p["columns"].items()]
        tmp.write_text("{\n" + "\n".join(lines) + '\n "columns": {\n' + ",\n".join(columns) + "\n }\n}\n")
    publish(tmp, path)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--engine", help="an engine whose manifest holds the scheduler config")
    source.add_argument("--scheduler-config", help="a diffusers scheduler_config.json")
    p.add_argument("--scheduler", choices=sorted(SAMPLERS), default=None, help="default: the config's own")
    p.add_argument("--steps", type=int, default=None, help=f"default: {default_steps_help()}")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM's noise scale (default 0)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance, >= 1 (default 1: none); the loop then runs 2 rows per image")
    p.add_argument("--out", required=True, help="plan.json or plan.npz")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = Path(args.out)
    if out.suffix not in (".json", ".npz"):
        raise InputError(f"--out must end in .json or .npz, got {out.name}")
    if not out.parent.is_dir():
        raise DeployError(f"{out.parent} is not a folder; create it first")
    config = artifact_entry(Path(args.engine))[0].scheduler_config if args.engine else read_config_file(args.scheduler_config)
    result = plan(args.scheduler or scheduler_name_for(config), config, args.steps, args.eta, args.guidance_scale)
    write(result, out)
    print(f"wrote {out}: {result['sampler']}, {result['steps']} steps, {result['prediction_type']} prediction")
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
