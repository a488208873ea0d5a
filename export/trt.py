"""``python -m export.trt``: the FP16 ONNX → a TensorRT engine (``unet.plan``) with a batch profile.

Built through Polygraphy's loaders. The network is strongly typed (TensorRT >= 10.12; TensorRT 11 has
no FP16 builder flag): precision
follows the ONNX graph's types, so FP16 comes from ``unet.fp16.onnx`` and the parts it keeps in
FP32 stay FP32. One optimization profile covers the batch (min/opt/max) and is applied to every
input with a batch axis, from the same I/O declaration the ONNX export used. A timing cache is
reused across builds. The plan is written atomically and recorded in the manifest with the
TensorRT version, GPU name and compute capability, profile, precision and sha256.

A latent model's FP16 decoder gets ``decoder.plan``, and the FP16 feature-reuse graphs (``export.deepcache``, then
``export.fp16``) get ``unet.cache-full.plan`` and ``unet.cache-shallow.plan``, with the same profile.

Exits 4 with a message when TensorRT or a GPU is missing; the ONNX models run on ONNX Runtime.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import BackendUnavailableError, DeployError, InputError, first_line
from runtime.reuse import ROLES, CacheGraph, graphs_for
from runtime.io_spec import BatchProfile, UNetIO
from runtime.manifest import ArtifactEntry, sha256_file, verify_artifact
from runtime.runners.trt import gpu_facts, import_cudart, import_tensorrt

from .artifacts import DECODER_FP16_NAME, DECODER_PLAN_NAME, FP16_NAME, PLAN_NAME
from .stage import Built, Source, Stage, run_stage

PROG = "export.trt"
log = logging.getLogger(PROG)
TIMING_CACHE_NAME = "timing.cache"
MIN_TENSORRT = (10, 12)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def polygraphy_profile(io: UNetIO, profile: BatchProfile):
    """One optimization profile covering every input: min/opt/max batch (and sequence length, for a dynamic
    sequence axis), from the I/O declaration."""
    from polygraphy.backend.trt import Profile

    shapes = Profile()
    lo, opt, hi = io.shapes(profile.min, "min"), io.shapes(profile.opt, "opt"), io.shapes(profile.max, "max")
    for spec in io.inputs:
        shapes.add(spec.name, min=lo[spec.name], opt=opt[spec.name], max=hi[spec.name])
    return shapes


def build_plan(onnx_path: Path, io: UNetIO, profile: BatchProfile, workspace_gib: float, opt_level: int, cache_path: Path) -> bytes:
    """The serialized plan, built through Polygraphy's loaders (NVIDIA's tested wrapper of the builder API):
    a strongly typed network parsed from the ONNX file, one profile, the workspace limit and optimization
    level, and a timing cache that is read if present (a missing, corrupt or foreign cache starts empty) and
    merged back under a file lock after the build."""
    trt = import_tensorrt()
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        raise DeployError(f"TensorRT {trt.__version__} is too old: strongly typed FP16 builds need >= 10.12")
    try:
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath
        from polygraphy.exception import PolygraphyException
    except ImportError:
        raise BackendUnavailableError("Polygraphy is not installed: `pip install 'ddpm-deploy[gpu]'`") from None
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = CreateConfig(
        profiles=[polygraphy_profile(io, profile)],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gib * 1024**3)},
        builder_optimization_level=opt_level,
        load_timing_cache=str(cache_path) if cache_path.is_file() else None,
    )
    try:
        plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(cache_path))()
    except PolygraphyException as exc:
        raise DeployError(f"TensorRT could not build {onnx_path}: {first_line(exc)} (see the log above)") from None
    if not plan:
        raise DeployError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(plan)


def build_parser() -> ArgumentParser:
    defaults = BatchProfile()
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help=f"folder with {FP16_NAME} and manifest.json (default engines/)")
    p.add_argument("--min-batch", type=int, default=defaults.min)
    p.add_argument("--opt-batch", type=int, default=defaults.opt)
    p.add_argument("--max-batch", type=int, default=defaults.max)
    p.add_argument("--workspace-gib", type=float, default=8.0, help="builder workspace limit (default 8 GiB)")
    p.add_argument("--opt-level", type=int, choices=range(0, 6), default=3, help="builder optimization level 0-5 (default 3)")
    p.add_argument("--timing-cache", default=None, help=f"timing cache file (default ENGINES/{TIMING_CACHE_NAME})")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def preflight(source: Source):
    """TensorRT and the GPU (exit 4 before any work where either is missing): (tensorrt module, GPU facts)."""
    trt = import_tensorrt()
    return trt, gpu_facts(import_cudart())


def build(args, profile: BatchProfile, source: Source, work: Path, ready) -> Built:
    trt, facts = ready
    folder, manifest = source.folder, source.manifest
    timing_cache = Path(args.timing_cache) if args.timing_cache else folder / TIMING_CACHE_NAME

    def write_plan(name: str, io, out: str) -> ArtifactEntry:
        plan = build_plan(folder / name, io, profile, args.workspace_gib, args.opt_level, timing_cache)
        (work / out).write_bytes(plan)
        return ArtifactEntry(
            kind="tensorrt",
            precision=f"fp16-mixed (strongly typed from {name})",
            sha256=sha256_file(work / out),
            bytes=len(plan),
            source=name,
            source_sha256=manifest.artifact(name).sha256,
            profile=profile,
            build={
                "tensorrt": {"version": trt.__version__, **facts, "opt_level": args.opt_level, "workspace_gib": args.workspace_gib},
            },
        )

    plans = {}
    if DECODER_FP16_NAME in manifest.artifacts:  # a latent model's FP16 decoder: its plan first, then the UNet's
        verify_artifact(folder / DECODER_FP16_NAME)
        plans[DECODER_PLAN_NAME] = write_plan(DECODER_FP16_NAME, manifest.decoder_io, DECODER_PLAN_NAME)
    try:
        pair = graphs_for(manifest, FP16_NAME, source.entry)
    except InputError:  # graphs for unet.onnx only: the plan is built, cache schedules are refused on it
        log.warning("the feature-reuse graphs in %s are not converted to FP16; run `python -m export.fp16 --engines %s` "
                    "again, then this, for cache schedules on unet.plan", folder, folder)
        pair = None
    if pair is not None:  # the FP16 feature-reuse graphs: their plans, for unet.plan (same profile)
        for role in ROLES:
            verify_artifact(folder / pair.names[role])
            name = CacheGraph.file_name(role, ".plan")
            built = write_plan(pair.names[role], pair.ios(manifest.io)[role], name)
            plans[name] = replace(built, build={**built.build, **replace(pair.graph, role=role, engine=PLAN_NAME).to_build()})
    plans[PLAN_NAME] = write_plan(FP16_NAME, manifest.io, PLAN_NAME)
    also = f"with {', '.join(name for name in plans if name != PLAN_NAME)}; " if len(plans) > 1 else ""
    return Built(PLAN_NAME, plans, f"{also}for {facts['gpu']}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        profile = BatchProfile(args.min_batch, args.opt_batch, args.max_batch)
    except ValueError as exc:
        raise DeployError(str(exc)) from None
    return run_stage(Stage("trt", partial(build, args, profile), source=FP16_NAME, preflight=preflight), Path(args.engines))


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
