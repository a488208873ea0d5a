"""``python -m bench.family --mode quick|full``: the UNet2DModel family at full size, random weights.

full: OpenAI's LSUN-256 consistency-model config (``export.reference.LSUN_256_CM_CONFIG``, consistency
training's scheduler): export peak memory and time, then seconds per image at 1 and 2 UNet calls, next
to the google/ddpm-cat-256 config's seconds per UNet call (bench's own full engine) and what DDPM-1000
and DPM-Solver++-25 images cost at that rate; and the export of a latent-diffusion folder shaped as
CompVis/ldm-celebahq-256 (UNet on 64x64x3 latents + VQ-f4 decoder to 256x256): peak memory of the
export, its two stages in their own processes. quick: the same steps on small configs (a few minutes).
Writes ``docs/bench-family-MODE.md``. Peak memory: bench.memory.run_measured (the process tree's resident
memory, sampled every 10 ms).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from . import machine
from .__main__ import measure, prepare
from .memory import run_measured
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
REPEATS = {"quick": 3, "full": 2}

# CompVis/ldm-celebahq-256: UNet2DModel's own defaults (they were written for it) on 64x64x3 latents, and its VQ-f4.
LDM_UNET = dict(sample_size=64, in_channels=3, out_channels=3)
VQ_F4 = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512), layers_per_block=2, latent_channels=3,
             down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
             num_vq_embeddings=8192, sample_size=256)


def configs(mode: str) -> dict:
    from export.reference import CT_LSUN_256_SCHEDULER, LSUN_256_CM_CONFIG, TINY_CM_CONFIG, TINY_LDM_UNET_CONFIG, TINY_VQ_CONFIG

    if mode == "full":
        return {"cm": {**LSUN_256_CM_CONFIG}, "cm_scheduler": CT_LSUN_256_SCHEDULER, "ldm_unet": LDM_UNET, "vq": VQ_F4}
    return {"cm": {**TINY_CM_CONFIG, "num_class_embeds": None, "sample_size": 64}, "cm_scheduler": CT_LSUN_256_SCHEDULER,
            "ldm_unet": TINY_LDM_UNET_CONFIG, "vq": TINY_VQ_CONFIG}


def export_measured(model: Path, out: Path) -> tuple[float, float]:
    r = run_measured([sys.executable, "-m", "export.onnx", "--model", str(model), "--out", str(out)], cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"export.onnx failed: {r.stderr.strip()[-500:]}")
    return r.peak_rss / 1e9, r.seconds


def params(folder: Path, cls: str = "UNet2DModel") -> float:
    import diffusers

    return sum(p.numel() for p in getattr(diffusers, cls).from_pretrained(folder).parameters()) / 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.family", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("quick", "full"), default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.family", {"torch": "export", "diffusers": "export", "onnx": "export"})
    from export.reference import save_ldm, save_model
    from runtime import Pipeline

    cfg, repeats = configs(args.mode), REPEATS[args.mode]
    work = Path(tempfile.mkdtemp(prefix="bench-family-"))
    rows = []
    try:
        cm = save_model(work / "cm", cfg["cm"], cfg["cm_scheduler"], scheduler_class="CMStochasticIterativeScheduler")
        cm_params = params(cm)
        gb, seconds = export_measured(cm, work / "cm_engines")
        rows.append(f"| consistency model ({cm_params:.1f}M parameters): `export.onnx` | peak RSS {gb:.2f} GB, {seconds:.0f} s |")
        print(rows[-1], flush=True)
        with Pipeline.load(work / "cm_engines" / "unet.onnx", cache_dir=None) as pipe:
            for calls in (1, 2):
                stats = measure(lambda: pipe.sample(steps=calls, seed=0), repeats)
                rows.append(f"| consistency model, {calls} UNet call(s) per image | {stats.cell(1, 's')} per image |")
                print(rows[-1], flush=True)
        _, reference = prepare(args.mode)  # bench's own google/ddpm-cat-256-config engine (random weights)
        with Pipeline.load(reference, cache_dir=None) as pipe:
            call = measure(lambda: pipe.sample(steps=1, scheduler="ddim", seed=0), repeats)
        rows.append(f"| reference config ({'ddpm-cat-256' if args.mode == 'full' else 'quick'}), one UNet call | "
                    f"{call.cell(1, 's')} |")
        for label, calls in (("DDPM 1000", 1000), ("DPM-Solver++ 2M 25", 25)):
            rows.append(f"| reference config, {label}: {calls} calls at that median | {calls * call.median:.1f} s per image |")
        ldm = save_ldm(work / "ldm", calm=None, unet_config=cfg["ldm_unet"], autoencoder_config=cfg["vq"])
        unet_params, vq_params = params(ldm / "unet"), params(ldm / "vqvae", "VQModel")
        gb, seconds = export_measured(ldm, work / "ldm_engines")
        rows.append(f"| latent diffusion folder (UNet {unet_params:.1f}M + VQ decoder of a {vq_params:.1f}M VQModel): "
                    f"`export.onnx` (UNet + decoder, gated) | peak RSS {gb:.2f} GB, {seconds:.0f} s |")
        print(rows[-1], flush=True)
        with Pipeline.load(work / "ldm_engines" / "unet.onnx", cache_dir=None) as pipe:
            full = args.mode == "full"  # one cold run there (minutes); quick: the median after a warm-up
            stats = measure(lambda: pipe.sample(steps=50, scheduler="ddim", seed=0), 1 if full else repeats, 0 if full else 1)
            rows.append(f"| latent diffusion, DDIM 50 + decode, image {'x'.join(map(str, pipe.image_shape))} | "
                        f"{stats.cell(1, 's')} per image{' (one run, no warm-up)' if full else ''} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-family-{args.mode}.md"
    path.write_text("\n".join([
        f"# The UNet2DModel family at {'full size' if args.mode == 'full' else 'quick sizes'} ({args.mode})",
        "",
        f"Machine: {machine.describe()}.",
        f"Random weights; ONNX Runtime FP32 on the CPU, batch 1, median (min–max) of {repeats} runs after a warm-up. "
        "Consistency model: OpenAI's LSUN-256 config (scripts/convert_consistency_to_diffusers.py), consistency "
        "training's scheduler (151 steps, sigma 0.002..80). Latent diffusion: CompVis/ldm-celebahq-256's shape "
        "(UNet2DModel's defaults on 64x64x3 latents, VQ-f4). Peak RSS: the process tree's resident memory "
        "(bench.memory). The DDPM-1000 and DPM-Solver++-25 rows are the measured per-call median times the call "
        "count, not runs.",
        "",
        "| what | figure |",
        "| --- | --- |",
        *rows,
        "",
    ]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.family"))
