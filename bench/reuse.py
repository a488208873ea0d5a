"""``python -m bench.reuse --mode quick|full``: feature reuse (DeepCache) — quality against time per sampler,
step count, cache schedule and branch.

Quality on the shipped digits model (``models/digits16``, trained here; graphs from ``export.deepcache`` at
branch 0 and 1): the Fréchet distance and mean confidence of ``demo.quality``'s classifier (with the real-vs-real
floor), ΔFD against the same sampler and steps without reuse, and the median image's PSNR against that
no-reuse image of the same seed (what reuse changes). Time: ms per digits image at batch 250, and on the
reference config (``full``: google/ddpm-cat-256, random weights; ``quick``: a 64x64 config) one image at batch 1
per timed method, plus the median of 3 calls of each graph (plain, full, shallow) at batch 1. Writes
``docs/bench-reuse-MODE.md`` and ``.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import machine
from .samplers import ERROR_IMAGES, SPACING, digits_engine, error, timed_images
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
# (sampler, steps, schedule): schedule None (no reuse), an interval N, or a tuple of the steps that run the full UNet
NONUNIFORM_25 = (0, 1, 2, 3, 4, 6, 8, 11, 14, 17, 20, 22, 23, 24)  # denser at both ends, where features move most
MODES = {
    "quick": {"digits_count": 500, "branches": (0,),
              "digits": [("dpmpp-2m", 25, None), ("dpmpp-2m", 25, 2), ("dpmpp-2m", 25, 3), ("unipc-3m", 8, None),
                         ("unipc-3m", 8, 2)],
              "timed": [("dpmpp-2m", 10, None), ("dpmpp-2m", 10, 2), ("dpmpp-2m", 10, 3)]},
    "full": {"digits_count": 1000, "branches": (0, 1),
             "digits": [("dpmpp-2m", 25, None), ("dpmpp-2m", 25, 2), ("dpmpp-2m", 25, 3), ("dpmpp-2m", 25, 4),
                        ("dpmpp-2m", 25, 5), ("dpmpp-2m", 25, NONUNIFORM_25), ("dpmpp-2m", 10, None), ("dpmpp-2m", 10, 2),
                        ("dpmpp-2m", 10, 3), ("unipc-3m", 8, None), ("unipc-3m", 8, 2), ("unipc-3m", 8, 3)],
             "timed": [("dpmpp-2m", 25, None), ("dpmpp-2m", 25, 3), ("unipc-3m", 8, None), ("unipc-3m", 8, 2),
                       ("unipc-3m", 8, 3)]},
}


def schedule_fields(schedule) -> dict:
    if schedule is None:
        return {}
    return {"cache_interval": schedule} if isinstance(schedule, int) else {"cache_full_steps": list(schedule)}


def schedule_name(schedule) -> str:
    if schedule is None:
        return "none"
    return f"every {schedule}" if isinstance(schedule, int) else f"{len(schedule)} full: " + ",".join(map(str, schedule))


def with_graphs(model: Path, engine: Path, branch: int, folder: Path) -> Path:
    """A copy of ``engine``'s folder with the feature-reuse graphs of ``branch`` (reused when there)."""
    import shutil

    from export.deepcache import main as deepcache_main
    from runtime.manifest import read_manifest

    target = folder / engine.name
    if (folder / "manifest.json").is_file():
        entries = read_manifest(folder / "manifest.json").artifacts
        if any(e.build.get("feature_cache", {}).get("branch") == branch for e in entries.values()):
            return target
    shutil.copytree(engine.parent, folder, dirs_exist_ok=True)
    assert deepcache_main(["--model", str(model), "--engines", str(folder), "--branch", str(branch)]) == 0
    return target


