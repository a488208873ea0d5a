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
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import DeployError, GateError
from runtime.io_spec import NOISE_PRED, SAMPLE, TIMESTEP, UNetIO
from runtime.manifest import ArtifactEntry, sha256_file, update_artifact
from runtime.atomic import publish
from runtime.schedulers import SchedulerConfig, scheduler_name_for

from .child import call_in_child
from .onnx import ONNX_NAME, remove_leftovers, tool_versions, verified_fp32

PROG = "export.fp16"
FP16_NAME = "unet.fp16.onnx"
FP32_OPS = ("InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax", "Sin", "Cos")
# Ops between an attention MatMul and its Softmax (scaling, masking): kept FP32 with the MatMul.
_SCORE_OPS = ("Mul", "Div", "Add", "Where")

FP16_MIN_PSNR_DB = 35.0  # per noise prediction, coremltools' definition (peak = max |reference|)
FP16_MIN_IMAGE_PSNR_DB = 35.0  # final image in [0, 1] after a short sampling run
GATE_TIMESTEP_FRACTIONS = (0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 1.0)
GATE_SAMPLING_STEPS = 10
GATE_SEED = 0
GATE_BATCH = 1  # timesteps per gate call (peak memory: one image's activations)

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


def convert(model):
    """(the mixed-precision model, the names of the nodes kept FP32 besides the blocked op types)."""
    from onnxconverter_common import float16

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


def psnr(reference: np.ndarray, test: np.ndarray, peak: float | None = None) -> float:
    """10·log10(peak² / MSE); peak defaults to max |reference| (coremltools' definition)."""
    reference = reference.astype(np.float64)
    mse = float(np.mean((reference - test.astype(np.float64)) ** 2))
    peak_sq = float(np.max(reference**2)) if peak is None else peak**2
    return float("inf") if mse == 0 else 10.0 * np.log10(peak_sq / mse)


def gate_timesteps(num_train_timesteps: int) -> np.ndarray:
    return np.unique(np.round(np.array(GATE_TIMESTEP_FRACTIONS) * (num_train_timesteps - 1))).astype(np.float32)


def fp16_gate(fp32_path: Path, fp16_path: Path, io: UNetIO, scheduler_config: dict[str, Any]) -> dict[str, Any]:
    """Runs the FP16 model against FP32 in ONNX Runtime (CPU). Raises GateError; returns the figures."""
    from runtime.runners import RunnerOptions
    from runtime.runners.ort import OrtRunner

    cpu = RunnerOptions(device="cpu")
    return accuracy_gate(OrtRunner(fp32_path, io, options=cpu), OrtRunner(fp16_path, io, options=cpu), scheduler_config, "FP16")


