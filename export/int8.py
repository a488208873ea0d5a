"""``python -m export.int8``: the FP32 ONNX → an INT8 ONNX (ONNX Runtime static QDQ), calibrated by our own
sampler, gated.

Convolutions and matmuls get 8-bit weights (symmetric, per output channel) and 8-bit activations
(asymmetric, per tensor), as ``onnxruntime.quantization.quantize_static`` writes them in QDQ form; ONNX Runtime
fuses each QuantizeLinear → DequantizeLinear → Conv into its integer kernels, and everything else (group norms,
SiLU, softmax, upsampling) stays FP32. The activation ranges come from **calibration with our own sampler**:
the runtime samples a few images from the FP32 engine (the default sampler, the manifest's scheduler config,
fixed seeds) and every UNet input it makes is a calibration input, so the ranges span the timesteps and
samples a deployment sees.

Some layers lose more than they save in INT8 and stay FP32 (``--keep``; groups found from the graph, not
names, in :func:`layer_groups`): the first and last convolutions (``conv_in`` reads the raw sample, ``conv_out``
writes the prediction itself), the **conditioning** path (time embedding, each ResNet's projection of it,
class embeddings: everything not computed from the sample; a few matrix-vector products) and the attention
**scores** (Q·Kᵀ and softmax·V, both operands activations). ``bench/int8.py`` measures what each group costs
in quality (docs/bench-int8-*.md).

The **INT8 gate** is the FP16 one (``export.gates.accuracy_gate``) with INT8's thresholds: noise-prediction PSNR
over the gate timesteps >= INT8_MIN_PSNR_DB and the image PSNR of INT8_GATE_IMAGES 10-step sampling runs (pooled)
>= INT8_MIN_IMAGE_PSNR_DB against FP32; on failure exit 3 and nothing is written. The manifest entry
(``unet.int8.onnx``, kind onnx, precision int8) records the figures, the kept layers, the calibration and the
arithmetic the gate ran (this CPU's VNNI/AMX kernels, or ``simulated``). Exits 4 on a CPU without VNNI or AMX (:mod:`runtime.cpu`: its integer kernels
saturate) unless ``DDPM_DEPLOY_INT8_SIMULATE=1``, where the gate computes the quantized arithmetic in FP32.

Where the folder has feature-reuse graphs (``export.deepcache``), they are quantized the same way, calibrated on
their own inputs while the sampler runs a cache schedule, and gated together with the INT8 UNet against the FP32
graphs (``export.gates.reuse_gate``, INT8's thresholds): ``unet.cache-{full,shallow}.int8.onnx`` serve
``unet.int8.onnx``. ``--backend openvino`` writes ``unet.int8.ov.xml`` instead: NNCF's quantization of the OpenVINO
IR with the same rows, kept layers, scheme and gate (VNNI/AMX only; no feature-reuse graphs).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.cpu import SIMULATED, int8_arithmetic
from runtime.errors import BackendUnavailableError, InputError
from runtime.io_spec import DEEP_FEATURE, SAMPLE, TIMESTEP
from runtime.manifest import ArtifactEntry, sha256_file, verify_artifact
from runtime.pipeline import Pipeline
from runtime.reuse import ROLES, CacheGraph, GraphPair, ReuseGraphs, graphs_for
from runtime.runners import RunnerOptions
from runtime.runners.openvino import import_openvino
from runtime.runners.ort import OrtRunner

from .artifacts import INT8_NAME, ONNX_NAME, OV_INT8_NAME, OV_INT8_WEIGHTS, tool_versions
from .child import call_in_child
from .gates import (REUSE_GATE_INTERVAL, accuracy_gate, gate_summary, ort_reuse_engines, reuse_gate,
                    reuse_summary)
from .stage import Built, Source, Stage, run_stage

PROG = "export.int8"
log = logging.getLogger(PROG)

INT8_MIN_PSNR_DB = 25.0  # per noise prediction (FP16's is 35 dB)
INT8_MIN_IMAGE_PSNR_DB = 30.0  # 10-step sampling runs' final images in [0, 1] against FP32, pooled over
# INT8_GATE_IMAGES: rounding is discontinuous, and one image whose trajectory a flipped 8-bit value sends elsewhere
# (digits, seed 0: 26 dB while 16 images pool to 45 dB) must not decide alone
INT8_GATE_IMAGES = 8
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
SHAPE_OPS = ("Shape", "Size")
GROUPS = ("conv_in", "conv_out", "conditioning", "attention_scores")
DEFAULT_KEEP = GROUPS  # bench/int8.py: each group's cost in quality (docs/bench-int8-*.md)
CALIBRATION_SAMPLER = "dpmpp-2m"  # the runtime's default sampler
CALIBRATION_IMAGES = 4
CALIBRATION_STEPS = 10
CALIBRATION_SEED = 1234  # not the gate's seeds: the gate samples images calibration did not see
CALIBRATION_SOURCES = ("sampler", "noise")
BACKENDS = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Calibration:
    """How the activation ranges were found. ``source`` "sampler": the UNet inputs of ``images`` images sampled by
    the runtime, ``steps`` each; "noise": ``images`` x ``steps`` standard-normal samples at timesteps spread over the
    model's range (the gate's own inputs) — for a model with random weights (benchmarks), whose sampled
    "images" are degenerate (x0 of order 100), never for a trained one. One row per UNet input."""

    source: str = "sampler"
    sampler: str = CALIBRATION_SAMPLER
    images: int = CALIBRATION_IMAGES
    steps: int = CALIBRATION_STEPS
    seed: int = CALIBRATION_SEED

    def to_build(self, rows: int) -> dict[str, Any]:
        sampler = {"sampler": self.sampler} if self.source == "sampler" else {}
        return {"source": self.source, **sampler, "images": self.images, "steps": self.steps, "seed": self.seed,
                "rows": rows, "method": "MinMax"}


class _RecordingRunner(OrtRunner):
    """ONNX Runtime on the FP32 engine, keeping every row of every UNet input it is given."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[dict[str, np.ndarray]] = []

    def _infer(self, feed):
        for i in range(len(feed[TIMESTEP])):
            self.rows.append({name: value[i:i + 1].copy() for name, value in feed.items()})
        return super()._infer(feed)