def digits_rows(cfg: dict) -> tuple[list[dict], float]:
    from demo import digits
    from demo.quality import Classifier, frechet, to_model_range
    from runtime import Pipeline

    clf = Classifier()
    ref = clf.features(digits.load("a")[0])
    count = cfg["digits_count"]
    floor = frechet(clf.features(digits.load("b")[0][:count]), ref)
    rows, plain = [], {}  # plain: the final images without reuse, per (sampler, steps)
    for branch in cfg["branches"]:
        engine = with_graphs(ROOT / "models" / "digits16", digits_engine(), branch,
                             ROOT / "build" / "bench" / "reuse" / f"digits-branch{branch}")
        with Pipeline.load(engine, device="cpu", cache_dir=None) as pipe:
            pipe.scheduler_config = {**pipe.scheduler_config, **SPACING}
            for scheduler, steps, schedule in cfg["digits"]:
                if branch and schedule is None:
                    continue  # no reuse: the same images at every branch
                fields = dict(steps=steps, scheduler=scheduler, **schedule_fields(schedule))
                pipe(count=2, seeds=[0, 1], **fields)  # warm-up (opens the graphs)
                generated, seconds = timed_images(pipe, count, **fields)
                ms, x = seconds * 1e3, to_model_range(generated)
                final = pipe.denoise(count=ERROR_IMAGES, seeds=list(range(ERROR_IMAGES)), **fields)
                if schedule is None:
                    plain[(scheduler, steps)] = final
                rows.append({"branch": branch, "sampler": scheduler, "steps": steps, "schedule": schedule,
                             "fd": frechet(clf.features(x), ref), "confidence": float(clf.probabilities(x).max(1).mean()),
                             "ms": ms, "psnr": error(final, plain[(scheduler, steps)])[1] if schedule else float("inf")})
                print(f"digits branch {branch} {scheduler} {steps} {schedule_name(schedule)}: FD {rows[-1]['fd']:.2f}, "
                      f"PSNR vs no reuse {rows[-1]['psnr']:.1f} dB, {ms:.2f} ms/image", flush=True)
    plain_rows = {(r["sampler"], r["steps"]): r for r in rows if r["schedule"] is None}
    for r in rows:
        r["dfd"] = r["fd"] - plain_rows[(r["sampler"], r["steps"])]["fd"]
        r["speedup_digits"] = plain_rows[(r["sampler"], r["steps"])]["ms"] / r["ms"]
    return rows, floor


def reference_timing(mode: str, timed: list) -> tuple[dict, dict]:
    """(s per image at batch 1 per timed method, median ms per call of each graph at batch 1) on the reference config."""
    from runtime import Pipeline
    from runtime.io_spec import DEEP_FEATURE

    from .__main__ import prepare

    model, engine = prepare(mode)
    engine = with_graphs(model, engine, 0, ROOT / "build" / "bench" / "reuse" / f"{mode}-branch0")
    seconds, calls = {}, {}
    with Pipeline.load(engine, device="cpu", cache_dir=None) as pipe:
        pipe.denoise(count=1, seed=0, steps=3, scheduler="ddim", cache_interval=2)  # warm-up, opens the graphs
        x = np.random.default_rng(0).standard_normal((1, pipe.channels, pipe.height, pipe.width), dtype=np.float32)
        t = np.array([500.0], dtype=np.float32)
        feature = pipe.denoiser.outputs(x, t, graph="full")[DEEP_FEATURE]
        runs = {"plain": lambda: pipe.denoiser(x, t), "full": lambda: pipe.denoiser.outputs(x, t, graph="full"),
                "shallow": lambda: pipe.denoiser.outputs(x, t, {DEEP_FEATURE: feature}, graph="shallow")}
        for name, call in runs.items():
            times = []
            for _ in range(3):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            calls[name] = statistics.median(times) * 1e3
            print(f"{mode} config, {name} graph: {calls[name]:.0f} ms per call (median of 3)", flush=True)
        for scheduler, steps, schedule in timed:
            started = time.perf_counter()
            pipe.denoise(count=1, seed=0, steps=steps, scheduler=scheduler, **schedule_fields(schedule))
            seconds[(scheduler, steps, schedule)] = time.perf_counter() - started
            print(f"{mode} config {scheduler} {steps} {schedule_name(schedule)}: "
                  f"{seconds[(scheduler, steps, schedule)]:.2f} s per image", flush=True)
    return seconds, calls


