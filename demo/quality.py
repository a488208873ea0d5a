"""``python -m demo.quality``: image quality of the shipped model, measured with a digits classifier.

A small MLP classifier (scikit-learn) is trained on half of the real digits (split "a") and checked on
the other half (split "b"). Its hidden-layer activations are the features for a Fréchet distance
(as FID does with Inception features): generated images against the real set, beside a floor (real
split "b" against real split "a": what two samples of the true distribution score) and a ceiling
(pure Gaussian noise images, and the untrained model's samples). Also the mean top-class confidence
and the class histogram of the generated images. Writes ``docs/quality.md``.

The conditional model (``models/digits16-cond``, ``--conditional-engines``): per sampler and guidance
scale, ``--count`` images asked for in equal shares of the ten digits; class accuracy (the classifier's
agreement with the requested digit), Fréchet distance, s per image; and its FP16 engine against FP32
(``fp16_holds``: accuracy within 1 percentage point, FD within the margin the FP16 test uses).
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
COND_RUNS = [("ddim", 20), ("dpmpp-2m", 20)]
GUIDANCE_SCALES = (1.0, 2.0, 4.0)
FP16_MAX_ACCURACY_DROP = 0.01  # one percentage point


def fd_margin(fd_fp32: float, floor: float) -> float:
    """How far FP16's Fréchet distance may exceed FP32's: 10 % of it or the floor (two real samples' score),
    whichever is larger (tests/test_demo_model.py)."""
    return max(0.1 * fd_fp32, floor)


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


def sample(engine: Path, scheduler: str, steps: int, count: int, batch: int = 250, seed: int = 0,
           labels: np.ndarray | None = None, guidance_scale: float = 1.0) -> tuple[np.ndarray, float]:
    """uint8 images and seconds per image; ``labels``: each image's class label (a conditional model)."""
    from runtime import Pipeline

    with Pipeline.load(engine, device="cpu") as pipe:
        out, started = [], time.perf_counter()
        for start in range(0, count, batch):
            n = min(batch, count - start)
            conditioned = {} if labels is None else {"class_labels": labels[start:start + n].tolist(),
                                                      "guidance_scale": guidance_scale}
            out.append(pipe(count=n, steps=steps, scheduler=scheduler, seeds=list(range(seed + start, seed + start + n)),
                            **conditioned))
        return np.concatenate(out), (time.perf_counter() - started) / count


def digit_labels(count: int) -> np.ndarray:
    """``count`` requested digits in equal shares, 0 1 2 ... 9 0 1 ... (each batch holds every digit)."""
    return np.arange(count) % 10


def conditional_quality(clf: Classifier, ref: np.ndarray, floor: float, engines: Path, count: int,
                        runs=COND_RUNS, scales=GUIDANCE_SCALES) -> list[dict]:
    """Per engine, sampler and guidance scale: class accuracy, FD, confidence, s per image; FP16 rows say
    whether they hold against FP32."""
    labels = digit_labels(count)
    rows = []
    for name in ("unet.onnx", "unet.fp16.onnx"):
        if not (engines / name).is_file():
            print(f"{engines / name} missing; run `make demo` first", file=sys.stderr)
            continue
        for scheduler, steps in runs:
            for scale in scales:
                images, seconds = sample(engines / name, scheduler, steps, count, labels=labels, guidance_scale=scale)
                x = to_model_range(images)
                p = clf.probabilities(x)
                row = {"engine": name, "scheduler": scheduler, "steps": steps, "guidance_scale": scale,
                       "accuracy": float((p.argmax(1) == labels).mean()), "fd": frechet(clf.features(x), ref),
                       "confidence": float(p.max(1).mean()), "seconds": seconds}
                if name != "unet.onnx":
                    base = next((r for r in rows if r["engine"] == "unet.onnx" and r["scheduler"] == scheduler
                                 and r["guidance_scale"] == scale), None)
                    if base is not None:
                        row["fp16_holds"] = bool(base["accuracy"] - row["accuracy"] <= FP16_MAX_ACCURACY_DROP
                                                 and row["fd"] <= base["fd"] + fd_margin(base["fd"], floor))
                rows.append(row)
                print(f"{name} {scheduler} {steps} guidance {scale:g}: accuracy {row['accuracy']:.3f}, FD {row['fd']:.2f}",
                      flush=True)
    return rows


def unconditional_report(clf: Classifier, ref: np.ndarray, real_a: np.ndarray, real_b: np.ndarray, engines: Path,
                         count: int) -> list[str]:
    """docs/quality.md: the unconditional model's samplers against the floor and ceiling."""
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
            n = min(count, DDPM_COUNT) if scheduler == "ddpm" else count
            images, seconds = sample(engines / name, scheduler, steps, n)
            row(f"{name}, {scheduler} {steps} steps ({n} images)", to_model_range(images), seconds)
    lines = [
        "# Demo model quality",
        "",
        f"Classifier: MLP (128, 64) on real split a, accuracy {clf.accuracy:.3f} on real split b. Fréchet distance "
        f"over its 64 hidden features against real split a ({len(real_a)} images); {count} generated images per "
        f"row ({DDPM_COUNT} for DDPM's 1000 steps, compared with the floor at that size: the statistic grows as samples "
        "shrink), per-image seeds 0..N-1, numpy noise, ONNX Runtime on this CPU, batches of 250. Lower is better; the "
        "floor is what a second sample of real digits scores, the ceiling what noise scores. s per image: wall time "
        "of the run / images. The conditional model: [quality-conditional.md](quality-conditional.md).",
        "",
        "| images | Fréchet distance | mean confidence | class histogram 0–9 | s per image |",
        "|---|---|---|---|---|",
    ]
    for label, fd, conf, hist, seconds in rows:
        lines.append(f"| {label} | {fd:.2f} | {conf:.3f} | {' '.join(str(int(h)) for h in hist)} | "
                     f"{'—' if seconds is None else f'{seconds:.4f}'} |")
    return lines


def conditional_report(clf: Classifier, ref: np.ndarray, real_b: np.ndarray, engines: Path, count: int) -> tuple[list[str], bool]:
    """docs/quality-conditional.md, and whether the FP16 engine holds against FP32 in every row."""
    floor = frechet(clf.features(real_b), ref)
    floor_n = frechet(clf.features(real_b[:count]), ref)
    cond = conditional_quality(clf, ref, floor_n, engines, count)
    lines = [
        "# Conditional demo model quality (models/digits16-cond)",
        "",
        f"{count} images per row, asked for in equal shares of the digits 0–9 (`class_labels`, which the model's "
        "label table turns into its cross-attention condition), per-image seeds 0..N-1, numpy noise, ONNX Runtime "
        "on this CPU, batches of 250 images. Guidance 1 is unguided (one UNet row per image); above 1, classifier-free "
        "guidance (two rows per image: the null embedding's and the digit's). Class accuracy: the classifier's "
        f"agreement with the requested digit (the classifier of docs/quality.md: {clf.accuracy:.3f} on real digits). "
        f"Fréchet distance over its features against real split a; floor (real split b): {floor:.2f}, at {count} "
        f"images: {floor_n:.2f}. FP16 holds: class accuracy within {FP16_MAX_ACCURACY_DROP * 100:.0f} percentage "
        "point of FP32's and FD within max(10 % of FP32's, the floor at this size).",
        "",
        "| engine | sampler | guidance scale | class accuracy | Fréchet distance | mean confidence | s per image | FP16 holds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in cond:
        holds = {True: "yes", False: "**no**"}.get(r.get("fp16_holds"), "—")
        lines.append(f"| {r['engine']} | {r['scheduler']} {r['steps']} | {r['guidance_scale']:g} | {r['accuracy']:.3f} | "
                     f"{r['fd']:.2f} | {r['confidence']:.3f} | {r['seconds']:.4f} | {holds} |")
    return lines, all(r.get("fp16_holds", True) for r in cond)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="demo.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default=str(ROOT / "build" / "demo" / "engines"))
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--conditional-engines", default=str(ROOT / "build" / "demo" / "cond-engines"),
                    help="the conditional model's engines (skipped when absent)")
    ap.add_argument("--conditional-count", type=int, default=500, help="images per conditional row (default 500)")
    ap.add_argument("--only", choices=("unconditional", "conditional"), default=None, help="measure one model only")
    ap.add_argument("--out", default=str(ROOT / "docs" / "quality.md"))
    ap.add_argument("--conditional-out", default=str(ROOT / "docs" / "quality-conditional.md"))
    args = ap.parse_args(argv)
    require("demo.quality", {"sklearn": "test", "scipy": "test"})
    from runtime.cpu import cpu_generation, cpu_model

    machine = f"Measured on {cpu_model()} ({cpu_generation()}), {time.strftime('%Y-%m-%d')}."
    clf = Classifier()
    real_a, _ = digits.load("a")
    real_b, _ = digits.load("b")
    ref = clf.features(real_a)
    held = True
    reports = []
    if args.only != "conditional":
        reports.append((Path(args.out), unconditional_report(clf, ref, real_a, real_b, Path(args.engines), args.count)))
    cond_engines = Path(args.conditional_engines)
    if args.only != "unconditional":
        if (cond_engines / "unet.onnx").is_file():
            lines, held = conditional_report(clf, ref, real_b, cond_engines, args.conditional_count)
            reports.append((Path(args.conditional_out), lines))
        else:
            print(f"{cond_engines / 'unet.onnx'} missing; run `make demo` first", file=sys.stderr)
    for path, lines in reports:
        path.write_text("\n".join([*lines, "", machine]) + "\n")
        print("\n".join(lines))
    if not held:
        print("demo.quality: the conditional model's FP16 engine does not hold against FP32 (see the table)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "demo.quality"))
