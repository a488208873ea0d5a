"""``python -m bench.openvino_cache --mode quick|full``: does OpenVINO's compiled-model cache pay?

Cold start (a new process until ``Pipeline.load`` returns) of the OpenVINO engine written by
``python -m export.bf16``, in BF16 where this CPU has BF16 units and in FP32 elsewhere, three ways:
without a cache; with the compiled-model cache (``DDPM_DEPLOY_OPENVINO_CACHE=1``) warm; and,
for comparison, ONNX Runtime FP32 with its optimized-graph cache warm and without it. Median of
``--repeats`` runs after one that fills the caches. Writes ``docs/bench-openvino-cache-MODE.md``; the
default of ``CACHE_COMPILED`` follows from it (README, "Engine cache").
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.cli import require, run

from . import machine

ROOT = Path(__file__).resolve().parents[1]
PROG = "bench.openvino_cache"


def cold_start(engine: Path, cache_dir: str | None, cache_compiled: bool = False) -> float:
    """Seconds from a new process to a loaded pipeline (``cache_compiled``: OpenVINO's compiled-model cache on)."""
    code = f"from runtime import Pipeline; Pipeline.load({str(engine)!r}, cache_dir={cache_dir!r})"
    env = {**os.environ, "DDPM_DEPLOY_OPENVINO_CACHE": "1" if cache_compiled else "0"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require(PROG, {"torch": "export", "diffusers": "export", "onnx": "export", "openvino": "openvino"})
    from bench.__main__ import prepare
    from export.artifacts import OV_NAME
    from export.bf16 import main as bf16_main
    from runtime.manifest import read_manifest

    _, engine = prepare(args.mode)
    folder = engine.parent
    bf16_units = bool({"avx512_bf16", "amx_bf16"} & machine.cpu_flags())
    precision = "bf16" if bf16_units else "fp32"
    ov = folder / OV_NAME
    if not ov.exists() or read_manifest(folder / "manifest.json").artifact(OV_NAME).precision != precision:
        assert bf16_main(["--engines", str(folder), "--precision", precision]) == 0

    def median(engine: Path, cache: str, cache_compiled: bool = False) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cache_dir = None if cache == "off" else tmp
            cold_start(engine, cache_dir, cache_compiled)  # fills the cache (and the page cache)
            times = [cold_start(engine, cache_dir, cache_compiled) for _ in range(args.repeats)]
        return statistics.median(times)

    rows = [
        (f"OpenVINO {precision.upper()}, no cache (default)", median(ov, "off")),
        (f"OpenVINO {precision.upper()}, compiled-model cache warm", median(ov, "on", cache_compiled=True)),
        ("ONNX Runtime FP32, no cache", median(engine, "off")),
        ("ONNX Runtime FP32, optimized-graph cache warm (default)", median(engine, "on")),
    ]
    lines = [
        f"# OpenVINO compiled-model cache: cold start ({args.mode})",
        "",
        f"Machine: {machine.describe()}; BF16 units: {'yes' if bf16_units else 'no'} (so OpenVINO runs {precision.upper()}).",
        f"New process → `Pipeline.load` returned, median of {args.repeats} after one run that fills the cache.",
        "",
        "| engine | cold start s |",
        "|---|---|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in rows),
    ]
    out = Path(args.out) / f"bench-openvino-cache-{args.mode}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
