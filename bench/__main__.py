"""``python -m bench --mode quick|full``: our runtime vs diffusers/PyTorch, same weights, one run.

quick: a tiny model (about a minute). full: the google/ddpm-cat-256 config with random weights
(several minutes). Writes ``docs/bench-MODE.md`` (a table: median/min/max over repeats, ratios
computed pair by pair) and ``docs/bench-MODE.png`` (step latency and images/s against batch size).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import machine
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "quick": {"repeats": 5, "batches": (1, 2, 4, 8), "cold_repeats": 3},
    "full": {"repeats": 3, "batches": (1, 2, 4, 8), "cold_repeats": 3},
}


@dataclass
class Stats:
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def cell(self, scale: float = 1e3, unit: str = "ms") -> str:
        return f"{self.median * scale:.4g} {unit} ({min(self.seconds) * scale:.4g}–{max(self.seconds) * scale:.4g})"


def measure(fn, repeats: int, warmup: int = 1) -> Stats:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return Stats(out)


def prepare(mode: str) -> tuple[Path, Path]:
    """A random-weight model folder and its exported engine under build/bench/MODE (reused)."""
    from export.reference import REFERENCE_CONFIG, reference_blocks_tiny, save_model

    folder = ROOT / "build" / "bench" / mode
    model, engines = folder / "model", folder / "engines"
    if not (engines / "unet.onnx").exists():
        config = REFERENCE_CONFIG if mode == "full" else {**reference_blocks_tiny(2), "sample_size": 64}
        save_model(model, config)
        from export.onnx import main as export_main

        assert export_main(["--model", str(model), "--out", str(engines)]) == 0
    return model, engines / "unet.onnx"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench", {"torch": "export", "diffusers": "export", "onnx": "export", "matplotlib": "bench"})
    cfg = MODES[args.mode]
    import torch
    from diffusers import DDPMScheduler, UNet2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from runtime.engine import open_engine
    from runtime.io_spec import SAMPLE, TIMESTEP
    from runtime.noise import NoiseSource
    from runtime.runners.ort import default_threads
    from runtime.schedulers import build_table

    threads = default_threads()
    torch.set_num_threads(threads)
    model_dir, engine = prepare(args.mode)
    unet = UNet2DModel.from_pretrained(model_dir).eval()
    runner, manifest, _ = open_engine(engine, device="cpu", threads=threads)
    shape1 = manifest.io.sample.concrete(1)
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str, str, str]] = []  # what, ours, baseline, ratio (baseline / ours)

    def feeds(batch):
        x = rng.standard_normal(manifest.io.sample.concrete(batch), dtype=np.float32)
        t = np.full(batch, 500, np.float32)
        return x, t

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        x, t = feeds(1)
        unet(torch.from_numpy(x), torch.from_numpy(t))
    flops = counter.get_total_flops()  # FLOPs per image-step (2 x multiply-adds)
    peak, peak_how = machine.fp32_peak_gflops()

    # 1. UNet step, and 4. batch scaling
    latency = {}
    for batch in cfg["batches"]:
        x, t = feeds(batch)
        ours = measure(lambda: runner.infer({SAMPLE: x, TIMESTEP: t}), cfg["repeats"])
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)
        with torch.inference_mode():
            base = measure(lambda: unet(xt, tt), cfg["repeats"])
        latency[batch] = (ours, base)
        gflops = flops * batch / ours.median / 1e9
        rows.append(
            (
                f"UNet step, batch {batch} (ours: ORT; baseline: diffusers eager, {threads} threads)",
                f"{ours.cell()} = {gflops:.0f} GFLOP/s ({gflops / peak:.0%} of peak)",
                base.cell(),
                f"{base.median / ours.median:.2f}x",
            )
        )
        print(rows[-1], flush=True)

    # 2. host overhead per image-step (batch 1): scheduler step + noise + feeding, no UNet
    _, table = build_table("ddpm", manifest.scheduler_config, 1000)
    i = 500
    sample = rng.standard_normal(shape1, dtype=np.float32)
    eps = rng.standard_normal(shape1, dtype=np.float32)
    tbuf = np.empty(1, np.float32)
    from runtime.schedulers import ddpm_step

    sched = DDPMScheduler.from_config(manifest.scheduler_config)
    sched.set_timesteps(1000)
    st, et, tt = torch.from_numpy(sample), torch.from_numpy(eps), sched.timesteps[i]
    gen = torch.Generator().manual_seed(0)
    base = measure(lambda: sched.step(et, tt, st, generator=gen), cfg["repeats"] * 20)
    def critical_path():
        # what the sampling loop does between two UNet calls besides waiting for the prefetched noise
        tbuf.fill(table.timesteps[i])
        np.isfinite(eps).all()
        ddpm_step(table, i, eps, sample, noise, out=out_buf, scratch=scratch_buf)

    noise = rng.standard_normal(shape1, dtype=np.float32)
    out_buf, scratch_buf = np.empty_like(sample), np.empty_like(sample)
    ours = measure(critical_path, cfg["repeats"] * 20)
    rows.append(
        (
            "host overhead per image-step on the critical path: scheduler step, timestep, NaN check "
            "(baseline: DDPMScheduler.step with generator, noise included)",
            ours.cell(),
            base.cell(),
            f"{base.median / ours.median:.2f}x",
        )
    )
    print(rows[-1], flush=True)
    for kind in ("numpy", "torch"):
        src = NoiseSource.shared(kind, 0)
        ours = measure(lambda: src.draw(shape1), cfg["repeats"] * 20)
        rows.append(
            (f"noise draw per image-step, {kind} (overlapped with the UNet call on a helper thread)", ours.cell(), "—", "—")
        )
        print(rows[-1], flush=True)

    # 3. cold start: a new process until the first UNet call can run; the engine cache cold (empty:
    # this process writes the entry), warm (the entry exists) and off, against diffusers
    import tempfile

    def ours_cmd(cache_dir):
        return f"from runtime import Pipeline; Pipeline.load({str(engine)!r}, device='cpu', cache_dir={cache_dir!r})"

    base_cmd = f"import torch, diffusers; diffusers.UNet2DModel.from_pretrained({str(model_dir)!r})"

    def run(code):
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)

    base = measure(lambda: run(base_cmd), cfg["cold_repeats"])
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        cold = measure(lambda: run(ours_cmd(tempfile.mkdtemp(dir=tmp))), cfg["cold_repeats"], warmup=0)
        warm_dir = tempfile.mkdtemp(dir=tmp)
        warm = measure(lambda: run(ours_cmd(warm_dir)), cfg["cold_repeats"], warmup=1)  # the warm-up writes the entry
        none = measure(lambda: run(ours_cmd(None)), cfg["cold_repeats"])
    for label, ours in (("engine cache warm", warm), ("engine cache cold (writes it)", cold), ("no engine cache", none)):
        rows.append((f"cold start, {label} (new process → ready to call the UNet)", ours.cell(1, "s"), base.cell(1, "s"),
                     f"{base.median / ours.median:.2f}x"))
        print(rows[-1], flush=True)

    rows.append(("GPU baseline (diffusers eager FP32/FP16, batch 1/8/16)", "docs/gpu.md (`python -m bench.gpu`)", "—", "—"))
    write_report(args, rows, latency, flops, peak, peak_how, threads)
    return 0


def write_report(args, rows, latency, flops, peak, peak_how, threads) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batches = sorted(latency)
    lines = [
        f"# Benchmark ({args.mode})",
        "",
        f"Machine: {machine.describe()}.",
        f"UNet cost: {flops / 1e9:.1f} GFLOP per image-step (torch's FlopCounterMode). Threads: {threads} for both.",
        "Times: median (min–max) over repeats; ratio = baseline median / ours median, measured in this run.",
        "",
        "| what | ours | baseline | ratio |",
        "| --- | --- | --- | --- |",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        "| batch | ours s/step | ours image-steps/s | baseline s/step | baseline image-steps/s |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {b} | {latency[b][0].median:.4g} | {b / latency[b][0].median:.4g} | {latency[b][1].median:.4g} | {b / latency[b][1].median:.4g} |"
            for b in batches
        ],
        "",
    ]
    (out / f"bench-{args.mode}.md").write_text("\n".join(lines))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for idx, label in ((0, "ours (ONNX Runtime)"), (1, "diffusers eager")):
        ax1.plot(batches, [latency[b][idx].median for b in batches], "o-", label=label)
        ax2.plot(batches, [b / latency[b][idx].median for b in batches], "o-", label=label)
    ax1.set(xlabel="batch", ylabel="s per UNet step", title="step latency")
    ax2.set(xlabel="batch", ylabel="images x steps / s", title="throughput")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(f"{args.mode}: {machine.cpu_model()}, {threads} threads")
    fig.tight_layout()
    fig.savefig(out / f"bench-{args.mode}.png", dpi=100)
    print(f"wrote {out / f'bench-{args.mode}.md'} and .png")


if __name__ == "__main__":
    sys.exit(run(main, "bench"))
