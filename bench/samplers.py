"""``python -m bench.samplers --mode quick|full``: image quality against seconds per image, per sampler and step
count (the few-step samplers: UniPC, DPM-Solver++ 3M, beside DDIM and DPM-Solver++ 2M).

Quality comes from the shipped digits model (``models/digits16``, trained here), two ways: the Fréchet
distance and mean confidence of ``demo.quality``'s classifier (beside the real-vs-real floor at the same
count), and the error of the final images against a converged reference trajectory of the same seeds
(DPM-Solver++ 2M at 999 steps; the reference at 800 steps is its own error bound), the median image's RMSE
and PSNR over pixel values in [0, 1]. Time comes from the google/ddpm-cat-256 config (``full``, random weights: the
time of a call does not depend on the weights; ``quick``: a small config): seconds per image at batch 1,
one sampled image per method, on this CPU. A random UNet is no testbed for the error: calmed or not its
"data" is degenerate (with the output convolution scaled by 0.1, x0 = x / alpha blows up to about +-100 and
the final sample jumps with the schedule's last timestep: on the quick config DPM-Solver++ 2M at 100 steps is
1.4 standard deviations from 400 steps, at 200 steps 4e-6), so the error is measured where it means something.
Writes ``docs/bench-samplers-MODE.md`` and ``docs/bench-samplers-MODE.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import machine
from runtime.cli import require, run
from runtime.images import to_unit_range

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-2m", "unipc-3m")
BASELINE = ("dpmpp-2m", 25)  # the runtime's default sampler at its default steps
REFERENCE_STEPS = 999  # the most DPM-Solver++ takes (1000 repeat a timestep)
CHECK_STEPS = 800  # the reference's own error: this many steps against it
# Every row's timesteps spaced "linspace", from the last training step down: DPM-Solver's and UniPC's default, and what
# they take from the reference model's config (it names no spacing). digits16's config names "leading", where K steps
# of DPM-Solver start at t = K * (1000 // (K + 1)): at 400 or 800 steps, t = 800, so step counts would not converge.
SPACING = {"timestep_spacing": "linspace"}
ERROR_IMAGES = 100
MODES = {
    "quick": {"digits_count": 500, "steps": (3, 5, 8), "timed": None},
    "full": {"digits_count": 1000, "steps": (3, 4, 5, 6, 8, 10),
             "timed": [BASELINE, ("dpmpp-2m", 10), ("ddim", 10), ("dpmpp-3m", 5), ("dpmpp-3m", 8), ("unipc-2m", 5),
                       ("unipc-2m", 8), ("unipc-3m", 3), ("unipc-3m", 5), ("unipc-3m", 8)]},
}


def digits_engine() -> Path:
    """The shipped unconditional digits model's FP32 engine (``make demo``'s), exported when missing."""
    engines = ROOT / "build" / "demo" / "engines"
    if not (engines / "unet.onnx").is_file():
        from export.onnx import main as export_main

        assert export_main(["--model", str(ROOT / "models" / "digits16"), "--out", str(engines)]) == 0
    return engines / "unet.onnx"


def methods(cfg: dict) -> list[tuple[str, int]]:
    return [(s, n) for s in SAMPLERS for n in cfg["steps"]] + [BASELINE]


def error(x: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(RMSE, PSNR in dB) of the final images in [0, 1]: the median image's. The median, not the pooled RMSE: a
    trained model's probability-flow ODE sends a few seeds to another digit under a small perturbation (any
    step count, the reference's own included), and those few images would dominate a pooled figure."""
    diff = to_unit_range(x).astype(np.float64) - to_unit_range(reference)
    per_image = np.sqrt(np.mean(diff ** 2, axis=tuple(range(1, x.ndim))))
    rmse = float(np.median(per_image))
    return rmse, (float("inf") if rmse == 0 else 20 * np.log10(1 / rmse))


def timed_images(pipe, count: int, **fields) -> tuple[np.ndarray, float]:
    """``count`` digits images (uint8) sampled in batches of 250 with per-image seeds 0..count-1, and the seconds per
    image: the digits benches' quality and time rows."""
    started, out = time.perf_counter(), []
    for start in range(0, count, 250):
        n = min(250, count - start)
        out.append(pipe(count=n, seeds=list(range(start, start + n)), **fields))
    return np.concatenate(out), (time.perf_counter() - started) / count


def digits_rows(cfg: dict) -> tuple[list[dict], float, tuple[float, float]]:
    """Per method on the digits model: FD, confidence, ms per image (batch 250), RMSE/PSNR against the converged
    reference; the floor at this count; the reference's own error."""
    from demo import digits
    from demo.quality import Classifier, frechet, to_model_range
    from runtime import Pipeline

    clf = Classifier()
    real_a, _ = digits.load("a")
    real_b, _ = digits.load("b")
    ref = clf.features(real_a)
    count = cfg["digits_count"]
    floor = frechet(clf.features(real_b[:count]), ref)
    seeds = list(range(ERROR_IMAGES))
    with Pipeline.load(digits_engine(), device="cpu", cache_dir=None) as pipe:
        pipe.scheduler_config = {**pipe.scheduler_config, **SPACING}
        converged = pipe.denoise(count=ERROR_IMAGES, seeds=seeds, steps=REFERENCE_STEPS, scheduler="dpmpp-2m")
        own = error(pipe.denoise(count=ERROR_IMAGES, seeds=seeds, steps=CHECK_STEPS, scheduler="dpmpp-2m"), converged)
        print(f"digits reference dpmpp-2m {REFERENCE_STEPS}: at {CHECK_STEPS} steps RMSE {own[0]:.2e}", flush=True)
        rows = []
        for scheduler, steps in methods(cfg):
            generated, seconds = timed_images(pipe, count, steps=steps, scheduler=scheduler)
            x = to_model_range(generated)
            rmse, psnr = error(pipe.denoise(count=ERROR_IMAGES, seeds=seeds, steps=steps, scheduler=scheduler), converged)
            rows.append({"sampler": scheduler, "steps": steps, "fd": frechet(clf.features(x), ref),
                         "confidence": float(clf.probabilities(x).max(1).mean()), "ms": seconds * 1e3,
                         "rmse": rmse, "psnr": psnr})
            print(f"digits {scheduler} {steps}: FD {rows[-1]['fd']:.2f}, PSNR {psnr:.1f} dB, {seconds * 1e3:.2f} ms/image",
                  flush=True)
    return rows, floor, own