def plot(rows: list[dict], floor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for (scheduler, steps, branch) in sorted({(r["sampler"], r["steps"], r["branch"]) for r in rows}):
        pts = [r for r in rows if (r["sampler"], r["steps"], r["branch"]) == (scheduler, steps, branch)
               or ((r["sampler"], r["steps"]) == (scheduler, steps) and r["schedule"] is None)]
        pts.sort(key=lambda r: r["ms"])
        ax.plot([r["ms"] for r in pts], [r["fd"] for r in pts], "o-", label=f"{scheduler} {steps}, branch {branch}")
        for r in pts:
            label = "-" if r["schedule"] is None else str(r["schedule"]) if isinstance(r["schedule"], int) else "nu"
            ax.annotate(label, (r["ms"], r["fd"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(floor, color="gray", ls="--", label="floor (real vs real)")
    ax.set(xscale="log", yscale="log", xlabel="ms per digits image (batch 250, this CPU)",
           ylabel="Fréchet distance, digits16", title="feature reuse: quality vs time (labels: cache interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.reuse", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.reuse", {"torch": "export", "diffusers": "export", "matplotlib": "bench", "sklearn": "test",
                            "scipy": "test"})
    cfg = MODES[args.mode]
    started = time.time()
    seconds, calls = reference_timing(args.mode, cfg["timed"])
    rows, floor = digits_rows(cfg)
    config_name = "google/ddpm-cat-256 config" if args.mode == "full" else "quick config (64x64)"
    out = Path(args.out)
    plot(rows, floor, out / f"bench-reuse-{args.mode}.png")
    lines = [
        f"# Feature reuse (DeepCache): quality against time ({args.mode})",
        "",
        f"`python -m bench.reuse --mode {args.mode}` ({time.time() - started:.0f} s). {machine.describe()}",
        "",
        f"Quality: the shipped digits model (models/digits16, trained here), {cfg['digits_count']} images per row "
        f"(per-image seeds, numpy noise, batches of 250): Fréchet distance over `demo.quality`'s classifier features "
        f"(floor, real vs real at this count: **{floor:.2f}**), ΔFD against the same sampler and steps without reuse, "
        f"mean confidence, and the median PSNR of the final images (seeds 0..{ERROR_IMAGES - 1}, [0, 1]) against the "
        "same seeds without reuse. Speed-up: ms per digits image against no reuse, same sampler and steps. Every row "
        "samples with timestep_spacing \"linspace\". Branch 0: the shallow graph runs conv_in, the first down block, "
        "the last up block and the output head; branch 1 also the second down block and the second-to-last up block.",
        "",
        "| sampler | steps | cache schedule (full steps) | branch | Fréchet distance | ΔFD vs no reuse | mean confidence "
        "| PSNR vs no reuse, dB | ms per digits image | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['steps']} | {schedule_name(r['schedule'])} | "
                     f"{'—' if r['schedule'] is None else r['branch']} | {r['fd']:.2f} | {r['dfd']:+.2f} | "
                     f"{r['confidence']:.3f} | {'—' if r['schedule'] is None else format(r['psnr'], '.1f')} | "
                     f"{r['ms']:.2f} | {r['speedup_digits']:.2f}x |")
    lines += [
        "",
        f"Time on the {config_name} (random weights: time does not depend on them), ONNX Runtime FP32, batch 1, this "
        f"CPU; graphs at branch 0. One UNet call, median of 3: plain engine **{calls['plain']:.0f} ms**, full graph "
        f"(also outputs the feature) **{calls['full']:.0f} ms**, shallow graph **{calls['shallow']:.0f} ms** "
        f"({calls['shallow'] / calls['plain']:.0%} of a plain call).",
        "",
        "| sampler | steps | cache schedule | s per image (one image) | speed-up vs no reuse |",
        "|---|---|---|---|---|",
    ]
    for (scheduler, steps, schedule), s in seconds.items():
        base = seconds.get((scheduler, steps, None))
        lines.append(f"| {scheduler} | {steps} | {schedule_name(schedule)} | {s:.3g} | "
                     f"{'—' if base is None else f'{base / s:.2f}x'} |")
    lines += ["", f"![feature reuse: quality vs time](bench-reuse-{args.mode}.png)"]
    (out / f"bench-reuse-{args.mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.reuse"))
