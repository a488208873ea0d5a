"""``python -m runtime.sample``: sample images from an exported UNet engine, with no torch in the process."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from .cli import ArgumentParser, run, setup_logging
from .errors import InputError
from .images import make_output_dir, png_metadata, prepare_output_dir, write_png
from .noise import MAX_SEED, NOISE_KINDS
from .schedulers import SCHEDULERS, default_steps_help
from .pipeline import Pipeline

PROG = "runtime.sample"

def _int_in(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError from None
        if value < lo or (hi is not None and value > hi):
            raise ValueError
        return value

    parse.__name__ = f"whole number >= {lo}" if hi is None else f"whole number in {lo}..{hi}"
    return parse


def _eta(text: str) -> float:
    value = float(text)  # ValueError → argparse's one-line error
    if not 0 <= value < float("inf"):
        raise ValueError
    return value


_eta.__name__ = "number >= 0"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--engine", required=True, help="engines/unet.onnx (or .plan); its manifest.json must sit beside it")
    p.add_argument("--batch", type=_int_in(1), default=1, help="images to sample in one batch (default 1)")
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=None,
        help="sampler (default: the scheduler config's own, DDPM for the reference model)",
    )
    p.add_argument(
        "--steps", type=_int_in(1), default=None, help=f"inference steps (default: {default_steps_help()})"
    )
    p.add_argument("--eta", type=_eta, default=0.0, help="DDIM noise scale, >= 0 (default 0: deterministic)")
    p.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="seed (default 0)")
    p.add_argument(
        "--per-image-seeds",
        action="store_true",
        help="give image i its own generator seeded SEED+i, so an image does not depend on its batch",
    )
    p.add_argument(
        "--noise",
        choices=NOISE_KINDS,
        default="numpy",
        help="numpy (fast, default) or torch (reproduces torch.manual_seed(SEED) as diffusers' pipelines use it)",
    )
    p.add_argument("--out", default="out", help="folder for the PNGs (created if missing; default out/)")
    p.add_argument("--prefix", default="ddpm_", help="file name prefix (default ddpm_)")
    p.add_argument("--scheduler-config", default=None, help="a diffusers scheduler_config.json overriding the manifest's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ONNX Runtime device (default auto)")
    p.add_argument("--threads", type=_int_in(1), default=None, help="intra-op threads (default: usable cores)")
    p.add_argument(
        "--cache-dir",
        default="auto",
        help="per-machine cache of optimized engines (default: $DDPM_DEPLOY_CACHE_DIR or ~/.cache/ddpm-deploy)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use or write the engine cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    out = prepare_output_dir(args.out)
    seeds = [args.seed + i for i in range(args.batch)] if args.per_image_seeds else None
    if seeds and seeds[-1] > MAX_SEED:
        raise InputError(f"--seed {args.seed} with --per-image-seeds needs seeds up to {seeds[-1]}, above {MAX_SEED}")
    cache_dir = None if args.no_cache else args.cache_dir
    with Pipeline.load(args.engine, args.scheduler_config, device=args.device, threads=args.threads, cache_dir=cache_dir) as pipe:
        _, table = pipe.table(args.scheduler, args.steps, args.eta)  # validates before any work
        pipe.check_batch(args.batch)
        make_output_dir(out)
        bar = tqdm(total=table.num_steps, desc="sampling", unit="step", file=sys.stderr, disable=args.quiet)
        started = time.perf_counter()
        try:
            images = pipe.sample(
                batch=args.batch,
                steps=args.steps,
                scheduler=args.scheduler,
                eta=args.eta,
                seed=args.seed,
                seeds=seeds,
                noise=args.noise,
                progress=lambda done, total: bar.update(1),
            )
        finally:
            bar.close()
        elapsed = time.perf_counter() - started
        paths = []
        for i, image in enumerate(images):
            path = out / f"{args.prefix}{i:04d}.png"
            write_png(path, image, png_metadata(table, args.eta, args.seed, seeds, i, args.noise, Path(args.engine).name,
                                                pipe.engine_sha256))
            paths.append(path)
    print(
        f"wrote {len(paths)} image(s) to {out}/ in {elapsed:.2f} s "
        f"({elapsed / table.num_steps:.4f} s/step, {table.num_steps} {table.config.scheduler} steps, batch {args.batch})"
    )
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