def calibration_rows(fp32_path: Path, manifest, entry: ArtifactEntry,
                     calibration: Calibration) -> list[dict[str, np.ndarray]]:
    """The calibration inputs, a row each: the UNet inputs of ``calibration.images`` images sampled by the runtime
    from the FP32 engine (a conditional model: a different example condition per image), or standard-normal samples
    at spread timesteps (``source`` "noise")."""
    io = manifest.io
    rng = np.random.default_rng(calibration.seed)
    if calibration.source == "noise":
        count = calibration.images * calibration.steps
        t = io.timestep_feed(manifest.timestep_domain.spread(count))
        x = rng.standard_normal(io.sample.concrete(count), dtype=np.float32)
        conditioning = io.example_conditioning(count, rng)
        return [{SAMPLE: x[i:i + 1], TIMESTEP: t[i:i + 1], **{k: v[i:i + 1] for k, v in conditioning.items()}}
                for i in range(count)]
    runner = _RecordingRunner(fp32_path, io, entry, RunnerOptions(device="cpu"))
    conditioning = io.example_conditioning(calibration.images, rng) or None
    with runner:
        Pipeline(runner, manifest.scheduler_config).run(scheduler=calibration.sampler, steps=calibration.steps,
                                                        seed=calibration.seed, count=calibration.images,
                                                        conditioning=conditioning)
    return runner.rows


