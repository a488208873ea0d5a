"""``python -m demo.quality``: image quality of the shipped model, measured with a digits classifier.

A small MLP classifier (scikit-learn) is trained on half of the real digits (split "a") and checked on
the other half (split "b"). Its hidden-layer activations are the features for a Fréchet distance
(as FID does with Inception features): generated images against the real set, beside a floor (real
split "b" against real split "a": what two samples of the true distribution score) and a ceiling
(pure Gaussian noise images, and the untrained model's samples). Also the mean top-class confidence
and the class histogram of the generated images. Writes ``docs/quality.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import digits
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("ddpm", 1000), ("ddim", 50), ("ddim", 20), ("ddim", 10), ("dpmpp-2m", 25), ("dpmpp-2m", 10)]
DDPM_COUNT = 200  # DDPM's 1000 steps cost 18 min per 1000 images per engine on 2 cores: fewer, with their own floor


class Classifier:
    """MLP on 16x16 digits; ``features`` are its hidden activations (ReLU), 64 of them."""

    def __init__(self, seed: int = 0):
        from sklearn.neural_network import MLPClassifier

        x, y = digits.load("a")
        self.mlp = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=600, random_state=seed).fit(self._flat(x), y)
        xb, yb = digits.load("b")
        self.accuracy = float((self.mlp.predict(self._flat(xb)) == yb).mean())

    @staticmethod
    def _flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float64)

    def features(self, images: np.ndarray) -> np.ndarray:
        h = self._flat(images)
        for w, b in zip(self.mlp.coefs_[:-1], self.mlp.intercepts_[:-1]):
            h = np.maximum(h @ w + b, 0)
        return h

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.mlp.predict_proba(self._flat(images))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def to_model_range(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 1] as the runtime returns them → [N, 1, H, W] in [-1, 1] (what the classifier saw)."""
    return (images_u8.astype(np.float32) / 255.0 * 2 - 1).transpose(0, 3, 1, 2)


def sample(engine: Path, scheduler: str, steps: int, count: int, batch: int = 250, seed: int = 0) -> tuple[np.ndarray, float]:
    from runtime import Pipeline

    with Pipeline.load(engine, device="cpu") as pipe:
        out, started = [], time.perf_counter()
        for start in range(0, count, batch):
            n = min(batch, count - start)
            out.append(pipe(count=n, steps=steps, scheduler=scheduler, seeds=list(range(seed + start, seed + start + n))))
        return np.concatenate(out), (time.perf_counter() - started) / count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="demo.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=str(ROOT / "build" / "demo" / "engines"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "docs" / "quality.md"))
    args = ap.parse_args(argv)
    require("demo.quality", {"sklearn": "test", "scipy": "test"})
    engines = Path(args.engines)
    clf = Classifier()
    real_a, _ = digits.load("a")
    real_b, _ = digits.load("b")
    ref = clf.features(real_a)
    rows = []

    def row(label, images, seconds=None):
        p = clf.probabilities(images)
        hist = np.bincount(p.argmax(1), minlength=10)
        rows.append((label, frechet(clf.features(images), ref), float(p.max(1).mean()), hist, seconds))
        print(f"{label}: FD {rows[-1][1]:.2f}, confidence {rows[-1][2]:.3f}", flush=True)

    row("floor: real split b (held out) vs real split a", real_b)
    row(f"floor at {DDPM_COUNT} images: {DDPM_COUNT} of real split b vs real split a", real_b[:DDPM_COUNT])
    row("ceiling: Gaussian noise images", np.clip(np.random.default_rng(0).standard_normal(real_b.shape), -1, 1).astype(np.float32))
    for name in ("unet.onnx", "unet.fp16.onnx"):
        if not (engines / name).is_file():
            print(f"{engines / name} missing; run `make demo` first", file=sys.stderr)
            continue
        for scheduler, steps in RUNS:
            count = min(args.count, DDPM_COUNT) if scheduler == "ddpm" else args.count
            images, seconds = sample(engines / name, scheduler, steps, count)
            row(f"{name}, {scheduler} {steps} steps ({count} images)", to_model_range(images), seconds)
    lines = [
        "# Demo model quality",
        "",
        f"Classifier: MLP (128, 64) on real split a, accuracy {clf.accuracy:.3f} on real split b. Fréchet distance "
        f"over its 64 hidden features against real split a ({len(real_a)} images); {args.count} generated images per "
        f"row ({DDPM_COUNT} for DDPM's 1000 steps, compared with the floor at that size: the statistic grows as samples "
        "shrink), per-image seeds 0..N-1, numpy noise, ONNX Runtime on this CPU, batches of 250. Lower is better; the "
        "floor is what a second sample of real digits scores, the ceiling what noise scores. s per image: wall time "
        "of the run / images.",
        "",
        "| images | Fréchet distance | mean confidence | class histogram 0–9 | s per image |",
        "|---|---|---|---|---|",
    ]
    for label, fd, conf, hist, seconds in rows:
        lines.append(f"| {label} | {fd:.2f} | {conf:.3f} | {' '.join(str(int(h)) for h in hist)} | "
                     f"{'—' if seconds is None else f'{seconds:.4f}'} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "demo.quality"))
