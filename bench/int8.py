"""``python -m bench.int8 --mode quick|full``: INT8 (``export.int8``) — which layers stay FP32, quality against
FP32, and time per UNet call.

1. **Which layers stay FP32** (the shipped digits model, ``models/digits16``, trained here): for each set of kept
   groups (none, all but one, all: the default) the INT8 gate's figures — worst noise-prediction PSNR over the
   gate timesteps and the pooled image PSNR of the gate's 10-step sampling runs against FP32.
2. **Quality** of the default INT8 engine against FP32 on the digits model: Fréchet distance and mean confidence of
   ``demo.quality``'s classifier (with the real-vs-real floor), ΔFD, and the median PSNR of final images against
   FP32 with the same seeds, per sampler and step count.
3. **Time** on the reference config (``full``: google/ddpm-cat-256, random weights, calibrated on noise inputs as
   such a model needs; ``quick``: a 64x64 config): one UNet call at batch 1, median of 3 — ONNX Runtime FP32,
   the INT8 engine on this CPU's integer kernels, and the INT8 arithmetic simulated in FP32 — with each one's
   noise-prediction PSNR against FP32, and the gate's figures of the export.

On a CPU without VNNI/AMX the runtime refuses INT8; every INT8 quality figure here then comes from the simulated
arithmetic (``DDPM_DEPLOY_INT8_SIMULATE=1``: what a VNNI CPU computes up to requantization rounding), and the
integer-kernel row is timed on a raw ONNX Runtime session (its outputs saturate there: time only). Writes
``docs/bench-int8-MODE.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import machine
from .samplers import ERROR_IMAGES, SPACING, digits_engine, error, timed_images
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench" / "int8"
MODES = {
    "quick": {"digits_count": 500, "digits": [("dpmpp-2m", 25), ("unipc-3m", 8)]},
    "full": {"digits_count": 1000, "digits": [("dpmpp-2m", 25), ("dpmpp-2m", 10), ("unipc-3m", 8), ("unipc-3m", 5)]},
}


def fresh_copy(engine: Path, folder: Path) -> Path:
    """``folder`` with only ``engine`` and its manifest (an earlier run's INT8 entry goes)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy2(engine, folder / engine.name)
    shutil.copy2(engine.parent / "manifest.json", folder / "manifest.json")
    return folder / engine.name


def keep_sets() -> list[tuple[str, tuple[str, ...]]]:
    from export.int8 import GROUPS

    return [("none", ())] + [(f"all but {g}", tuple(x for x in GROUPS if x != g)) for g in GROUPS] + [("all (default)", GROUPS)]


def sensitivity(engine: Path) -> list[dict]:
    """The gate's figures (thresholds off) for each set of kept groups, one calibration for all."""
    from export.child import call_in_child
    from export.gates import accuracy_gate
    from export.int8 import INT8_GATE_IMAGES, Calibration, calibration_rows, quantize_file
    from runtime.manifest import ArtifactEntry, verify_artifact
    from runtime.runners import RunnerOptions
    from runtime.runners.ort import OrtRunner

    manifest, entry = verify_artifact(engine)
    rows = calibration_rows(engine, manifest, entry, Calibration())
    cpu, out = RunnerOptions(device="cpu"), []
    WORK.mkdir(parents=True, exist_ok=True)
    for label, keep in keep_sets():
        path = WORK / "sensitivity.onnx"
        quantized = call_in_child("the INT8 quantization", quantize_file, engine, path, rows, keep)
        candidate = ArtifactEntry(kind="onnx", precision="int8", sha256="0" * 64, bytes=path.stat().st_size)
        gate = accuracy_gate(OrtRunner(engine, manifest.io, entry, cpu), OrtRunner(path, manifest.io, candidate, cpu),
                             manifest, "INT8", 0.0, 0.0, INT8_GATE_IMAGES)
        out.append({"label": label, "quantized": quantized["quantized_nodes"],
                    "kept": sum(map(len, quantized["kept"].values())),
                    "noise": min(r["psnr_db"] for r in gate["noise_prediction"]), "image": gate["sampling"]["image_psnr_db"],
                    "worst_image": min(gate["sampling"]["per_image_psnr_db"])})
        print(f"digits, kept FP32: {label}: {out[-1]}", flush=True)
    return out


def digits_quality(cfg: dict, int8: Path) -> tuple[list[dict], float]:
    from demo import digits
    from demo.quality import Classifier, frechet, to_model_range
    from runtime import Pipeline

    clf = Classifier()
    ref = clf.features(digits.load("a")[0])
    count = cfg["digits_count"]
    floor = frechet(clf.features(digits.load("b")[0][:count]), ref)
    rows, fp32_final = [], {}
    for precision, engine in (("FP32", int8.parent / "unet.onnx"), ("INT8", int8)):
        with Pipeline.load(engine, device="cpu", cache_dir=None) as pipe:
            pipe.scheduler_config = {**pipe.scheduler_config, **SPACING}
            for scheduler, steps in cfg["digits"]:
                fields = dict(steps=steps, scheduler=scheduler)
                pipe(count=2, seeds=[0, 1], **fields)  # warm-up
                generated, seconds = timed_images(pipe, count, **fields)
                ms, x = seconds * 1e3, to_model_range(generated)
                final = pipe.denoise(count=ERROR_IMAGES, seeds=list(range(ERROR_IMAGES)), **fields)
                fp32_final.setdefault((scheduler, steps), final)
                rows.append({"precision": precision, "sampler": scheduler, "steps": steps, "ms": ms,
                             "fd": frechet(clf.features(x), ref), "confidence": float(clf.probabilities(x).max(1).mean()),
                             "psnr": error(final, fp32_final[(scheduler, steps)])[1] if precision == "INT8" else float("inf")})
                print(f"digits {precision} {scheduler} {steps}: FD {rows[-1]['fd']:.2f}, PSNR vs FP32 {rows[-1]['psnr']:.1f} dB, "
                      f"{ms:.2f} ms/image", flush=True)
    fp32 = {(r["sampler"], r["steps"]): r for r in rows if r["precision"] == "FP32"}
    for r in rows:
        r["dfd"] = r["fd"] - fp32[(r["sampler"], r["steps"])]["fd"]
    return rows, floor


def reference_timing(mode: str, int8: Path) -> dict[str, dict]:
    """Per-call ms (median of 3, batch 1) and noise-prediction PSNR vs FP32 at the gate timesteps of FP32, the INT8
    integer kernels (a raw session: no refusal) and the simulated INT8 arithmetic, on the reference config."""
    import onnxruntime as ort

    from export.gates import accuracy_timesteps, psnr
    from runtime.manifest import read_manifest
    from runtime.runners.ort import SIMULATE_INT8, session_options

    manifest = read_manifest(int8.parent / "manifest.json")
    io = manifest.io
    ts = accuracy_timesteps(manifest)
    x = np.random.default_rng(0).standard_normal(io.sample.concrete(len(ts)), dtype=np.float32)

    def session(path: Path, config: dict) -> ort.InferenceSession:
        options = session_options()
        for key, value in config.items():
            options.add_session_config_entry(key, value)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    results, reference = {}, None
    for name, path, config in (("FP32", int8.parent / "unet.onnx", {}), ("INT8 integer kernels", int8, {}),
                               ("INT8 simulated in FP32", int8, SIMULATE_INT8)):
        s = session(path, config)
        preds = np.concatenate([s.run(["noise_pred"], {"sample": x[i:i + 1], "timestep": ts[i:i + 1]})[0]
                                for i in range(len(ts))])
        times = []
        for _ in range(3):
            started = time.perf_counter()
            s.run(["noise_pred"], {"sample": x[:1], "timestep": ts[:1]})
            times.append(time.perf_counter() - started)
        reference = preds if reference is None else reference
        results[name] = {"ms": statistics.median(times) * 1e3,
                         "psnr": min(psnr(reference[i], preds[i]) for i in range(len(ts))) if name != "FP32" else float("inf")}
        print(f"{mode} config {name}: {results[name]['ms']:.0f} ms per call, worst noise PSNR {results[name]['psnr']:.1f} dB",
              flush=True)
        del s
    return results


def export_int8(engine: Path, folder: Path, *args: str) -> tuple[Path, dict, float]:
    from export.int8 import main as int8_main
    from runtime.manifest import read_manifest

    int8 = fresh_copy(engine, folder).with_name("unet.int8.onnx")
    started = time.perf_counter()
    assert int8_main(["--engines", str(folder), *args]) == 0
    return int8, read_manifest(folder / "manifest.json").artifact(int8.name).build, time.perf_counter() - started


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.int8", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.int8", {"torch": "export", "diffusers": "export", "onnx": "export", "sklearn": "test", "scipy": "test"})
    from runtime.cpu import INT8_SIMULATE_ENV, SIMULATED, int8_arithmetic

    os.environ[INT8_SIMULATE_ENV] = "1"  # changes nothing on a VNNI/AMX CPU
    arithmetic = int8_arithmetic()
    cfg = MODES[args.mode]
    started = time.time()
    from .__main__ import prepare

    _, reference_engine = prepare(args.mode)
    ref_int8, ref_build, ref_export_s = export_int8(reference_engine, WORK / args.mode, "--calibration", "noise")
    timing = reference_timing(args.mode, ref_int8)
    digits_int8, digits_build, digits_export_s = export_int8(digits_engine(), WORK / "digits")
    kept = sensitivity(digits_engine())
    rows, floor = digits_quality(cfg, digits_int8)

    simulated = arithmetic == SIMULATED
    how = ("**simulated** (this CPU has no VNNI/AMX: the quantized arithmetic computed in FP32, "
           "`DDPM_DEPLOY_INT8_SIMULATE=1`)" if simulated else f"ONNX Runtime's integer kernels on this CPU ({arithmetic})")
    config_name = "google/ddpm-cat-256 config" if args.mode == "full" else "quick config (64x64)"

    def gate_line(build: dict, seconds: float) -> str:
        gate, q = build["gate"], build["quantization"]
        c = q["calibration"]
        source = f"{c['images']} {c['sampler']} images x {c['steps']} steps" if c["source"] == "sampler" else "noise inputs"
        return (f"{q['quantized_nodes']} layers INT8, kept FP32: "
                f"{', '.join(f'{g} ({len(n)})' for g, n in q['kept_fp32'].items())}; calibration: {source}, "
                f"{c['rows']} rows, {c['method']}; "
                f"gate: worst noise-prediction PSNR **{min(r['psnr_db'] for r in gate['noise_prediction']):.1f} dB**, "
                f"{gate['sampling']['images']} 10-step images pooled **{gate['sampling']['image_psnr_db']:.1f} dB** "
                f"(arithmetic: {build['gate_arithmetic']}); export {seconds:.0f} s")

    lines = [
        f"# INT8 (ONNX Runtime static QDQ): layers, quality, time ({args.mode})",
        "",
        f"`python -m bench.int8 --mode {args.mode}` ({time.time() - started:.0f} s). {machine.describe()}",
        "",
        f"INT8 quality figures: {how}.",
        "",
        "## Which layers stay FP32 (digits model, the INT8 gate's figures)",
        "",
        "One calibration (4 dpmpp-2m images of 10 steps, the export's default) for every row; the gate's inputs: noise "
        "predictions at 8 timesteps over the schedule, and 8 DDPM 10-step images (seeds 0..7) pooled into one PSNR.",
        "",
        "| kept FP32 | layers INT8 / kept | worst noise-prediction PSNR, dB | image PSNR, 8 pooled, dB | worst single image, dB |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {k['label']} | {k['quantized']} / {k['kept']} | {k['noise']:.1f} | {k['image']:.1f} | {k['worst_image']:.1f} |"
              for k in kept]
    lines += [
        "",
        f"The default export of the digits model: {gate_line(digits_build, digits_export_s)}.",
        "",
        "## Quality against FP32 (digits model)",
        "",
        f"{cfg['digits_count']} images per row (per-image seeds, numpy noise, batches of 250, timestep_spacing "
        f"\"linspace\"): Fréchet distance over `demo.quality`'s classifier features (floor, real vs real at this count: "
        f"**{floor:.2f}**), ΔFD against FP32 with the same sampler and steps, mean confidence, and the median PSNR of the "
        f"final images (seeds 0..{ERROR_IMAGES - 1}, [0, 1]) against FP32's. ms per image: batch 250, this CPU"
        + (" (INT8 simulated: slower than FP32 by construction, not a speed)" if simulated else "") + ".",
        "",
        "| precision | sampler | steps | Fréchet distance | ΔFD vs FP32 | mean confidence | PSNR vs FP32, dB | ms per digits image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['precision']} | {r['sampler']} | {r['steps']} | {r['fd']:.2f} | {r['dfd']:+.2f} | {r['confidence']:.3f} | "
              f"{'—' if r['precision'] == 'FP32' else format(r['psnr'], '.1f')} | {r['ms']:.2f} |" for r in rows]
    lines += [
        "",
        f"## Time per UNet call ({config_name})",
        "",
        f"Random weights (time does not depend on them), calibrated on noise inputs (`--calibration noise`: a random "
        f"model's sampled trajectories are degenerate). The export: {gate_line(ref_build, ref_export_s)}. One call at "
        "batch 1, median of 3, 2 threads; PSNR: the worst over the gate's 8 timesteps against FP32."
        + (" On this CPU the integer kernels add 8-bit products in 16 bits and saturate: their PSNR shows it, their "
           "time is the integer kernels' speed on AVX2, not a usable engine's." if simulated else ""),
        "",
        "| engine | ms per call | speed-up vs FP32 | worst noise-prediction PSNR, dB |",
        "|---|---|---|---|",
    ]
    base = timing["FP32"]["ms"]
    lines += [f"| {name} | {t['ms']:.0f} | {base / t['ms']:.2f}x | {'—' if name == 'FP32' else format(t['psnr'], '.1f')} |"
              for name, t in timing.items()]
    out = Path(args.out)
    (out / f"bench-int8-{args.mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.int8"))