def seconds_per_image(mode: str, timed: list[tuple[str, int]]) -> dict:
    """One image (batch 1, seed 0) per method on bench's own reference-config engine: wall seconds."""
    from runtime import Pipeline

    from .__main__ import prepare

    _, engine = prepare(mode)
    out = {}
    with Pipeline.load(engine, device="cpu", cache_dir=None) as pipe:
        pipe.denoise(count=1, seed=0, steps=1, scheduler="ddim")  # warm-up
        for scheduler, steps in timed:
            started = time.perf_counter()
            pipe.denoise(count=1, seed=0, steps=steps, scheduler=scheduler)
            out[(scheduler, steps)] = time.perf_counter() - started
            print(f"{mode} config {scheduler} {steps}: {out[(scheduler, steps)]:.2f} s per image", flush=True)
    return out


def plot(rows: list[dict], floor: float, seconds: dict, path: Path, config_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, ax in zip(("fd", "psnr"), axes):
        for scheduler in SAMPLERS:
            pts = sorted((seconds[(r["sampler"], r["steps"])], r[key], r["steps"]) for r in rows
                         if r["sampler"] == scheduler and (r["sampler"], r["steps"]) in seconds)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=scheduler)
                for x, y, n in pts:
                    ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"s per image, {config_name}, batch 1, this CPU")
        ax.grid(alpha=0.3)
    axes[0].axhline(floor, color="gray", ls="--", label="floor (real vs real)")
    axes[0].set(yscale="log", ylabel="Fréchet distance, digits16 (lower is better)", title="quality vs time (labels: steps)")
    axes[1].set(ylabel="PSNR vs converged trajectory, digits16, dB", title="error vs time (labels: steps)")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.samplers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.samplers", {"torch": "export", "diffusers": "export", "matplotlib": "bench", "sklearn": "test",
                               "scipy": "test"})
    cfg = MODES[args.mode]
    started = time.time()
    rows, floor, own = digits_rows(cfg)
    timed = cfg["timed"] or methods(cfg)
    seconds = seconds_per_image(args.mode, timed)
    config_name = "google/ddpm-cat-256 config" if args.mode == "full" else "quick config (64x64)"
    out = Path(args.out)
    plot(rows, floor, seconds, out / f"bench-samplers-{args.mode}.png", config_name)
    base = next(r for r in rows if (r["sampler"], r["steps"]) == BASELINE)
    lines = [
        f"# Samplers: quality against time ({args.mode})",
        "",
        f"`python -m bench.samplers --mode {args.mode}` ({time.time() - started:.0f} s). {machine.describe()}",
        "",
        f"Quality: the shipped digits model (models/digits16, 16x16, trained here). Fréchet distance over "
        f"`demo.quality`'s classifier features against real split a, {cfg['digits_count']} images per row (per-image "
        f"seeds 0..N-1, numpy noise, batches of 250; floor, this many real held-out digits: **{floor:.2f}**), and its "
        "mean top-class confidence; ΔFD against DPM-Solver++ 2M at 25 steps, the runtime's default. Error: the "
        f"median per-image RMSE of the final images of seeds 0..{ERROR_IMAGES - 1} in [0, 1] against DPM-Solver++ 2M at {REFERENCE_STEPS} steps of "
        f"the same seeds (at {CHECK_STEPS} steps that reference is RMSE {own[0]:.1e}, PSNR {own[1]:.1f} dB, from "
        f"itself). Time: s per image on the {config_name} (random weights), batch 1, one image per method, ONNX "
        "Runtime FP32, this CPU (— : not timed in this mode); ms per digits image at batch 250 beside it. Every row "
        "samples with timestep_spacing \"linspace\" (the samplers' default; the reference model's config names none; "
        "digits16's names \"leading\", where DPM-Solver's K steps start below the last training step, at t = 800 for "
        "K = 400 or 800).",
        "",
        f"| sampler | steps (UNet calls) | Fréchet distance | ΔFD vs dpmpp-2m 25 | mean confidence | RMSE vs converged | "
        f"PSNR dB | s per image ({config_name}) | speed-up vs dpmpp-2m 25 | ms per digits image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_s = seconds[BASELINE]
    for r in rows:
        s = seconds.get((r["sampler"], r["steps"]))
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['fd']:.2f} | {r['fd'] - base['fd']:+.2f} | {r['confidence']:.3f} | "
                     f"{r['rmse']:.2e} | {r['psnr']:.1f} | {'—' if s is None else f'{s:.3g}'} | "
                     f"{'—' if s is None else f'{base_s / s:.2f}x'} | {r['ms']:.2f} |")
    lines += ["", f"![quality vs time](bench-samplers-{args.mode}.png)"]
    (out / f"bench-samplers-{args.mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.samplers"))
