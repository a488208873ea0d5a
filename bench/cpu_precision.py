"""``python -m bench.cpu_precision --mode quick|full``: reduced precision on this CPU, one run, same model.

Per UNet call at batch 1/4/8 (median over repeats, same thread count): ONNX Runtime FP32 (our
default), OpenVINO FP32 and BF16 (``python -m export.bf16``), diffusers eager FP32 and diffusers
eager with ``torch.autocast("cpu", torch.bfloat16)`` (what a user would turn on); each one's accuracy
against ORT FP32 on the same input (PSNR); GFLOP/s against the CPU's FP32 and BF16 peaks; time to one
image with ddim-50 and dpmpp-2m-25 (steps x the batch-1 call, the samplers' host work being
negligible beside it, docs/performance.md); cold start of OpenVINO BF16 with and without its
compiled-model cache. Writes ``docs/bench-cpu-precision-MODE.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import machine
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
MODES = {"quick": {"repeats": 5, "batches": (1, 4, 8)}, "full": {"repeats": 2, "batches": (1, 4, 8)}}


def median_time(fn, repeats: int):
    """(median seconds over ``repeats`` calls after one warm-up, the last call's result)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def psnr(ref: np.ndarray, got: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - got) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(float(np.max(ref**2)) / mse)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.cpu_precision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default: the mode's 1 4 8)")
    args = ap.parse_args(argv)
    require("bench.cpu_precision", {"torch": "export", "diffusers": "export", "onnx": "export", "openvino": "openvino"})
    cfg = dict(MODES[args.mode])
    if args.batches:
        cfg["batches"] = tuple(args.batches)
    import torch
    from diffusers import UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from bench.__main__ import prepare
    from export.artifacts import OV_NAME
    from export.bf16 import main as bf16_main
    from runtime.engine import open_engine
    from runtime.runners.ort import default_threads

    threads = default_threads()
    torch.set_num_threads(threads)
    model_dir, engine = prepare(args.mode)
    folder = engine.parent
    bf16 = folder / OV_NAME
    if not bf16.exists():
        assert bf16_main(["--engines", str(folder)]) == 0
    unet = UNet2DModel.from_pretrained(model_dir).eval()
    ort_runner, manifest, _ = open_engine(engine, device="cpu", threads=threads, cache_dir=None)
    ov_bf16, _, entry = open_engine(bf16, threads=threads, cache_dir=None)
    gate = entry.build["gate"]

    # OpenVINO FP32 on the same IR (its entry says bf16; the runner takes the precision from it)
    from dataclasses import replace

    from runtime.runners import RunnerOptions
    from runtime.runners.openvino import OpenVinoRunner

    ov_fp32 = OpenVinoRunner(bf16, manifest.io, replace(entry, precision="fp32"), RunnerOptions(threads=threads)).activate()

    def torch_call(autocast: bool):
        def call(x, t):
            xt, tt = torch.from_numpy(x), torch.from_numpy(t)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                return unet(xt, tt).sample.float().numpy()
        return call

    engines = {
        "ONNX Runtime FP32 (ours, default)": lambda x, t: ort_runner.infer({"sample": x, "timestep": t})["noise_pred"],
        "OpenVINO FP32": lambda x, t: ov_fp32.infer({"sample": x, "timestep": t})["noise_pred"],
        "OpenVINO BF16 (ours, export.bf16)": lambda x, t: ov_bf16.infer({"sample": x, "timestep": t})["noise_pred"],
        "diffusers eager FP32": torch_call(False),
        "diffusers eager, BF16 autocast": torch_call(True),
    }
    rng = np.random.default_rng(0)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        unet(torch.zeros(manifest.io.sample.concrete(1)), torch.tensor([500.0]))
    flops = counter.get_total_flops()
    peak32, how = machine.fp32_peak_gflops()
    bf16_units = "avx512_bf16" in machine.cpu_flags() or "amx_bf16" in machine.cpu_flags()
    peak16 = 2 * peak32 if bf16_units else None  # VDPBF16PS: two BF16 products per FP32 lane per FMA
    results = {}
    for batch in cfg["batches"]:
        x = rng.standard_normal(manifest.io.sample.concrete(batch), dtype=np.float32)
        t = np.linspace(10, 990, batch).round().astype(np.float32)
        ref = engines["ONNX Runtime FP32 (ours, default)"](x, t)
        for name, fn in engines.items():
            seconds, out = median_time(lambda: fn(x, t), cfg["repeats"])
            results[(name, batch)] = (seconds, psnr(ref, out))
            print(f"{name:38s} batch {batch}: {seconds * 1e3:8.1f} ms", flush=True)

    from bench.openvino_cache import cold_start

    with tempfile.TemporaryDirectory() as tmp:
        cold_start(bf16, tmp, cache_compiled=True)
        warm = statistics.median(cold_start(bf16, tmp, cache_compiled=True) for _ in range(3))
    none = statistics.median(cold_start(bf16, None) for _ in range(3))

    lines = [
        f"# Reduced precision on the CPU ({args.mode})",
        "",
        f"Machine: {machine.describe()}; BF16 units: {'yes (avx512_bf16/amx)' if bf16_units else 'no'}.",
        f"UNet: {flops / 1e9:.1f} GFLOP per image-step; {threads} threads everywhere; median of {cfg['repeats']} calls "
        "after one warm-up. PSNR: each engine's noise prediction vs ONNX Runtime FP32 on the same input. "
        f"Peaks: FP32 {peak32:.0f} GFLOP/s ({how}); BF16 "
        + (f"{peak16:.0f} GFLOP/s (twice FP32: VDPBF16PS does two BF16 products per FP32 lane)" if peak16 else "—"),
        "",
        "| engine | " + " | ".join(f"batch {b} ms/call" for b in cfg["batches"]) + " | vs ORT FP32 (batch 1) | "
        "vs diffusers BF16 autocast (batch 1) | GFLOP/s (batch 1) | PSNR vs FP32 | ddim-50 image s | dpmpp-2m-25 image s |",
        "|---|" + "---|" * (len(cfg["batches"]) + 6),
    ]
    base_ort = results[("ONNX Runtime FP32 (ours, default)", 1)][0]
    base_ac = results[("diffusers eager, BF16 autocast", 1)][0]
    for name in engines:
        s1, q = results[(name, 1)]
        gf = flops / s1 / 1e9
        of = f"{gf / (peak16 if 'BF16' in name and peak16 else peak32):.0%} of {'BF16' if 'BF16' in name and peak16 else 'FP32'} peak"
        lines.append(
            f"| {name} | " + " | ".join(f"{results[(name, b)][0] * 1e3:.0f}" for b in cfg["batches"])
            + f" | {base_ort / s1:.2f}x | {base_ac / s1:.2f}x | {gf:.0f} ({of}) | "
            + ("—" if q == float("inf") else f"{q:.1f} dB") + f" | {50 * s1:.1f} | {25 * s1:.1f} |"
        )
    worst = min(r["psnr_db"] for r in gate["noise_prediction"])
    lines += [
        "",
        f"BF16 gate (export.bf16, in the manifest): noise-prediction PSNR >= {worst:.1f} dB over timesteps "
        f"{', '.join(str(r['timestep']) for r in gate['noise_prediction'])}; {gate['sampling']['steps']}-step image "
        f"PSNR {gate['sampling']['image_psnr_db']:.1f} dB (thresholds {gate['min_psnr_db']:.0f} / {gate['min_image_psnr_db']:.0f} dB).",
        f"Cold start of OpenVINO BF16 (new process → ready): {warm:.2f} s with its compiled-model cache warm, "
        f"{none:.2f} s without the cache (median of 3).",
    ]
    out = Path(args.out) / f"bench-cpu-precision-{args.mode}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.cpu_precision"))