def _noise_predictions(runner, x: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """The gate's noise predictions, GATE_BATCH timesteps per call: the activations of a 256x256 UNet at
    batch 8 take gigabytes, and each prediction depends on its own row only."""
    return np.concatenate([
        runner.infer({SAMPLE: x[i:i + GATE_BATCH], TIMESTEP: ts[i:i + GATE_BATCH]})[NOISE_PRED]
        for i in range(0, len(ts), GATE_BATCH)
    ])


def _sampling_run(runner, scheduler_config: dict[str, Any], label: str) -> np.ndarray:
    from runtime.pipeline import Pipeline, to_unit_range

    try:
        return to_unit_range(Pipeline(runner, scheduler_config).denoise(steps=GATE_SAMPLING_STEPS, seed=GATE_SEED))
    except DeployError as exc:
        raise GateError(f"{label} gate failed during the sampling run: {exc}") from None


def accuracy_gate(reference, candidate, scheduler_config: dict[str, Any], label: str) -> dict[str, Any]:
    """A reduced-precision model (``candidate``, an inactive runner) against FP32 (``reference``): noise
    predictions over timesteps spread across the schedule, then a short sampling run with identical
    noise. Raises GateError on NaN/Inf or a PSNR below the thresholds; returns the figures.

    One model is loaded at a time (the reference's outputs are kept, a few MB), so the gate's peak memory
    is one session and one image's activations, whatever the number of timesteps."""
    io = reference.io
    scheduler = SchedulerConfig.from_dict(scheduler_config, scheduler_name_for(scheduler_config))
    ts = gate_timesteps(scheduler.num_train_timesteps)
    x = np.random.default_rng(GATE_SEED).standard_normal(io.sample.concrete(len(ts)), dtype=np.float32)
    with reference:
        ref = _noise_predictions(reference, x, ts)
        ref_image = _sampling_run(reference, scheduler_config, "FP32 reference in the " + label)
    with candidate:
        got = _noise_predictions(candidate, x, ts)
        if not np.isfinite(got).all():
            bad = sorted({int(ts[i]) for i in np.nonzero(~np.isfinite(got))[0]})
            raise GateError(f"{label} gate failed: NaN/Inf in the noise prediction at timesteps {bad}; nothing was written")
        per_t = [
            {"timestep": int(t), "max_abs_error": float(np.max(np.abs(got[i] - ref[i]))), "psnr_db": psnr(ref[i], got[i])}
            for i, t in enumerate(ts)
        ]
        worst = min(per_t, key=lambda r: r["psnr_db"])
        log.info("%s noise prediction: worst PSNR %.1f dB at t=%d", label, worst["psnr_db"], worst["timestep"])
        if worst["psnr_db"] < FP16_MIN_PSNR_DB:
            raise GateError(
                f"{label} gate failed: noise prediction PSNR {worst['psnr_db']:.1f} dB at timestep {worst['timestep']} "
                f"is below {FP16_MIN_PSNR_DB} dB; nothing was written. Keep more of the graph in FP32 or use the FP32 engine"
            )
        image = _sampling_run(candidate, scheduler_config, label)
    image_psnr = psnr(ref_image, image, peak=1.0)
    log.info("%s %d-step sampling run: image PSNR %.1f dB vs FP32", label, GATE_SAMPLING_STEPS, image_psnr)
    if image_psnr < FP16_MIN_IMAGE_PSNR_DB:
        raise GateError(
            f"{label} gate failed: a {GATE_SAMPLING_STEPS}-step sampling run gives image PSNR {image_psnr:.1f} dB vs FP32, "
            f"below {FP16_MIN_IMAGE_PSNR_DB} dB; nothing was written"
        )
    return {
        "min_psnr_db": FP16_MIN_PSNR_DB,
        "min_image_psnr_db": FP16_MIN_IMAGE_PSNR_DB,
        "noise_prediction": per_t,
        "sampling": {"steps": GATE_SAMPLING_STEPS, "seed": GATE_SEED, "noise": "numpy", "image_psnr_db": image_psnr},
    }


def gate_summary(gate: dict[str, Any]) -> str:
    worst = min(r["psnr_db"] for r in gate["noise_prediction"])
    return (f"noise prediction PSNR >= {worst:.1f} dB, {gate['sampling']['steps']}-step image PSNR "
            f"{gate['sampling']['image_psnr_db']:.1f} dB vs FP32")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help=f"folder with {ONNX_NAME} and manifest.json (default engines/)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    folder = Path(args.engines)
    fp32_path, manifest, fp32_entry = verified_fp32(folder)
    remove_leftovers(folder)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".fp16-", dir=folder) as work:
        tmp = Path(work) / FP16_NAME
        fp32_nodes = call_in_child("the FP16 conversion", convert_file, fp32_path, tmp)
        gate = fp16_gate(fp32_path, tmp, manifest.io, manifest.scheduler_config)
        entry = ArtifactEntry(
            kind="onnx",
            precision="fp16-mixed",
            sha256=sha256_file(tmp),
            bytes=tmp.stat().st_size,
            source=ONNX_NAME,
            source_sha256=fp32_entry.sha256,
            build={
                "fp32_ops": list(FP32_OPS),
                "fp32_nodes": len(fp32_nodes),
                "gate": gate,
                "tools": {**tool_versions(), "onnxconverter-common": metadata.version("onnxconverter-common")},
            },
        )
        publish(tmp, folder / FP16_NAME)
    update_artifact(folder, manifest.base(), FP16_NAME, entry)
    print(f"wrote {folder / FP16_NAME} ({entry.bytes / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s; {gate_summary(gate)}")
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
