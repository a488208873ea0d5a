"""``python -m bench.export_memory --mode quick|full``: peak memory and wall time of each `make engine` step.

Each step runs as `make engine` runs it (a fresh ``python -m export.…`` process), on a random-weight
model: quick = the reference block layout with channels / 4 at 128x128, full = the google/ddpm-cat-256
config. Peak memory is the largest sum of resident memory over the step's whole process tree (its child
processes included), sampled every 10 ms, and never less than the kernel's high-water mark of any one
process. Writes ``docs/bench-export-MODE.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from . import machine
from .memory import run_measured
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
MODES = {"quick": {"block_out_channels": (32, 32, 64, 64, 128, 128), "sample_size": 128}, "full": {}}
MISSING_BACKEND = 4


def steps(model: Path, engines: Path) -> list[tuple[str, list[str]]]:
    return [
        ("FP32 ONNX export + parity gate (`export.onnx`)", ["export.onnx", "--model", str(model), "--out", str(engines)]),
        ("FP16 conversion + accuracy gate (`export.fp16`)", ["export.fp16", "--engines", str(engines)]),
        ("TensorRT plan, host side (`export.trt`)", ["export.trt", "--engines", str(engines)]),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.export_memory", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.export_memory", {"torch": "export", "diffusers": "export", "onnx": "export"})
    from export.reference import REFERENCE_CONFIG, save_model

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    rows = []
    try:
        model = save_model(work / "model", {**REFERENCE_CONFIG, **MODES[args.mode]})
        for label, cmd in steps(model, work / "engines"):
            run = run_measured([sys.executable, "-m", *cmd], cwd=ROOT)
            if run.returncode == MISSING_BACKEND:
                rows.append(f"| {label} | not run here: {run.stderr.strip().splitlines()[-1]} | — |")
                continue
            if run.returncode != 0:
                raise SystemExit(f"{cmd[0]} failed: {run.stderr.strip()[-500:]}")
            rows.append(f"| {label} | {run.peak_rss / 1e9:.2f} GB | {run.seconds:.1f} s |")
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-export-{args.mode}.md"
    config = "google/ddpm-cat-256 config (113.7M parameters, 256x256)" if args.mode == "full" else \
        f"reference blocks, channels {MODES['quick']['block_out_channels']}, {MODES['quick']['sample_size']}x{MODES['quick']['sample_size']}"
    path.write_text("\n".join([
        f"# `make engine`: peak memory and time per step ({args.mode})",
        "",
        f"Machine: {machine.describe()}.",
        f"Model: random weights, {config}. One run per step, as `make engine` runs it.",
        "Peak RSS: the largest sum of resident memory over the step's process tree (sampled every 10 ms; at "
        "least the kernel's high-water mark of its largest process).",
        "",
        "| step | peak RSS | wall time |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.export_memory"))
