"""``python -m export.fp16``: the FP32 ONNX → a mixed-precision FP16 ONNX, accuracy-gated.

Weights, convolutions and matmuls go to FP16 with onnxconverter-common's float16 converter; the
parts that FP16 gets wrong stay FP32 through its block lists:

* the timestep embedding (everything feeding Sin/Cos: ``t * freq`` at t=999 loses ~0.18 in FP16);
* group-norm statistics (the exporter's InstanceNormalization inside each GroupNorm: variance of
  large activations overflows FP16);
* attention scores and softmax (the MatMul feeding Softmax, and the Softmax).

Graph inputs and outputs stay FP32, so the runtime contract does not change. The gate then runs
both models in ONNX Runtime on CPU: noise predictions over timesteps spread across the schedule,
and a short sampling run with identical noise; it fails on NaN/Inf or a PSNR below the thresholds
(Apple's coremltools uses 35 dB for the same purpose), and then nothing is written.

A latent model's decoder (``decoder.onnx``) is converted the same way to ``decoder.fp16.onnx`` and gated
on the images it decodes from latents as the sampler leaves them (image PSNR on [0, 1]).
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import GateError
from runtime.io_spec import UNetIO
from runtime.manifest import ArtifactEntry, Manifest, sha256_file, verify_artifact
from runtime.reuse import ROLES, CacheGraph, graphs_for
from runtime.runners import RunnerOptions
from runtime.runners.ort import OrtRunner

from .artifacts import DECODER_FP16_NAME, FP16_NAME, ONNX_NAME, tool_versions
from .child import call_in_child
from .gates import (FP16_MIN_IMAGE_PSNR_DB, GATE_SEED, accuracy_gate, gate_summary, psnr,
                    ort_reuse_engines, reuse_gate, reuse_summary)
from .stage import Built, Source, Stage, run_stage

PROG = "export.fp16"
FP32_OPS = ("InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax", "Sin", "Cos")
# Ops between an attention MatMul and its Softmax (scaling, masking): kept FP32 with the MatMul.
_SCORE_OPS = ("Mul", "Div", "Add", "Where")
DECODER_GATE_IMAGES = 3  # latents the FP16 decoder is checked on, one call each

log = logging.getLogger(PROG)  # not __name__: that is "__main__" under python -m


def fp32_node_names(model) -> list[str]:
    """Nodes to keep in FP32 beyond the blocked op types: the timestep embedding and attention scores."""
    producer = {out: node for node in model.graph.node for out in node.output}
    keep: set[str] = set()

    def ancestors(node) -> None:
        for name in node.input:
            parent = producer.get(name)
            if parent is not None and parent.name not in keep:
                keep.add(parent.name)
                ancestors(parent)

    for node in model.graph.node:
        if node.op_type in ("Sin", "Cos"):
            ancestors(node)  # t * freq and what shapes t
        elif node.op_type == "Softmax":
            parent = producer.get(node.input[0])
            while parent is not None and parent.op_type in _SCORE_OPS:
                keep.add(parent.name)
                parent = producer.get(parent.input[0])
            if parent is not None and parent.op_type == "MatMul":
                keep.add(parent.name)
    return sorted(keep)


def detach_outputs(model) -> None:
    """Gives each graph output that other nodes also consume (a feature-reuse full graph's deep_feature) an Identity
    of its own: the converter's ``keep_io_types`` casts an output back to FP32 in place, and the nodes reading the
    same tensor would then mix FP32 and FP16 inputs (ONNX Runtime refuses the model)."""
    from onnx import helper

    consumed = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name in consumed:
            inner = f"{output.name}_inner"
            for node in model.graph.node:
                node.input[:] = [inner if n == output.name else n for n in node.input]
                node.output[:] = [inner if n == output.name else n for n in node.output]
            model.graph.node.append(helper.make_node("Identity", [inner], [output.name], name=f"{output.name}_output"))


def convert(model):
    """(the mixed-precision model, the names of the nodes kept FP32 besides the blocked op types)."""
    from onnxconverter_common import float16

    detach_outputs(model)
    kept = fp32_node_names(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP32_OPS),
            node_block_list=kept,
            disable_shape_infer=False,
        )
    if caught:  # one per weight outside FP16's range ("will be truncated to 1e-07"): a count, not a screenful
        log.info("%d weight values outside FP16's range were clamped to it (the accuracy gate judges the result)", len(caught))
    return converted, kept


def convert_file(fp32_path: Path, out: Path) -> list[str]:
    """Converts and saves (run in a child process: the converter's copies of the graph, 2.3 GB at cat-256,
    are gone before the gate loads its sessions)."""
    import onnx

    model16, kept = convert(onnx.load(str(fp32_path)))
    onnx.save(model16, str(out))
    onnx.checker.check_model(str(out))
    return kept


def fp16_gate(fp32_path: Path, fp16_path: Path, manifest: Manifest) -> dict[str, Any]:
    """Runs the FP16 model against FP32 in ONNX Runtime (CPU). Raises GateError; returns the figures."""
    cpu, io = RunnerOptions(device="cpu"), manifest.io
    return accuracy_gate(OrtRunner(fp32_path, io, options=cpu), OrtRunner(fp16_path, io, options=cpu), manifest, "FP16")


def decoder_gate(fp32_path: Path, fp16_path: Path, io: UNetIO, scaling_factor: float) -> dict[str, Any]:
    """A latent model's FP16 decoder against FP32 on latents as the sampler leaves them (standard normal times
    the autoencoder's scaling factor), one at a time: image PSNR on [0, 1]. Raises GateError."""
    from runtime.images import to_unit_range
    from runtime.io_spec import IMAGE, LATENTS

    rng = np.random.default_rng(GATE_SEED)
    latents = (rng.standard_normal(io.sample.concrete(DECODER_GATE_IMAGES)) * scaling_factor).astype(np.float32)
    images = []
    for path in (fp32_path, fp16_path):
        with OrtRunner(path, io, options=RunnerOptions(device="cpu")) as runner:
            images.append(np.concatenate([runner.infer({LATENTS: z[None]})[IMAGE] for z in latents]))
    ref, got = images
    if not np.isfinite(got).all():
        raise GateError("FP16 decoder gate failed: NaN/Inf in the decoded image; nothing was written")
    worst = min(psnr(to_unit_range(r), to_unit_range(g), peak=1.0) for r, g in zip(ref, got))
    log.info("FP16 decoder: worst image PSNR %.1f dB vs FP32 over %d latents", worst, DECODER_GATE_IMAGES)
    if worst < FP16_MIN_IMAGE_PSNR_DB:
        raise GateError(f"FP16 decoder gate failed: image PSNR {worst:.1f} dB vs FP32 is below {FP16_MIN_IMAGE_PSNR_DB} dB; "
                        "nothing was written. Use the FP32 decoder")
    return {"min_image_psnr_db": FP16_MIN_IMAGE_PSNR_DB, "images": DECODER_GATE_IMAGES, "image_psnr_db": worst}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help=f"folder with {ONNX_NAME} and manifest.json (default engines/)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def build(source: Source, work: Path, ready: None = None) -> Built:
    folder, manifest, fp32_path = source.folder, source.manifest, source.path
    tmp = work / FP16_NAME
    fp32_nodes = call_in_child("the FP16 conversion", convert_file, fp32_path, tmp)
    gate = fp16_gate(fp32_path, tmp, manifest)
    artifacts = {FP16_NAME: ArtifactEntry(
        kind="onnx",
        precision="fp16-mixed",
        sha256=sha256_file(tmp),
        bytes=tmp.stat().st_size,
        source=ONNX_NAME,
        source_sha256=source.entry.sha256,
        build={
            "fp32_ops": list(FP32_OPS),
            "fp32_nodes": len(fp32_nodes),
            "gate": gate,
            "tools": {**tool_versions(), "onnxconverter-common": metadata.version("onnxconverter-common")},
        },
    )}
    summary = gate_summary(gate)
    if manifest.decoder:  # a latent model: its decoder too, gated on the images it decodes
        decoder32, decoder16 = folder / manifest.decoder_artifact, work / DECODER_FP16_NAME
        verify_artifact(decoder32)
        call_in_child("the FP16 conversion of the decoder", convert_file, decoder32, decoder16)
        decoder_gated = decoder_gate(decoder32, decoder16, manifest.decoder_io, float(manifest.decoder["scaling_factor"]))
        artifacts[DECODER_FP16_NAME] = ArtifactEntry(
            kind="onnx", precision="fp16-mixed", sha256=sha256_file(decoder16), bytes=decoder16.stat().st_size,
            source=manifest.decoder_artifact, source_sha256=manifest.artifact(manifest.decoder_artifact).sha256,
            build={"role": "decoder", "fp32_ops": list(FP32_OPS), "gate": decoder_gated})
        summary += f"; decoder {folder / DECODER_FP16_NAME}: image PSNR {decoder_gated['image_psnr_db']:.1f} dB vs FP32"
    pair = graphs_for(manifest, ONNX_NAME, source.entry)
    if pair is not None:  # the feature-reuse graphs: converted and gated with the UNet, for unet.fp16.onnx
        names16 = {role: CacheGraph.file_name(role, ".fp16.onnx") for role in ROLES}
        for role in ROLES:
            verify_artifact(folder / pair.names[role])
            call_in_child(f"the FP16 conversion of the {role} graph", convert_file, folder / pair.names[role],
                          work / names16[role])
        gated = reuse_gate(
            ort_reuse_engines(manifest, pair, fp32_path, {role: folder / pair.names[role] for role in ROLES}),
            ort_reuse_engines(manifest, pair, tmp, {role: work / names16[role] for role in ROLES}),
            pair.graph, manifest, "FP16")
        for role in ROLES:
            artifacts[names16[role]] = ArtifactEntry(
                kind="onnx", precision="fp16-mixed", sha256=sha256_file(work / names16[role]),
                bytes=(work / names16[role]).stat().st_size, source=pair.names[role],
                source_sha256=manifest.artifact(pair.names[role]).sha256,
                build={**replace(pair.graph, role=role, engine=FP16_NAME).to_build(), "fp32_ops": list(FP32_OPS),
                       "gate": gated})
        summary += "; " + reuse_summary(gated, names16.values())
    return Built(FP16_NAME, artifacts, summary)  # the UNet published last, after what it is built with


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_stage(Stage("fp16", build), Path(args.engines))


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
