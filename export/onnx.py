"""``python -m export.onnx``: export a diffusers UNet to ONNX with a dynamic batch, parity-gated.

``UNet2DModel`` (unconditional or class-conditional) and ``UNet2DConditionModel`` (cross-attention:
``--sequence-length`` sets its condition's token count, fixed or a dynamic range); a latent-diffusion
pipeline folder (``unet/`` + ``vqvae/`` or ``vae/``) also gets its decoder, ``OUT/decoder.onnx``,
gated the same way (:mod:`export.decoder`). Writes
``OUT/unet.onnx`` and ``OUT/manifest.json`` (with the model's conditioning declaration and the
arrays it names, copied beside the engine) only when ONNX Runtime reproduces PyTorch within the
tolerance at batch 1 and 3 with distinct timesteps and conditions per element; otherwise exits
non-zero and leaves the output folder as it was.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any


from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import DeployError, SchedulerConfigError
from runtime.io_spec import IMAGE, IMAGE_CONDITION, SAMPLE, TIMESTEP, UNetIO
from runtime.atomic import publish
from runtime.manifest import ArtifactEntry, sha256_file, update_artifact
from runtime.runners.ort import require_onnxruntime
from runtime.schedulers import SchedulerConfig, scheduler_name_for
from runtime.schedulers.config import read_config_file

from . import load
from .child import call_in_child
from .conditioning import check_declaration, io_for, parse_sequence, read_declaration, refuse_unservable
from .artifacts import DECODER_NAME, ONNX_NAME, remove_leftovers, staging, tool_versions
from .decoder import export_decoder, find_decoder
from .gates import FP32_PARITY_ATOL, check_parity, torch_references

PROG = "export.onnx"
DEFAULT_OPSET = 18
MIN_OPSET = 17
# One ONNX protobuf cannot exceed 2 GB: models near it keep their weights outside (the graph and the
# exporter's own constants come on top of the parameters, so the margin is wide).
PROTOBUF_LIMIT = int(1.5 * 1024**3)
DEFAULT_SCHEDULER = {"_class_name": "DDPMScheduler"}  # diffusers' defaults, used when the model ships none

log = logging.getLogger(PROG)  # not __name__: that is "__main__" under python -m


def _forward_module(unet):
    """The UNet's forward as a module torch.onnx can export, its arguments named as the engine's inputs (the
    conditioning inputs are keyword arguments, given only to a conditional UNet)."""
    import torch

    class UNetForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None, image_condition=None):
            if image_condition is not None:  # LDMSuperResolutionPipeline: torch.cat([latents, image], dim=1)
                sample = torch.cat([sample, image_condition], dim=1)
            conditioning = () if encoder_hidden_states is None else (encoder_hidden_states,)
            return self.unet(sample, timestep, *conditioning, class_labels=class_labels, return_dict=False)[0]

    return UNetForward()


EXAMPLE_BATCH = 2


def _example_tokens(io: UNetIO) -> int | None:
    """The traced token count: inside a dynamic range and unlike the traced batch (torch.export would tie them)."""
    seq = io.sequence
    if seq is None or seq.fixed:
        return None
    for n in (seq.opt, seq.max, seq.min):
        if n > 1 and n != EXAMPLE_BATCH:
            return n
    raise DeployError(f"--sequence-length {seq.min}:{seq.opt}:{seq.max} is too narrow to trace as a dynamic axis; "
                      "use a fixed length or a range reaching 3")


def export_onnx(unet, io: UNetIO, path: Path, opset: int, module=None) -> bool:
    """Traces ``unet`` (or ``module``, a graph computed from it whose forward takes ``io``'s inputs: sample and
    timestep positionally, the others by name) with torch.onnx's exporter (torch.export based); returns whether
    weights went to external data."""
    import torch

    dims = {"batch": torch.export.Dim("batch", min=1, max=1024)}
    if io.sequence is not None and not io.sequence.fixed:
        dims["sequence"] = torch.export.Dim("sequence", min=io.sequence.min, max=io.sequence.max)
    params_bytes = sum(p.numel() * p.element_size() for p in unet.parameters())
    external = params_bytes >= PROTOBUF_LIMIT
    tokens = _example_tokens(io)
    example = {spec.name: torch.zeros(spec.concrete(EXAMPLE_BATCH, tokens), dtype=getattr(torch, spec.dtype))
               for spec in io.inputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module if module is not None else _forward_module(unet),
            (example[SAMPLE], example[TIMESTEP]),
            str(path),
            kwargs={spec.name: example[spec.name] for spec in io.conditioning_inputs},
            input_names=io.input_names,
            output_names=io.output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes={name: {axis: dims[d] for axis, d in axes.items()} for name, axes in io.input_dynamic_axes().items()},
            external_data=external,
            optimize=True,
            verbose=False,
        )
    return external


def export_with_references(model: load.ModelSource, io: UNetIO, path: Path, opset: int):
    """(whether weights went to external data, the parity gate's PyTorch outputs). Runs in a child process
    with the ONNX checker: torch, the model and the exporter's copies of the graph (about 2.4 GB for
    cat-256) are gone before ONNX Runtime loads the export for the gate."""
    return call_in_child("the PyTorch export", _torch_stage, model, io, path, opset)


def _torch_stage(model: load.ModelSource, io: UNetIO, path: Path, opset: int):
    unet = load.load_unet(model)
    cases = torch_references(unet, io)
    log.info("exporting %s (%.1fM parameters) to ONNX opset %d", model.source, sum(p.numel() for p in unet.parameters()) / 1e6, opset)
    external = export_onnx(unet, io, path, opset)
    import onnx

    onnx.checker.check_model(str(path), full_check=False)
    return external, cases


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__)
    p.add_argument("--model", required=True, help="hub id (google/ddpm-cat-256) or a local diffusers folder")
    p.add_argument("--sequence-length", default=None, help="a cross-attention UNet's condition length in tokens: N, or "
                   "MIN:OPT:MAX for a dynamic axis (default: the length of the embeddings its conditioning.json declares)")
    p.add_argument("--out", default="engines", help="output folder (default engines/)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= {MIN_OPSET} (default {DEFAULT_OPSET})")
    p.add_argument("--tolerance", type=float, default=FP32_PARITY_ATOL, help=f"parity gate max abs error (default {FP32_PARITY_ATOL:g})")
    p.add_argument("--scheduler-config", default=None, help="scheduler_config.json to record instead of the model's own")
    p.add_argument("--allow-pickle", action="store_true", help="accept a pickle .bin checkpoint (runs code from the file)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def scheduler_config_for(model: load.ModelSource, override: str | None) -> dict[str, Any]:
    if override:
        raw = read_config_file(override)
    elif model.scheduler_config is not None:
        raw = model.scheduler_config
    else:
        log.warning("%s ships no %s; recording diffusers' DDPMScheduler defaults", model.source, load.SCHEDULER_CONFIG)
        raw = dict(DEFAULT_SCHEDULER)
    try:
        SchedulerConfig.from_dict(raw, scheduler_name_for(raw))  # refuse now what the runtime could not sample
    except SchedulerConfigError as exc:
        raise SchedulerConfigError(f"the model's scheduler config cannot be sampled: {exc}") from None
    return raw


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.opset < MIN_OPSET:
        raise DeployError(f"--opset must be at least {MIN_OPSET}, got {args.opset}")
    if not args.tolerance > 0:
        raise DeployError(f"--tolerance must be positive, got {args.tolerance}")
    require_onnxruntime()  # the parity gate runs the export in ONNX Runtime: exit 4 before any work without it
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} is a file; pass a folder")
    model = load.resolve(args.model, allow_pickle=args.allow_pickle)
    declaration = read_declaration(model)
    sequence = parse_sequence(args.sequence_length) if args.sequence_length is not None else None
    refuse_unservable(model)  # before any work or warning
    scheduler_raw = scheduler_config_for(model, args.scheduler_config)
    io = io_for(model, sequence, declaration, scheduler_raw)
    decoder = find_decoder(model)
    if declaration is not None:
        check_declaration(declaration, io)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployError(f"cannot create {out} ({exc.strerror}); pass a writable folder for --out") from None
    remove_leftovers(out)

    started = time.perf_counter()
    with staging(out, "export") as work:
        tmp_onnx = work / ONNX_NAME
        external, cases = export_with_references(model, io, tmp_onnx, args.opset)
        # what the exporter actually wrote decides: it may move weights out on its own (a 526M-parameter model,
        # 2.1 GB, did), and a graph published without its data file would not load
        external = external or any(p != tmp_onnx for p in work.iterdir())
        log.info("parity gate: ONNX Runtime vs PyTorch at batch 1 and 3")
        parity = check_parity(tmp_onnx, cases, atol=args.tolerance)
        external_data = {}
        # External weight files first, then the graph that names them: a reader never sees a graph
        # whose data is missing.
        for data_file in sorted(p for p in work.iterdir() if p != tmp_onnx) if external else []:
            external_data[data_file.name] = sha256_file(data_file)
            publish(data_file, out / data_file.name)
        entry = ArtifactEntry(
            kind="onnx",
            precision="fp32",
            sha256=sha256_file(tmp_onnx),
            bytes=tmp_onnx.stat().st_size,
            external_data=external_data,
            build={
                "opset": args.opset,
                "parity": {"tolerance": args.tolerance, "results": [r.to_dict() for r in parity]},
                "tools": tool_versions(),
            },
        )
        decoder_entry = None
        if decoder is not None:  # a latent model: its decoder is the second artifact, gated the same way
            decoder_io, decoder_cases = call_in_child("the decoder export", export_decoder, decoder, io, work / DECODER_NAME,
                                                      args.opset)
            log.info("parity gate: the decoder in ONNX Runtime vs PyTorch at batch 1 and 3")
            decoder_parity = check_parity(work / DECODER_NAME, decoder_cases, atol=args.tolerance, output=IMAGE)
            decoder_entry = ArtifactEntry(
                kind="onnx", precision="fp32", sha256=sha256_file(work / DECODER_NAME), bytes=(work / DECODER_NAME).stat().st_size,
                build={"opset": args.opset, "role": "decoder",
                       "parity": {"tolerance": args.tolerance, "results": [r.to_dict() for r in decoder_parity]}},
            )
            publish(work / DECODER_NAME, out / DECODER_NAME)
        copies = {}
        for name, source in (declaration.files() if declaration else {}).items():  # before the graph that needs them
            shutil.copyfile(source, work / name)
            publish(work / name, out / name)
            copies[name] = out / name
        publish(tmp_onnx, out / ONNX_NAME)
    base = {
        "model": {
            "source": model.source,
            "config": model.config,
            "weights_file": model.weights.name,
            "weights_sha256": load.weights_sha256(model),
        },
        "scheduler_config": scheduler_raw,
        "io": io.to_dict(),
    }
    if declaration is not None:
        base["conditioning"] = declaration.manifest_section(copies)
    condition = io.input(IMAGE_CONDITION)
    if condition is not None:  # what a request's image is to this engine (the io holds its shape)
        channels, height, width = condition.shape[1:]
        base["image_condition"] = {
            "input": IMAGE_CONDITION, "pipeline": model.pipeline_class, "channels": channels, "height": height,
            "width": width, "range": [-1, 1],
            "resize": f"none: the request's image must be {height}x{width} (the pipeline's PIL path resizes down to a "
                      "multiple of 32 with Lanczos; do that before sending)"}
    if decoder is not None:
        base["decoder"] = {"artifact": DECODER_NAME, "io": decoder_io.to_dict(), **decoder.manifest_section()}
    manifest = update_artifact(out, base, ONNX_NAME, entry, {DECODER_NAME: decoder_entry} if decoder_entry else None)
    worst = max(r.max_abs_error for r in parity)
    also = f" and its decoder {out / DECODER_NAME}" if decoder is not None else ""
    print(
        f"wrote {out / ONNX_NAME} ({entry.bytes / 1e6:.1f} MB){also} and {manifest} in {time.perf_counter() - started:.1f} s; "
        f"max abs error vs PyTorch {worst:.2e} (tolerance {args.tolerance:g})"
    )
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
