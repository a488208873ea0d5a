"""``python -m export.triton``: a model repository for NVIDIA Triton Inference Server (Python backend).

Writes ``OUT/NAME/config.pbtxt``, ``OUT/NAME/1/model.py`` (embed/triton/model.py: a decoupled model
whose step batcher shares UNet calls among requests in flight), the engine with its manifest in
``OUT/NAME/1/engine/`` (checked against the manifest first) and a README. The repository is written
beside OUT and renamed into place, so OUT is either the old one or the complete new one.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import embed.triton
from runtime import __version__
from runtime.cli import ArgumentParser, run, setup_logging
from runtime.conditioning import declared_files
from runtime.errors import DeployError, InputError
from runtime.reuse import graphs_for
from runtime.manifest import MANIFEST_NAME, verify_artifact
from runtime.requests import SampleRequest

from .artifacts import ONNX_NAME, PLAN_NAME

PROG = "export.triton"
ENGINE_PREFERENCE = (PLAN_NAME, ONNX_NAME)  # a TensorRT plan where one was built, else the FP32 ONNX


def config_pbtxt(name: str, engine: str, height: int, width: int, channels: int, instances: int, max_batch: int | None,
                 max_queue: int, device: str) -> str:
    inputs = SampleRequest.triton_inputs()
    params = {"engine": f"engine/{engine}", "device": device, "max_queue": str(max_queue),
              **({"max_batch": str(max_batch)} if max_batch else {})}
    return "\n".join([
        f"# written by ddpm-deploy {__version__} (python -m export.triton)",
        f'name: "{name}"',
        'backend: "python"',
        "max_batch_size: 0  # batching happens inside the model, per UNet step, across requests in flight",
        "model_transaction_policy { decoupled: true }",
        "input [",
        ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, dims))} ] optional: true }}'
                   for n, t, dims in inputs),
        "]",
        "output [",
        f'  {{ name: "image" data_type: TYPE_UINT8 dims: [ -1, {height}, {width}, {channels} ] }}',
        "]",
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]  # Python stub processes; the engine picks its device",
        *(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()),
        "",
    ])


README = """# {name}: ddpm-deploy on Triton Inference Server

Written by `python -m export.triton` (ddpm-deploy {version}) from `{engine}`.

* Backend: Python, decoupled; `1/model.py` imports ddpm-deploy's runtime (`pip install ddpm-deploy`, plus
  `[gpu]` for a TensorRT plan) from the `python3` first on the server's PATH.
* Inputs (all optional; shape [1] unless listed; ddpm-deploy's request fields):
{inputs}
  `count` is at most max_batch. Output `image`: UINT8 [count, {height}, {width}, {channels}].
* Requests in flight share every UNet call (a step batcher per instance, max_batch {max_batch}); a bad
  request is answered with an error and one line.
* Metrics (Triton's metrics endpoint): ddpm_unet_calls, ddpm_unet_rows (rows per UNet call = their ratio).

Run: `tritonserver --model-repository=$PWD/{repo} --http-address=127.0.0.1 --grpc-address=127.0.0.1
--metrics-address=127.0.0.1` (drop the addresses to listen on every interface).
"""


def input_list() -> str:
    """The README's list of inputs, from the request type."""
    from dataclasses import fields

    from runtime.surfaces import triton_name

    lines = []
    for f in fields(SampleRequest):
        if f.metadata["triton"]:
            dims = f.metadata["triton_dims"]
            shape = "" if dims == (1,) else f" {list(dims)}"
            lines.append(f"  - `{triton_name(f)}` {f.metadata['triton'].removeprefix('TYPE_')}{shape}: {f.metadata['help']}")
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", default="engines", help="folder with the engines and manifest.json (default engines/)")
    p.add_argument("--engine", default=None, help=f"which engine file (default: the first of {', '.join(ENGINE_PREFERENCE)} present)")
    p.add_argument("--out", default="model_repository", help="the model repository to write (default model_repository/)")
    p.add_argument("--name", default="ddpm", help="model name (default ddpm)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default 1; each has its own batcher)")
    p.add_argument("--max-batch", type=int, default=None, help="rows per UNet call (default 8, or the plan's profile max)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting per instance before refusals (default 64)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    folder = Path(args.engines)
    if not args.name.replace("_", "").replace("-", "").isalnum():
        raise DeployError(f"--name must be letters, digits, - and _ only, got {args.name!r}")
    if args.instances < 1 or (args.max_batch is not None and args.max_batch < 1) or args.max_queue < 0:
        raise DeployError("--instances and --max-batch must be at least 1, --max-queue at least 0")
    name = args.engine or next((n for n in ENGINE_PREFERENCE if (folder / n).is_file()), None)
    if name is None:
        raise DeployError(f"no engine in {folder} ({' or '.join(ENGINE_PREFERENCE)}); run `make engine` or pass --engines")
    engine = folder / name
    if not engine.is_file():
        raise DeployError(f"{engine} does not exist; pass --engine with a file of {folder}")
    manifest, entry = verify_artifact(engine)  # a stale or foreign engine is refused here, not in the server
    image = manifest.decoder_io.outputs[0] if manifest.decoder else manifest.io.sample  # what the model returns
    channels, height, width = (int(d) for d in image.shape[1:])
    out = Path(args.out)
    if out.exists() and not (out / args.name / "config.pbtxt").is_file() and any(out.iterdir()):
        raise DeployError(f"{out} exists and is not a model repository written by {PROG}; pass another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        version = staging / args.name / "1"
        (version / "engine").mkdir(parents=True)
        shutil.copy2(Path(embed.triton.__file__).parent / "model.py", version / "model.py")
        decoder = [manifest.decoder_artifact] if manifest.decoder else []  # a latent model's decoder
        try:  # the feature-reuse graphs, when built for this engine (requests' cache schedules)
            pair = graphs_for(manifest, name, entry)
            reuse = [] if pair is None else list(pair.names.values())
        except InputError:  # built, but not for this engine's backend: requests with a schedule are refused
            reuse = []
        needed = [*entry.external_data, *declared_files(manifest.conditioning), *decoder, *reuse, MANIFEST_NAME]
        for file in [engine, *(folder / name for name in needed)]:
            shutil.copy2(file, version / "engine" / file.name)
        (staging / args.name / "config.pbtxt").write_text(config_pbtxt(
            args.name, name, height, width, channels, args.instances, args.max_batch, args.max_queue, args.device))
        (staging / args.name / "README.md").write_text(README.format(
            name=args.name, version=__version__, engine=engine, height=height, width=width, channels=channels,
            max_batch=args.max_batch or "8 (or the plan's profile max)", repo=out, inputs=input_list()))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {out / args.name} ({name}, {height}x{width}x{channels}, {args.instances} instance(s))")
    return 0


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
