"""``python -m demo.grid --engine E --out out/demo-grid.png``: a grid of samples from an engine.

``--per-class K`` (a model with class labels): one row per label, K samples each, guided with
``--guidance-scale``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from runtime import Pipeline
from runtime.cli import run, setup_logging
from runtime.errors import InputError
from runtime.images import write_png

PROG = "demo.grid"


def grid(images: np.ndarray, columns: int, scale: int, pad: int = 1) -> np.ndarray:
    """uint8 [N, H, W, C] → one uint8 [rows * (H+pad), columns * (W+pad), C] image, each upscaled ``scale``x."""
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    rows = -(-n // columns)
    out = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w] = image
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--out", default="out/demo-grid.png")
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--scheduler", default="dpmpp-2m")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=None, help="one row per class label, this many samples each")
    ap.add_argument("--guidance-scale", type=float, default=1.0, help="with --per-class (default 1: none)")
    args = ap.parse_args(argv)
    setup_logging(False)
    started = time.perf_counter()
    with Pipeline.load(args.engine) as pipe:
        conditioned = {}
        columns = int(np.ceil(np.sqrt(args.count)))
        if args.per_class:
            labels = pipe.conditioning.num_labels(pipe.runner.io)
            if labels is None:
                raise InputError(f"{args.engine} takes no class labels; drop --per-class")
            args.count, columns = labels * args.per_class, args.per_class
            conditioned = {"class_labels": np.repeat(np.arange(labels), args.per_class).tolist(),
                           "guidance_scale": args.guidance_scale}
        images = pipe(count=args.count, steps=args.steps, scheduler=args.scheduler,
                      seeds=list(range(args.seed, args.seed + args.count)), **conditioned)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = {"engine": args.engine, "scheduler": args.scheduler, "steps": str(args.steps),
            "seeds": f"{args.seed}..{args.seed + args.count - 1}"}
    if conditioned:
        text |= {"rows": "one per class label, in order", "guidance_scale": str(args.guidance_scale)}
    write_png(out, grid(images, columns=columns, scale=4), text)
    what = f", {args.per_class} per class label, guidance {args.guidance_scale:g}" if conditioned else ""
    print(f"wrote {out} ({args.count} images{what}, {args.scheduler} {args.steps} steps, {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