def reuse_calibration_rows(source: Source, pair: GraphPair, calibration: Calibration) -> dict[str, list[dict[str, np.ndarray]]]:
    """Each feature-reuse graph's calibration inputs (by role): the graphs' inputs while the runtime samples
    ``calibration.images`` images from the FP32 UNet and graphs with full and shallow steps alternating (the reuse
    gate's schedule), or (``source`` "noise") the noise rows, the shallow graph's with the FP32 full graph's
    feature of the same input."""
    manifest, cpu = source.manifest, RunnerOptions(device="cpu")
    ios = pair.ios(manifest.io)
    recorders = {role: _RecordingRunner(source.folder / pair.names[role], ios[role], options=cpu) for role in ROLES}
    if calibration.source == "noise":
        rows = calibration_rows(source.path, manifest, source.entry, calibration)
        with recorders["full"] as full:
            shallow = [{**row, DEEP_FEATURE: full.infer(row)[DEEP_FEATURE]} for row in rows]
        return {"full": rows, "shallow": shallow}
    rng = np.random.default_rng(calibration.seed)
    conditioning = manifest.io.example_conditioning(calibration.images, rng) or None
    for runner in recorders.values():
        runner.activate()
    try:
        reuse = ReuseGraphs(GraphPair({role: role for role in ROLES}, pair.graph), lambda _, role, like: recorders[role])
        with OrtRunner(source.path, manifest.io, source.entry, cpu) as unet:
            Pipeline(unet, manifest.scheduler_config, reuse=reuse).run(
                scheduler=calibration.sampler, steps=calibration.steps, seed=calibration.seed, count=calibration.images,
                conditioning=conditioning, cache_interval=REUSE_GATE_INTERVAL)
    finally:
        for runner in recorders.values():
            runner.deactivate()
    return {role: runner.rows for role, runner in recorders.items()}


def layer_groups(model) -> dict[str, list[str]]:
    """The quantizable nodes (QUANTIZED_OPS) of each of GROUPS, found from the graph's structure: the first and
    last convolutions, the nodes whose inputs' values do not come from the sample (the conditioning path; shapes
    do not count), and the matmuls with no weight operand (attention scores). The exporter names nodes
    (``node_conv2d_7``), so names say nothing reliable."""
    weights = {init.name for init in model.graph.initializer}
    weights |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    from_sample = {SAMPLE, DEEP_FEATURE}  # a shallow feature-reuse graph's feature is computed from the sample
    for node in model.graph.node:  # topological order
        # a Shape reads the sample's shape, not its values (the timestep is broadcast to the batch with one)
        if node.op_type not in SHAPE_OPS and any(name in from_sample for name in node.input):
            from_sample.update(node.output)
    quantizable = [node for node in model.graph.node if node.op_type in QUANTIZED_OPS]
    convs = [node.name for node in quantizable if node.op_type == "Conv"]
    groups = {
        "conv_in": convs[:1],
        "conv_out": convs[-1:],
        "conditioning": [node.name for node in quantizable if not any(name in from_sample for name in node.input)],
        "attention_scores": [node.name for node in quantizable if node.op_type == "MatMul"
                             and any(name in from_sample for name in node.input)
                             and not any(name in weights for name in node.input)],
    }
    return groups


