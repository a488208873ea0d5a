"""``python -m bench.samplers --mode quick|full``: image quality against seconds per image, per sampler and step
count (the few-step samplers: UniPC, DPM-Solver++ 3M, beside DDIM and DPM-Solver++ 2M).

Two measurements, each a table in ``docs/bench-samplers-MODE.md`` and a panel of ``docs/bench-samplers-MODE.png``:

* **The shipped digits model** (``models/digits16``, trained here): per method, the Fréchet distance and mean
  confidence of ``demo.quality``'s classifier over generated images, beside the floor (real vs real) at the
  same count; s per image at batch 250. Quality claims come from this model.
* **The google/ddpm-cat-256 config** (``full``; ``quick``: a small config at 64x64), random weights *calmed*
  (output convolution scaled by 0.1, so deterministic samplers converge instead of amplifying chaos): per
  method, seconds per image at batch 1 on this CPU, and the final image's error against a converged
  reference trajectory of the same seed (DPM-Solver++ 2M at many steps; its own error is the table's first
  row: the reference at half its steps), as RMSE and PSNR over pixel values in [0, 1].
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import machine
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
CALM = 0.1
SAMPLERS = ("ddim", "dpmpp-2m", "dpmpp-3m", "unipc-2m", "unipc-3m")
MODES = {
    "quick": {"digits_count": 500, "digit_steps": (3, 5, 8), "reference_steps": 200, "repeats": 3,
              "methods": [(s, n) for s in SAMPLERS for n in (3, 5, 8)] + [("dpmpp-2m", 25)]},
    "full": {"digits_count": 1000, "digit_steps": (3, 4, 5, 6, 8, 10), "reference_steps": 100, "repeats": 1,
             "methods": [("dpmpp-2m", 25), ("ddim", 25), ("dpmpp-2m", 10), ("dpmpp-2m", 5), ("dpmpp-3m", 5),
                         ("dpmpp-3m", 8), ("unipc-2m", 5), ("unipc-2m", 8), ("unipc-3m", 3), ("unipc-3m", 5),
                         ("unipc-3m", 8)]},
}


def digits_engine() -> Path:
    """The shipped unconditional digits model's FP32 engine (``make demo``'s), exported when missing."""
    engines = ROOT / "build" / "demo" / "engines"
    if not (engines / "unet.onnx").is_file():
        from export.onnx import main as export_main

        assert export_main(["--model", str(ROOT / "models" / "digits16"), "--out", str(engines)]) == 0
    return engines / "unet.onnx"


def calmed_engine(mode: str) -> Path:
    """The reference config (full) or a small one (quick), random weights calmed, exported under build/bench."""
    from export.reference import REFERENCE_CONFIG, reference_blocks_tiny, save_model

    folder = ROOT / "build" / "bench" / f"samplers-{mode}"
    if not (folder / "engines" / "unet.onnx").is_file():
        config = REFERENCE_CONFIG if mode == "full" else {**reference_blocks_tiny(2), "sample_size": 64}
        save_model(folder / "model", config, calm=CALM)
        from export.onnx import main as export_main

        assert export_main(["--model", str(folder / "model"), "--out", str(folder / "engines")]) == 0
    return folder / "engines" / "unet.onnx"


def digits_rows(cfg: dict) -> tuple[list[dict], float]:
    """Per method on the digits model: FD, confidence, s per image; and the floor at this count."""
    from demo.quality import Classifier, frechet, sample, to_model_range
    from demo import digits

    engine = digits_engine()
    clf = Classifier()
    real_a, _ = digits.load("a")
    real_b, _ = digits.load("b")
    ref = clf.features(real_a)
    count = cfg["digits_count"]
    floor = frechet(clf.features(real_b[:count]), ref)
    methods = [(s, n) for s in SAMPLERS for n in cfg["digit_steps"]] + [("dpmpp-2m", 25)]
    rows = []
    for scheduler, steps in methods:
        images, seconds = sample(engine, scheduler, steps, count)
        x = to_model_range(images)
        rows.append({"sampler": scheduler, "steps": steps, "fd": frechet(clf.features(x), ref),
                     "confidence": float(clf.probabilities(x).max(1).mean()), "seconds": seconds})
        print(f"digits {scheduler} {steps}: FD {rows[-1]['fd']:.2f} confidence {rows[-1]['confidence']:.3f} "
              f"{seconds * 1e3:.2f} ms/image", flush=True)
    return rows, floor


def to_unit(x: np.ndarray) -> np.ndarray:
    return np.clip(x.astype(np.float64) / 2 + 0.5, 0, 1)


def error(x: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(RMSE, PSNR in dB) of the final images in [0, 1]."""
    rmse = float(np.sqrt(np.mean((to_unit(x) - to_unit(reference)) ** 2)))
    return rmse, (float("inf") if rmse == 0 else 20 * np.log10(1 / rmse))


