"""``python -m runtime.sample``: sample images from an exported UNet engine, with no torch in the process."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .cli import ArgumentParser, run, setup_logging, whole_number
from .images import make_output_dir, prepare_output_dir, write_png
from .pipeline import Pipeline
from .requests import SampleRequest
from .selection import PRECISIONS

PROG = "runtime.sample"

def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--engine", required=True, help="engines/unet.onnx (or .plan, .ov.xml; its manifest.json must sit "
                   "beside it), or an engines folder: its engine of --precision runs")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="with an engines folder: auto (default: the fastest engine `python -m export.cpu` timed on this "
                        "CPU, else FP32) or that precision's engine")
    SampleRequest.add_arguments(p)  # --count (--batch), --seed, --steps, --scheduler, ...: the request's fields
    p.add_argument("--out", default="out", help="folder for the PNGs (created if missing; default out/)")
    p.add_argument("--prefix", default="ddpm_", help="file name prefix (default ddpm_)")
    p.add_argument("--scheduler-config", default=None, help="a diffusers scheduler_config.json overriding the manifest's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ONNX Runtime device (default auto)")
    p.add_argument("--threads", type=whole_number(1), default=None, help="intra-op threads (default: usable cores)")
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
    request = SampleRequest.from_args(args)
    out = prepare_output_dir(args.out)
    cache_dir = None if args.no_cache else args.cache_dir
    with Pipeline.load(args.engine, args.scheduler_config, device=args.device, threads=args.threads, cache_dir=cache_dir,
                       precision=args.precision) as pipe:
        trajectory = pipe.trajectory(request)  # checks the request against the engine before any work
        make_output_dir(out)
        bar = tqdm(total=trajectory.num_steps, desc="sampling", unit="step", file=sys.stderr, disable=args.quiet)
        started = time.perf_counter()
        try:
            result = pipe.generate(request, progress=lambda done, total: bar.update(1))
        finally:
            bar.close()
        elapsed = time.perf_counter() - started
        paths = []
        for i, image in enumerate(result.images):
            path = out / f"{args.prefix}{i:04d}.png"
            write_png(path, image, result.png_metadata(i))
            paths.append(path)
    settings = result.settings
    print(
        f"wrote {len(paths)} image(s) to {out}/ in {elapsed:.2f} s "
        f"({elapsed / settings.steps:.4f} s/step, {settings.steps} {settings.scheduler} steps, count {request.count})"
    )
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
