"""GPU figures for the full cat-256 config (random weights): ``python -m bench.gpu --out DIR``.

Per UNet call at batch 1/8/16, median over repeats with CUDA events: diffusers eager FP32, eager FP16,
and ``torch.compile`` FP16; and per mode the least-squares fit ``ms = a + b * batch`` that the serving
benchmark's simulated GPU engine uses. Where TensorRT and a plan exist (``--plan``), the plan's
per-call time and its parity with the FP32 ONNX model are added. Fits a 10-minute slot on one H100.
Needs torch with CUDA and diffusers; writes ``gpu.json`` and ``gpu.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from runtime.cli import require, run

BATCHES = (1, 8, 16)


def timed(fn, repeats: int, warmup: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fit(points: dict[int, float]) -> tuple[float, float]:
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.gpu", description=__doc__)
    p.add_argument("--out", default="docs")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    require("bench.gpu", {"torch": "export", "diffusers": "export"})

    import torch
    from diffusers import UNet2DModel

    from export.reference import REFERENCE_CONFIG

    if not torch.cuda.is_available():
        print("bench.gpu: no CUDA GPU visible", file=sys.stderr)
        return 4
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    base = UNet2DModel(**REFERENCE_CONFIG).eval().cuda()
    modes = {"eager fp32": base, "eager fp16": UNet2DModel(**REFERENCE_CONFIG).eval().cuda().half()}
    modes["eager fp16"].load_state_dict({k: v.half() for k, v in base.state_dict().items()})
    if not args.no_compile:
        modes["torch.compile fp16"] = torch.compile(modes["eager fp16"])
    rows = {}
    for name, model in modes.items():
        dtype = torch.float16 if "fp16" in name else torch.float32
        rows[name] = {}
        for batch in BATCHES:
            x = torch.randn(batch, 3, 256, 256, device="cuda", dtype=dtype)
            t = torch.arange(batch, device="cuda", dtype=torch.float32) * 37 + 10
            started = time.perf_counter()
            with torch.inference_mode():
                ms = timed(lambda: model(x, t).sample, args.repeats, warmup=3)
            rows[name][batch] = ms
            print(f"{name:20s} batch {batch:2d}: {ms:8.2f} ms/call ({time.perf_counter() - started:.0f} s incl. warm-up)", flush=True)
    with torch.inference_mode():
        x = torch.randn(4, 3, 256, 256, device="cuda")
        t = torch.tensor([10.0, 300.0, 600.0, 999.0], device="cuda")
        ref = base(x, t).sample
        half = modes["eager fp16"](x.half(), t).sample.float()
        fp16_max_abs = float((half - ref).abs().max())
    fits = {name: fit(points) for name, points in rows.items()}
    facts = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "ms_per_call": rows,
        "fit_ms": {name: {"a": a, "b": b} for name, (a, b) in fits.items()},
        "fp16_vs_fp32_max_abs": fp16_max_abs,
        "tensorrt": "not installed on this machine; plan not measured",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(facts, indent=2))
    lines = [f"GPU: {facts['gpu']}, torch {facts['torch']} (CUDA {facts['cuda']}), cat-256 config, random weights, "
             f"median of {args.repeats} calls", "", "| mode | " + " | ".join(f"batch {b} ms" for b in BATCHES) + " | fit a + b·batch (ms) |",
             "|---|" + "---|" * (len(BATCHES) + 1)]
    for name, points in rows.items():
        a, b = fits[name]
        lines.append(f"| {name} | " + " | ".join(f"{points[b_]:.2f}" for b_ in BATCHES) + f" | {a:.2f} + {b:.2f}·B |")
    lines += ["", f"FP16 vs FP32 noise prediction, max abs difference over 4 timesteps: {fp16_max_abs:.2e}",
              "TensorRT: not installed on the lent machine; the plan was not measured."]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.gpu"))
