"""``python -m demo.edit --engine E --out-dir out``: image inputs on the digits model, as pictures.

* ``demo-inpaint-grid.png``: real digits (scikit-learn's, one per class) with their bottom halves masked out and
  completed by RePaint: the first row the originals, the second what the model is given (the bottom half gray),
  then one row per seed of completions.
* ``demo-img2img-strip.png``: the same digits through image-to-image (DDIM) at rising strengths: one row per
  strength, from the original (strength 0, drawn as given) to 1 (noise alone decides)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from demo.grid import grid
from runtime import Pipeline
from runtime.cli import run, setup_logging
from runtime.errors import InputError
from runtime.images import write_png

PROG = "demo.edit"
STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)


def source_digits() -> np.ndarray:
    """One real digit per class, 0..9, as uint8 [10, 16, 16, 1] (the first of each in scikit-learn's set)."""
    from demo.digits import load

    images, labels = load()
    first = [int(np.flatnonzero(labels == d)[0]) for d in range(10)]
    return np.round((images[first].transpose(0, 2, 3, 1) + 1) / 2 * 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--out-dir", default="out")
    ap.add_argument("--seeds", type=int, default=3, help="rows of completions (default 3)")
    ap.add_argument("--steps", type=int, default=50, help="RePaint's and DDIM's steps (default 50)")
    args = ap.parse_args(argv)
    setup_logging(False)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    digits = source_digits()
    n, h = len(digits), digits.shape[1]
    mask = np.zeros((h, digits.shape[2]), np.uint8)
    mask[: h // 2] = 255  # white keeps: the top half is given
    with Pipeline.load(args.engine) as pipe:
        if pipe.image_shape != digits.shape[1:]:
            raise InputError(f"{args.engine} makes {pipe.image_shape} images; the demo digits are {digits.shape[1:]}")
        completions = [pipe(count=n, image=digits, mask_image=mask, steps=args.steps, jump_length=5, jump_n_sample=3,
                            seeds=list(range(seed * n, (seed + 1) * n))) for seed in range(args.seeds)]
        strip = [pipe(count=n, image=digits, strength=s, scheduler="ddim", steps=args.steps, seeds=list(range(n)))
                 for s in STRENGTHS]
    given = digits.copy()
    given[:, h // 2:] = 128
    inpaint = out / "demo-inpaint-grid.png"
    write_png(inpaint, grid(np.concatenate([digits, given, *completions]), columns=n, scale=4),
              {"engine": args.engine, "rows": f"originals, given (top halves), {args.seeds} seeds of RePaint completions",
               "sampler": f"repaint {args.steps} steps, jump_length 5, jump_n_sample 3"})
    img2img = out / "demo-img2img-strip.png"
    write_png(img2img, grid(np.concatenate([digits, *strip]), columns=n, scale=4),
              {"engine": args.engine, "rows": "originals, then strength " + ", ".join(map(str, STRENGTHS)),
               "sampler": f"ddim {args.steps} steps"})
    print(f"wrote {inpaint} and {img2img} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
