"""``python -m export.bf16``: the FP32 ONNX → an OpenVINO model run in BF16 on CPUs with BF16 units, gated.

On CPUs with BF16 units (AVX512_BF16, AMX) the only large lever left is precision, as FP16 is on a
GPU: OpenVINO converts ``unet.onnx`` to its IR (``unet.ov.xml`` + ``unet.ov.bin``, weights kept
FP32) and runs it with ``INFERENCE_PRECISION_HINT=bf16``. The **BF16 gate** is the FP16 one
(``export.gates.accuracy_gate``): OpenVINO BF16 against ONNX Runtime FP32, noise-prediction PSNR over
timesteps 0…999 and a 10-step sampling run's image PSNR ≥ 35 dB, no NaN/Inf; on failure exit 3 and
nothing is written. The manifest entry (kind ``openvino``, precision ``bf16``) records the figures.
``--precision fp32`` writes the same IR for OpenVINO FP32. Exits 4 where OpenVINO is missing or the
CPU has no BF16 units.

Where the folder has feature-reuse graphs (``export.deepcache``), OpenVINO runs them at the engine's precision:
they are gated with it (``export.gates.reuse_gate``: both graphs' predictions and 10-step sampling runs with full and
shallow steps alternating, against ONNX Runtime FP32), and the entry records the graphs' sha256 under ``reuse``;
the runtime runs a reduced-precision OpenVINO engine's cache schedules on those graphs only.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import partial
from importlib import metadata
from pathlib import Path

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.manifest import ArtifactEntry, sha256_file, verify_artifact
from runtime.reuse import REUSE_KEY, ROLES, GraphPair, graphs_for
from runtime.runners import RunnerOptions
from runtime.runners.openvino import OpenVinoRunner, check_precision, import_openvino
from runtime.runners.ort import OrtRunner

from .artifacts import ONNX_NAME, OV_NAME, OV_WEIGHTS, raise_if_disk_full, tool_versions
from .gates import ReuseEngines, accuracy_gate, gate_summary, ort_reuse_engines, reuse_gate, reuse_summary
from .stage import Built, Source, Stage, run_stage

PROG = "export.bf16"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help=f"folder with {ONNX_NAME} and manifest.json (default engines/)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def preflight(precision: str):
    """OpenVINO, and BF16 units where BF16 is asked for: exit 4 before any work."""
    ov = import_openvino()
    check_precision(ov.Core(), precision)
    return ov


def build(precision: str, source: Source, work: Path, ov) -> Built:
    xml, weights = work / OV_NAME, work / OV_WEIGHTS
    try:
        ov.save_model(ov.convert_model(str(source.path)), str(xml), compress_to_fp16=False)
    except RuntimeError as exc:
        raise_if_disk_full(work, exc)
        raise
    candidate = ArtifactEntry(kind="openvino", precision=precision, sha256=sha256_file(xml), bytes=xml.stat().st_size,
                              source=ONNX_NAME, source_sha256=source.entry.sha256,
                              external_data={OV_WEIGHTS: sha256_file(weights)})
    io, cpu = source.manifest.io, RunnerOptions(device="cpu")
    gate = accuracy_gate(OrtRunner(source.path, io, source.entry, cpu), OpenVinoRunner(xml, io, candidate, cpu),
                         source.manifest, precision.upper())
    build = {"gate": gate, "tools": {**tool_versions(), "openvino": metadata.version("openvino")}}
    summary = f"weights in {OV_WEIGHTS}; {precision.upper()} {gate_summary(gate)}"
    pair = graphs_for(source.manifest, ONNX_NAME, source.entry)
    if pair is not None:  # the FP32 feature-reuse graphs, run by OpenVINO at this precision: gated with the engine
        build[REUSE_KEY] = reuse_record(source, pair, xml, candidate, precision)
        summary += "; " + reuse_summary(build[REUSE_KEY]["gate"], pair.names.values())
    return Built(OV_NAME, {OV_NAME: replace(candidate, build=build)}, summary,
                 files=[OV_WEIGHTS, OV_NAME])  # the weights first, then the graph that names them


def reuse_record(source: Source, pair: GraphPair, xml: Path, candidate: ArtifactEntry, precision: str) -> dict:
    """The reuse gate of the folder's FP32 feature-reuse graphs run by OpenVINO at ``precision`` with the engine,
    against ONNX Runtime FP32, and the graphs' sha256 it was run on (the runtime runs those only)."""
    io, cpu, ios = source.manifest.io, RunnerOptions(device="cpu"), pair.ios(source.manifest.io)
    graphs = {role: source.folder / pair.names[role] for role in ROLES}
    entries = {role: verify_artifact(path)[1] for role, path in graphs.items()}
    gate = reuse_gate(
        ort_reuse_engines(source.manifest, pair, source.path, graphs, source.entry, entries),
        ReuseEngines(OpenVinoRunner(xml, io, candidate, cpu),
                     {role: OpenVinoRunner(graphs[role], ios[role], replace(entries[role], kind="openvino",
                                                                             precision=precision), cpu) for role in ROLES}),
        pair.graph, source.manifest, precision.upper())
    return {"graphs": {pair.names[role]: entries[role].sha256 for role in ROLES}, "gate": gate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    stage = Stage("bf16", partial(build, args.precision), preflight=lambda source: preflight(args.precision))
    return run_stage(stage, Path(args.engines))


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
