"""``python -m demo.grid --engine E --out out/demo-grid.png``: a grid of samples from an engine."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from runtime import Pipeline
from runtime.cli import run, setup_logging
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
    args = ap.parse_args(argv)
    setup_logging(False)
    started = time.perf_counter()
    with Pipeline.load(args.engine) as pipe:
        images = pipe(count=args.count, steps=args.steps, scheduler=args.scheduler,
                      seeds=list(range(args.seed, args.seed + args.count)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_png(out, grid(images, columns=int(np.ceil(np.sqrt(args.count))), scale=4),
              {"engine": args.engine, "scheduler": args.scheduler, "steps": str(args.steps), "seeds": f"{args.seed}..{args.seed + args.count - 1}"})
    print(f"wrote {out} ({args.count} images, {args.scheduler} {args.steps} steps, {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