def calmed_rows(mode: str, cfg: dict) -> tuple[list[dict], dict]:
    """Per method on the calmed reference-config model: s per image (batch 1), calls, RMSE/PSNR vs the converged
    reference; and the reference's own row."""
    from runtime import Pipeline

    engine = calmed_engine(mode)
    with Pipeline.load(engine, device="cpu", cache_dir=None) as pipe:

        def timed(scheduler: str, steps: int, repeats: int) -> tuple[np.ndarray, list[float]]:
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                x = pipe.denoise(count=1, seed=0, steps=steps, scheduler=scheduler)
                seconds.append(time.perf_counter() - started)
            return x, seconds

        n_ref = cfg["reference_steps"]
        reference, ref_seconds = timed("dpmpp-2m", n_ref, 1)
        half, _ = timed("dpmpp-2m", n_ref // 2, 1)
        per_call = ref_seconds[0] / n_ref
        rmse, psnr = error(half, reference)
        own = {"steps": n_ref, "seconds": ref_seconds[0], "half_rmse": rmse, "half_psnr": psnr, "per_call": per_call}
        print(f"reference dpmpp-2m {n_ref}: {ref_seconds[0]:.1f} s; at {n_ref // 2} steps RMSE {rmse:.2e}", flush=True)
        rows = []
        for scheduler, steps in cfg["methods"]:
            x, seconds = timed(scheduler, steps, cfg["repeats"])
            rmse, psnr = error(x, reference)
            rows.append({"sampler": scheduler, "steps": steps, "seconds": statistics.median(seconds), "rmse": rmse,
                         "psnr": psnr})
            print(f"calmed {scheduler} {steps}: {rows[-1]['seconds']:.2f} s, RMSE {rmse:.2e}, PSNR {psnr:.1f} dB", flush=True)
    return rows, own


def plot(digit_rows: list[dict], floor: float, calm_rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.8))
    for scheduler in SAMPLERS:
        pts = sorted((r["seconds"] * 1e3, r["fd"], r["steps"]) for r in digit_rows if r["sampler"] == scheduler)
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=scheduler)
            for x, y, n in pts:
                a.annotate(str(n), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        pts = sorted((r["seconds"], r["psnr"], r["steps"]) for r in calm_rows if r["sampler"] == scheduler)
        if pts:
            b.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=scheduler)
            for x, y, n in pts:
                b.annotate(str(n), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    a.axhline(floor, color="gray", ls="--", label="floor (real vs real)")
    a.set(xscale="log", yscale="log", xlabel="ms per image (batch 250)", ylabel="Fréchet distance (lower is better)",
          title="digits16 (trained): quality vs time; labels: steps")
    b.set(xscale="log", xlabel="s per image (batch 1)", ylabel="PSNR vs converged reference, dB (higher is better)",
          title=title)
    for ax in (a, b):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
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
    digit_rows, floor = digits_rows(cfg)
    calm_rows, own = calmed_rows(args.mode, cfg)
    config_name = "google/ddpm-cat-256 config (3x256x256)" if args.mode == "full" else "a small config (3x64x64)"
    out = Path(args.out)
    plot(digit_rows, floor, calm_rows, out / f"bench-samplers-{args.mode}.png",
         f"{config_name}, calmed random weights: error vs time")
    base = next(r for r in calm_rows if (r["sampler"], r["steps"]) == ("dpmpp-2m", 25))
    digits_base = next(r for r in digit_rows if (r["sampler"], r["steps"]) == ("dpmpp-2m", 25))
    lines = [
        f"# Samplers: quality against time ({args.mode})",
        "",
        f"`python -m bench.samplers --mode {args.mode}` ({time.time() - started:.0f} s). {machine.describe()}",
        "",
        f"## The shipped digits model (models/digits16, 16x16, trained here): {cfg['digits_count']} images per row",
        "",
        "Fréchet distance over `demo.quality`'s classifier features against real split a (lower is better), mean "
        f"top-class confidence, per-image seeds 0..N-1, numpy noise, batches of 250, ONNX Runtime FP32. Floor (this "
        f"many real held-out digits vs real split a): **{floor:.2f}**. ΔFD: against DPM-Solver++ 2M at 25 steps "
        f"({digits_base['fd']:.2f}).",
        "",
        "| sampler | steps (UNet calls) | Fréchet distance | ΔFD vs dpmpp-2m 25 | mean confidence | ms per image |",
        "|---|---|---|---|---|---|",
    ]
    for r in digit_rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['fd']:.2f} | {r['fd'] - digits_base['fd']:+.2f} | "
                     f"{r['confidence']:.3f} | {r['seconds'] * 1e3:.2f} |")
    lines += [
        "",
        f"## {config_name}, random weights with the output convolution scaled by {CALM}",
        "",
        f"One image (batch 1), seed 0, numpy noise, ONNX Runtime FP32 on this CPU ({own['per_call']:.3g} s per UNet "
        f"call in the reference run). s per image: wall time of `Pipeline.denoise`, "
        f"{'median of ' + str(cfg['repeats']) + ' runs' if cfg['repeats'] > 1 else 'one run (each costs minutes)'}. "
        f"Error: the final image in [0, 1] against DPM-Solver++ 2M at {own['steps']} steps of the same seed "
        f"({own['seconds']:.0f} s); that reference at {own['steps'] // 2} steps is RMSE {own['half_rmse']:.2e} "
        f"(PSNR {own['half_psnr']:.1f} dB) from it, so errors well above that are the method's. The goal is at "
        f"least the PSNR of DPM-Solver++ 2M at 25 steps ({base['psnr']:.1f} dB) in less time.",
        "",
        "| sampler | steps (UNet calls) | s per image | speed-up vs dpmpp-2m 25 | RMSE | PSNR dB | at least dpmpp-2m 25's PSNR |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in calm_rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['seconds']:.3g} | {base['seconds'] / r['seconds']:.2f}x | "
                     f"{r['rmse']:.2e} | {r['psnr']:.1f} | {'yes' if r['psnr'] >= base['psnr'] else 'no'} |")
    lines += ["", f"![quality vs time](bench-samplers-{args.mode}.png)"]
    (out / f"bench-samplers-{args.mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.samplers"))
