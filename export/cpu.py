"""``python -m export.cpu --engines DIR``: builds and gates what this CPU runs best, times each engine here, and
records the times in the manifest, so that ``--precision auto`` (the default with an engines folder) runs the fastest.

Next to the FP32 ``unet.onnx``: the OpenVINO BF16 engine (``export.bf16``) where the CPU has BF16 units
(AVX512_BF16 or AMX), and the INT8 engines (``export.int8``: ONNX Runtime's, and OpenVINO's where OpenVINO and NNCF
are installed) where it has VNNI or AMX; each with its own gate, and with the folder's feature-reuse graphs converted
and gated with it (the OpenVINO INT8 engine serves no cache schedule). Engines already built are kept. A precision
the CPU has no units for, or whose gate refuses the model, is left out with one line saying why: FP32 always runs.

Then each CPU engine of the folder (FP32, BF16, INT8) is timed at ``--batch`` rows (default 1; median of
``--repeats`` UNet calls after a warm-up, the runtime's default threads) and its manifest entry records ``cpu_timing[CPU kind]``
(:func:`runtime.selection.cpu_key`); the runtime chooses among the engines timed on the CPU kind it runs on
(:mod:`runtime.selection`). Timing a folder on each kind of machine it is deployed to records each.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from runtime.cli import ArgumentParser, run, setup_logging, whole_number
from runtime.cpu import BF16_FLAGS, SIMULATED, cpu_flags, int8_arithmetic
from runtime.engine import open_engine
from runtime.errors import BackendUnavailableError, GateError
from runtime.io_spec import SAMPLE, TIMESTEP
from runtime.manifest import read_manifest, update_artifact
from runtime.runners.ort import default_threads
from runtime.selection import CPU_KINDS, TIMING_KEY, cpu_key, fastest, precision_of, unet_engines

from .artifacts import INT8_NAME, ONNX_NAME, OV_INT8_NAME, OV_NAME
from .stage import verified_source

PROG = "export.cpu"
TIMED_PRECISIONS = ("fp32", "bf16", "int8")  # FP16 is a GPU precision: on a CPU it runs casts around FP32 kernels
DEFAULT_REPEATS = 3

log = logging.getLogger(PROG)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help="folder with unet.onnx and manifest.json (default engines/)")
    p.add_argument("--repeats", type=whole_number(1), default=DEFAULT_REPEATS,
                   help=f"timed UNet calls per engine, after a warm-up (default {DEFAULT_REPEATS})")
    p.add_argument("--batch", type=whole_number(1), default=1,
                   help="rows per timed UNet call (default 1: one image; a service's typical batch may rank engines "
                        "differently: small models are overhead-bound at batch 1)")
    p.add_argument("--no-build", action="store_true", help="time the engines the folder has; build nothing")
    p.add_argument("--calibration", choices=("sampler", "noise"), default="sampler",
                   help="the INT8 calibration (export.int8's --calibration; noise: random-weight models only)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def units_missing(precision: str) -> str | None:
    """Why this CPU cannot run ``precision`` fast (None: it can)."""
    flags = cpu_flags()
    if precision == "bf16" and not any(flag in flags for flag in BF16_FLAGS):
        return f"this CPU has no BF16 units (none of {', '.join(BF16_FLAGS)}): no BF16 engine"
    if precision == "int8":
        try:
            if int8_arithmetic(flags) == SIMULATED:
                return "this CPU has no VNNI or AMX units (INT8 would be simulated in FP32): no INT8 engine"
        except BackendUnavailableError:
            return "this CPU has no VNNI or AMX units (its integer kernels saturate): no INT8 engine"
    return None


def build_missing(folder: Path, calibration: str) -> list[str]:
    """Builds the BF16 and INT8 engines (ONNX Runtime's, then OpenVINO's) this CPU has units for and the folder
    lacks; one line each about what was left out and why."""
    from .bf16 import main as bf16_main
    from .int8 import main as int8_main

    def int8(backend: str):
        return lambda: int8_main(["--engines", str(folder), "--calibration", calibration, "--backend", backend])

    notes = []
    for precision, name, build in (("bf16", OV_NAME, lambda: bf16_main(["--engines", str(folder)])),
                                   ("int8", INT8_NAME, int8("onnxruntime")), ("int8", OV_INT8_NAME, int8("openvino"))):
        why = units_missing(precision)
        if why is None and name in read_manifest(folder / "manifest.json").artifacts and (folder / name).is_file():
            continue  # built before (update_artifact drops an entry whose source changed)
        if why is None:
            try:
                build()
            except (GateError, BackendUnavailableError) as exc:
                why = f"no {name}: {exc}"
        if why is not None:
            notes.append(why)
    return list(dict.fromkeys(notes))  # both INT8 engines left out for want of units: one line


def time_engine(path: Path, repeats: int, threads: int, batch: int = 1) -> float:
    """Median seconds of one UNet call of ``path`` at ``batch`` rows here, after a warm-up."""
    runner, manifest, _ = open_engine(path, device="cpu", threads=threads, cache_dir=None)
    try:
        io = manifest.domain_io
        rng = np.random.default_rng(0)
        feed = {SAMPLE: rng.standard_normal(io.sample.concrete(batch), dtype=np.float32),
                TIMESTEP: io.timestep_feed(io.timestep.at((0.5,) * batch)), **io.example_conditioning(batch, rng)}
        runner.infer(feed)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            runner.infer(feed)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        runner.deactivate()


def time_engines(folder: Path, repeats: int, batch: int = 1) -> dict[str, float]:
    """Times the folder's CPU engines here and records each in the manifest; returns seconds per call by name."""
    source = verified_source(folder)
    threads, key, measured = default_threads(), cpu_key(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    engines = {name: entry for name, entry in unet_engines(source.manifest).items()
               if entry.kind in CPU_KINDS and precision_of(entry) in TIMED_PRECISIONS and (folder / name).is_file()
               and units_missing(precision_of(entry)) is None}
    seconds, timed = {}, {}
    for name, entry in engines.items():
        seconds[name] = time_engine(folder / name, repeats, threads, batch)
        log.info("%s: %.3f s per batch-%d UNet call (median of %d, %d threads)", name, seconds[name], batch, repeats,
                 threads)
        record = {**(entry.build.get(TIMING_KEY) or {}), key: {
            "s_per_call": seconds[name], "batch": batch, "threads": threads, "repeats": repeats, "measured": measured}}
        timed[name] = replace(entry, build={**entry.build, TIMING_KEY: record})
    main = next(iter(timed))
    update_artifact(folder, source.manifest.base(), main, timed[main], {k: v for k, v in timed.items() if k != main})
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    folder = Path(args.engines)
    verified_source(folder)  # unet.onnx, checked: a missing one is refused before any work
    notes = [] if args.no_build else build_missing(folder, args.calibration)
    seconds = time_engines(folder, args.repeats, args.batch)
    best = fastest(read_manifest(folder / "manifest.json"))
    fp32 = seconds.get(ONNX_NAME)
    timed = ", ".join(f"{name} {s:.3g} s" + (f" ({fp32 / s:.2f}x FP32)" if fp32 and name != ONNX_NAME else "")
                      for name, s in sorted(seconds.items(), key=lambda item: item[1]))
    print(f"{folder}: on {cpu_key()}, per batch-{args.batch} UNet call: {timed}; --precision auto runs {best[0]}"
          + "".join(f"; {note}" for note in notes))
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