def quantize_file(fp32_path: Path, out: Path, rows: list[dict[str, np.ndarray]], keep: tuple[str, ...]) -> dict[str, Any]:
    """Writes the QDQ model of ``fp32_path`` to ``out``; returns the kept groups' node names and the count of quantized
    nodes. Run it in a child process: it moves into ``out``'s folder (ONNX Runtime's tools may leave temporary files
    in the working folder), and calibration holds a session of the graph augmented with every tensor's range."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Rows(CalibrationDataReader):
        def __init__(self):
            self._rows = iter(rows)

        def get_next(self):
            return next(self._rows, None)

    fp32_path, out = fp32_path.resolve(), out.resolve()
    os.chdir(out.parent)  # (a child process) anything ONNX Runtime's tools leave in the working folder goes with staging
    prepared = out.with_name(out.stem + ".prepared.onnx")
    # shape inference and ORT's basic fusions; ORT's symbolic shape inference cannot follow the exporter's dynamic shapes
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared), load_external_data=False)
    groups = layer_groups(model)
    kept = {group: groups[group] for group in keep}
    quantizable = sum(node.op_type in QUANTIZED_OPS for node in model.graph.node)
    del model
    quantize_static(
        str(prepared), str(out), Rows(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=[name for names in kept.values() for name in names],
        # MinMax calibration reduces each tensor to its min and max inside the graph: memory stays one call's. (Not
        # CalibMaxIntermediateOutputs: onnxruntime 1.32 drops, rather than folds, the rows it flushes.)
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    prepared.unlink()
    return {"kept": kept, "quantized_nodes": quantizable - sum(map(len, kept.values()))}


def quantize_openvino(fp32_path: Path, out: Path, rows: list[dict[str, np.ndarray]], keep: tuple[str, ...]) -> dict[str, Any]:
    """Writes the OpenVINO INT8 IR of ``fp32_path`` to ``out`` (+ its .bin): NNCF's post-training quantization of the
    converted model (preset MIXED: int8 weights symmetric per output channel, uint8 activations asymmetric per
    tensor, ranges over all rows, as the ONNX Runtime backend), calibrated on the same rows, the same layer groups
    kept FP32 (matched by their ONNX node names, which OpenVINO keeps: "node_conv2d_7/WithoutBiases"). Run it in a
    child process."""
    import nncf
    import onnx
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    logging.getLogger("nncf").setLevel(logging.WARNING)
    groups = layer_groups(onnx.load(str(fp32_path), load_external_data=False))
    kept = {group: groups[group] for group in keep}
    model = ov.convert_model(str(fp32_path))
    layers = [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() in ("Convolution", "MatMul")]
    names = [name for names in kept.values() for name in names]
    ignored = [op for op in layers if any(op == name or op.startswith(name + "/") for name in names)]
    # activation ranges as ONNX Runtime's MinMax takes them: over all rows (NNCF's default averages per-row ranges);
    # full 8-bit weights everywhere (NNCF's overflow fix keeps 7 bits in the first layer for CPUs without VNNI, which
    # this backend refuses)
    same_ranges = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX,
                                                 overflow_fix=OverflowFix.DISABLE)
    quantized = nncf.quantize(model, nncf.Dataset(rows), preset=nncf.QuantizationPreset.MIXED, subset_size=len(rows),
                              ignored_scope=nncf.IgnoredScope(names=ignored, validate=False),
                              advanced_parameters=same_ranges)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"kept": kept, "quantized_nodes": len(layers) - len(ignored)}


def parse_keep(text: str) -> tuple[str, ...]:
    if text == "none":
        return ()
    keep = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [g for g in keep if g not in GROUPS]
    if unknown or not keep:
        raise InputError(f"--keep takes 'none' or a comma-separated list of {', '.join(GROUPS)}; got {text!r}")
    return keep


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help=f"folder with {ONNX_NAME} and manifest.json (default engines/)")
    p.add_argument("--keep", default=",".join(DEFAULT_KEEP),
                   help=f"layer groups kept in FP32: 'none' or a list of {', '.join(GROUPS)} (default: all of them)")
    p.add_argument("--calibration", choices=CALIBRATION_SOURCES, default="sampler",
                   help="sampler: inputs of images our sampler makes (default); noise: standard-normal inputs, only for "
                        "models with random weights (benchmarks)")
    p.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                   help=f"images sampled for calibration (default {CALIBRATION_IMAGES})")
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                   help=f"onnxruntime (default): {INT8_NAME}, ONNX Runtime's QDQ; openvino: {OV_INT8_NAME}, NNCF's "
                        "quantization of the OpenVINO IR (the same calibration, kept layers and gate)")
    p.add_argument("--calibration-steps", type=int, default=CALIBRATION_STEPS,
                   help=f"{CALIBRATION_SAMPLER} steps per calibration image (default {CALIBRATION_STEPS})")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build(args, source: Source, work: Path, arithmetic: str) -> Built:
    keep = parse_keep(args.keep)
    calibration = Calibration(args.calibration, images=args.calibration_images, steps=args.calibration_steps)
    rows = calibration_rows(source.path, source.manifest, source.entry, calibration)
    log.info("calibration: %d UNet inputs (%s)", len(rows), calibration.to_build(len(rows)))
    if args.backend == "openvino":
        return build_openvino(source, work, rows, keep, calibration, arithmetic)
    tmp = work / INT8_NAME
    quantized = call_in_child("the INT8 quantization", quantize_file, source.path, tmp, rows, keep)
    calibrated, rows = len(rows), None
    candidate = ArtifactEntry(kind="onnx", precision="int8", sha256=sha256_file(tmp), bytes=tmp.stat().st_size,
                              source=ONNX_NAME, source_sha256=source.entry.sha256)
    io, cpu = source.manifest.io, RunnerOptions(device="cpu")
    gate = accuracy_gate(OrtRunner(source.path, io, source.entry, cpu), OrtRunner(tmp, io, candidate, cpu),
                         source.manifest, "INT8", INT8_MIN_PSNR_DB, INT8_MIN_IMAGE_PSNR_DB, INT8_GATE_IMAGES)
    entry = replace(candidate, build={
        "quantization": {"format": "QDQ", "tool": "onnxruntime.quantization.quantize_static",
                         "weights": "int8, symmetric, per output channel", "activations": "uint8, asymmetric, per tensor",
                         "ops": list(QUANTIZED_OPS), "quantized_nodes": quantized["quantized_nodes"],
                         "kept_fp32": quantized["kept"], "calibration": calibration.to_build(calibrated)},
        "gate_arithmetic": arithmetic,
        "gate": gate,
        "tools": tool_versions(),
    })
    summary = f"{layers_summary(quantized)}; INT8 {gate_summary(gate)}"
    artifacts = {INT8_NAME: entry}
    pair = graphs_for(source.manifest, ONNX_NAME, source.entry)
    if pair is not None:  # the feature-reuse graphs: quantized the same way and gated with the INT8 UNet
        graphs = quantize_graphs(source, pair, work, calibration, keep, arithmetic, tmp, candidate)
        artifacts.update(graphs)
        summary += "; " + reuse_summary(next(iter(graphs.values())).build["gate"], graphs)
    return Built(INT8_NAME, artifacts, summary)  # the UNet published last, after the graphs it is built with


def build_openvino(source: Source, work: Path, rows: list[dict[str, np.ndarray]], keep: tuple[str, ...],
                   calibration: Calibration, arithmetic: str) -> Built:
    """``unet.int8.ov.xml``: NNCF's quantization of the OpenVINO IR, gated as the ONNX Runtime engine is."""
    from importlib import metadata

    from runtime.runners.openvino import OpenVinoRunner

    xml, weights = work / OV_INT8_NAME, work / OV_INT8_WEIGHTS
    quantized = call_in_child("the OpenVINO INT8 quantization (NNCF)", quantize_openvino, source.path, xml, rows, keep)
    calibrated, rows = len(rows), None
    candidate = ArtifactEntry(kind="openvino", precision="int8", sha256=sha256_file(xml), bytes=xml.stat().st_size,
                              source=ONNX_NAME, source_sha256=source.entry.sha256,
                              external_data={OV_INT8_WEIGHTS: sha256_file(weights)})
    io, cpu = source.manifest.io, RunnerOptions(device="cpu")
    gate = accuracy_gate(OrtRunner(source.path, io, source.entry, cpu), OpenVinoRunner(xml, io, candidate, cpu),
                         source.manifest, "OpenVINO INT8", INT8_MIN_PSNR_DB, INT8_MIN_IMAGE_PSNR_DB, INT8_GATE_IMAGES)
    entry = replace(candidate, build={
        "quantization": {"tool": "nncf.quantize (preset MIXED)", "weights": "int8, symmetric, per output channel",
                         "activations": "uint8, asymmetric, per tensor", "quantized_nodes": quantized["quantized_nodes"],
                         "kept_fp32": quantized["kept"], "calibration": calibration.to_build(calibrated)},
        "gate_arithmetic": arithmetic, "gate": gate,
        "tools": {**tool_versions(), "openvino": metadata.version("openvino"), "nncf": metadata.version("nncf")}})
    return Built(OV_INT8_NAME, {OV_INT8_NAME: entry},
                 f"weights in {OV_INT8_WEIGHTS}; {layers_summary(quantized)}; OpenVINO INT8 {gate_summary(gate)} (no "
                 f"feature-reuse graphs: cache schedules run on {INT8_NAME})", files=[OV_INT8_WEIGHTS, OV_INT8_NAME])


def layers_summary(quantized: dict[str, Any]) -> str:
    kept = ", ".join(f"{group} ({len(names)})" for group, names in quantized["kept"].items()) or "none"
    return f"{quantized['quantized_nodes']} layers INT8, kept FP32: {kept}"


def openvino_preflight() -> str:
    """OpenVINO and NNCF installed, and VNNI/AMX here (OpenVINO's INT8 kernels cannot be simulated): exit 4 first."""
    import_openvino()
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("NNCF is not installed here: `pip install nncf` (OpenVINO's quantization "
                                      "tool), or use --backend onnxruntime") from None
    arithmetic = int8_arithmetic()
    if arithmetic == SIMULATED:
        raise BackendUnavailableError("this CPU has no VNNI or AMX units, and OpenVINO's INT8 kernels cannot be "
                                      "simulated; use --backend onnxruntime")
    return arithmetic


def quantize_graphs(source: Source, pair: GraphPair, work: Path, calibration: Calibration, keep: tuple[str, ...],
                    arithmetic: str, unet: Path, unet_entry: ArtifactEntry) -> dict[str, ArtifactEntry]:
    """The INT8 forms of the folder's feature-reuse graphs (calibrated on their own inputs, the same layers kept),
    gated together with the INT8 UNet against FP32; their manifest entries by file name."""
    rows = reuse_calibration_rows(source, pair, calibration)
    names = {role: CacheGraph.file_name(role, ".int8.onnx") for role in ROLES}
    quantized, entries = {}, {}
    for role in ROLES:
        verify_artifact(source.folder / pair.names[role])
        quantized[role] = call_in_child(f"the INT8 quantization of the {role} graph", quantize_file,
                                        source.folder / pair.names[role], work / names[role], rows[role], keep)
        entries[role] = ArtifactEntry(kind="onnx", precision="int8", sha256=sha256_file(work / names[role]),
                                      bytes=(work / names[role]).stat().st_size, source=pair.names[role],
                                      source_sha256=source.manifest.artifact(pair.names[role]).sha256)
    calibrated = {role: len(rows[role]) for role in ROLES}
    rows = None
    manifest = source.manifest
    gate = reuse_gate(
        ort_reuse_engines(manifest, pair, source.path, {role: source.folder / pair.names[role] for role in ROLES},
                          source.entry),
        ort_reuse_engines(manifest, pair, unet, {role: work / names[role] for role in ROLES}, unet_entry, entries),
        pair.graph, manifest, "INT8", INT8_MIN_PSNR_DB, INT8_MIN_IMAGE_PSNR_DB, INT8_GATE_IMAGES)
    return {names[role]: replace(entries[role], build={
        **replace(pair.graph, role=role, engine=INT8_NAME).to_build(),
        "quantization": {"quantized_nodes": quantized[role]["quantized_nodes"], "kept_fp32": quantized[role]["kept"],
                         "calibration": {**calibration.to_build(calibrated[role]), "cache_interval": REUSE_GATE_INTERVAL}},
        "gate_arithmetic": arithmetic, "gate": gate}) for role in ROLES}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    parse_keep(args.keep)  # a bad --keep is refused before any work
    for flag, value in (("--calibration-images", args.calibration_images), ("--calibration-steps", args.calibration_steps)):
        if not 1 <= value <= 1000:
            raise InputError(f"{flag} must be 1..1000, got {value}")
    # exit 4 before any work on a CPU without VNNI/AMX (unless simulated)
    preflight = openvino_preflight if args.backend == "openvino" else int8_arithmetic
    stage = Stage("int8", partial(build, args), preflight=lambda source: preflight())
    return run_stage(stage, Path(args.engines))


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
