"""``python -m export.deepcache``: feature-reuse graphs (DeepCache) beside the UNet, parity-gated.

DeepCache (Ma et al., CVPR 2024) observes that a U-Net's deep features change little between adjacent
denoising steps: a *full* step runs the whole UNet and keeps the input of one of the outer up blocks
(the *deep feature*); the next steps run only the *shallow* part around it (``conv_in``, the outer
down blocks, those up blocks fed the kept feature, the output head), until the next full step.
Branch ``B`` (0: the outermost) cuts at down block ``B`` / up block ``n - 1 - B``: the shallow graph runs
down blocks ``0..B`` and up blocks ``n-1-B..n-1``; the deeper the branch, the more a shallow step
costs and the less it departs from the full UNet.

This stage writes, from the model the folder's ``unet.onnx`` was exported from (its weights' sha256 is
checked against the manifest):

* ``unet.cache-full.onnx``: the UNet's inputs → ``noise_pred`` and ``deep_feature [batch, C, H, W]``;
* ``unet.cache-shallow.onnx``: the UNet's inputs and ``deep_feature`` → ``noise_pred``.

Gates, before anything is written: in PyTorch the split computation must be the UNet (the full graph's
prediction, and the shallow graph's fed the feature of the same input, equal the UNet's ``forward``
within FP32 rounding), then ONNX Runtime must reproduce PyTorch's split graphs at batch 1 and 3 (the
shallow graph fed a feature kept at another timestep, as in use) within the export's parity tolerance.
Each graph's manifest entry (derived from ``unet.onnx``) records its role, branch and feature shape; the
runtime (:mod:`runtime.reuse`) runs them for requests that ask for a cache schedule, on ONNX
Runtime beside ``unet.onnx`` and on OpenVINO beside ``unet.ov.xml`` (at that engine's precision).

``UNet2DModel`` (unconditional or class-conditional, without score-SDE skip blocks) and ``UNet2DConditionModel``
(cross-attention conditioning, with or without class embeddings; not added conditioning such as text-time or image
embeddings).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from runtime.cli import ArgumentParser, run, setup_logging
from runtime.errors import DeployError, GateError
from runtime.reuse import FULL_NAME, ROLES, SHALLOW_NAME, CacheGraph
from runtime.io_spec import DEEP_FEATURE, UNetIO
from runtime.manifest import ArtifactEntry, sha256_file

from . import load
from .artifacts import ONNX_NAME, tool_versions
from .child import call_in_child
from .gates import FP32_PARITY_ATOL, PARITY_BATCHES, ParityCase, check_parity
from .onnx import DEFAULT_OPSET, export_onnx
from .stage import Built, Source, Stage, run_stage

PROG = "export.deepcache"
# The split computation against the UNet's forward in PyTorch: the same operations on the same values, so equal
# up to the kernels' choice of summation order between batch shapes (measured 0 at batch 1 and 3 on the digits
# and cat-256 configs); relative to the output's magnitude.
SPLIT_RTOL = 1e-5

log = logging.getLogger(PROG)


SPLIT_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


def check_branch(unet_config: dict, branch: int) -> None:
    """Refuses, in one line, a model or branch the split cannot serve."""
    name = unet_config.get("_class_name")
    if name not in SPLIT_CLASSES:
        raise DeployError(f"feature reuse splits a UNet2DModel or a UNet2DConditionModel; this model is a {name}")
    extras = [key for key in ("addition_embed_type", "time_cond_proj_dim", "encoder_hid_dim_type")
              if unet_config.get(key) is not None]
    if extras:
        raise DeployError(f"feature reuse does not split a UNet2DConditionModel with {', '.join(extras)} (added "
                          "conditioning the split does not carry); export it without feature reuse")
    blocks = list(unet_config.get("down_block_types", ()))
    if any("Skip" in name for name in [*blocks, *unet_config.get("up_block_types", ())]):
        raise DeployError("feature reuse does not split score-SDE skip blocks (they carry a second sample between blocks)")
    if not 0 <= branch <= len(blocks) - 2:
        raise DeployError(f"--branch must be in 0..{len(blocks) - 2} for this model's {len(blocks)} down blocks "
                          f"(the deepest branch still leaves the last down block, the mid block and the first up block "
                          f"to the full steps), got {branch}")


def split_module(unet, branch: int, role: str):
    """The UNet's forward split at ``branch`` as a module: "full" returns (noise_pred, deep_feature), "shallow"
    takes ``deep_feature`` and returns noise_pred. Operation for operation ``UNet2DModel.forward`` or
    ``UNet2DConditionModel.forward`` (diffusers 0.3x-0.4x; the latter without added conditioning, masks or
    adapters), so the full graph's prediction is the UNet's."""
    import torch

    n = len(unet.up_blocks)
    cut = n - 1 - branch  # the first up block the shallow graph runs
    consumed = sum(len(block.resnets) for block in unet.up_blocks[cut:])  # skip connections those up blocks take
    cross = type(unet).__name__ == "UNet2DConditionModel"

    class Split(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def embedding(self, sample, timestep, class_labels):
            """(time and class embedding, the timesteps per row) as the UNet's forward makes them."""
            u = self.unet
            if cross:
                emb = u.time_embedding(u.get_time_embed(sample=sample, timestep=timestep), None)
                class_emb = u.get_class_embed(sample=sample, class_labels=class_labels)
                if class_emb is not None:
                    emb = torch.cat([emb, class_emb], dim=-1) if u.config.class_embeddings_concat else emb + class_emb
                return (u.time_embed_act(emb) if u.time_embed_act is not None else emb), None
            timesteps = timestep * torch.ones(sample.shape[0], dtype=timestep.dtype, device=timestep.device)
            emb = u.time_embedding(u.time_proj(timesteps).to(dtype=u.dtype))
            if u.class_embedding is not None:
                labels = u.time_proj(class_labels) if u.config.class_embed_type == "timestep" else class_labels
                emb = emb + u.class_embedding(labels).to(dtype=u.dtype)
            return emb, timesteps

        def forward(self, sample, timestep, class_labels=None, encoder_hidden_states=None, deep_feature=None):
            u = self.unet
            if u.config.center_input_sample:
                sample = 2 * sample - 1.0
            emb, timesteps = self.embedding(sample, timestep, class_labels)
            if cross:
                encoder_hidden_states = u.process_encoder_hidden_states(
                    encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=None)

            def condition(block) -> dict:  # a cross-attention block's condition
                return {"encoder_hidden_states": encoder_hidden_states} if getattr(block, "has_cross_attention", False) else {}

            h = u.conv_in(sample)
            res = (h,)
            for block in u.down_blocks[: branch + 1] if role == "shallow" else u.down_blocks:
                h, more = block(hidden_states=h, temb=emb, **condition(block))
                res += more
            if role == "full":
                if u.mid_block is not None:
                    h = u.mid_block(h, emb, **condition(u.mid_block))
                for block in u.up_blocks[:cut]:
                    h = block(hidden_states=h, res_hidden_states_tuple=res[-len(block.resnets):], temb=emb,
                              **condition(block))
                    res = res[: -len(block.resnets)]
                feature = h
            else:
                h, res = deep_feature, res[:consumed]
            for block in u.up_blocks[cut:]:
                h = block(hidden_states=h, res_hidden_states_tuple=res[-len(block.resnets):], temb=emb, **condition(block))
                res = res[: -len(block.resnets)]
            if u.conv_norm_out is not None:
                h = u.conv_act(u.conv_norm_out(h))
            out = u.conv_out(h)
            if not cross and u.config.time_embedding_type == "fourier":
                out = out / timesteps.reshape((out.shape[0], *([1] * len(out.shape[1:]))))
            return (out, feature) if role == "full" else out

    return Split()


@dataclass(frozen=True)
class SplitCases:
    """The gates' inputs and PyTorch's outputs for both graphs, and the split check's figures."""

    feature_shape: tuple[int, ...]
    full: list[ParityCase]  # reference: the noise prediction
    features: list[ParityCase]  # the same inputs, reference: the deep feature
    shallow: list[ParityCase]  # conditioning includes a deep feature kept at other timesteps
    split_error: float  # max relative difference of the split computation to the UNet's forward


def split_references(unet, io: UNetIO, branch: int, seed: int = 0) -> SplitCases:
    import torch

    full, shallow = split_module(unet, branch, "full").eval(), split_module(unet, branch, "shallow").eval()
    rng = np.random.default_rng(seed)
    cases: dict[str, list] = {"full": [], "features": [], "shallow": []}
    split_error = 0.0
    for batch in PARITY_BATCHES:
        x = rng.standard_normal(io.sample.concrete(batch), dtype=np.float32)
        t = io.timestep_feed(io.timestep.spread(batch))
        later = io.timestep_feed(io.timestep.spread(batch + 2)[1:-1][::-1].copy())  # other timesteps than the feature's
        x_later = rng.standard_normal(io.sample.concrete(batch), dtype=np.float32)
        conditioning = io.example_conditioning(batch, rng)
        kwargs = {k: torch.from_numpy(v) for k, v in conditioning.items()}
        with torch.no_grad():
            unet_out = unet(torch.from_numpy(x), torch.from_numpy(t), return_dict=False, **kwargs)[0]
            noise, feature = full(torch.from_numpy(x), torch.from_numpy(t), **kwargs)
            same = shallow(torch.from_numpy(x), torch.from_numpy(t), deep_feature=feature, **kwargs)
            moved = shallow(torch.from_numpy(x_later), torch.from_numpy(later), deep_feature=feature, **kwargs)
        scale = max(1.0, float(unet_out.abs().max()))
        split_error = max(split_error, float((noise - unet_out).abs().max()) / scale, float((same - unet_out).abs().max()) / scale)
        cases["full"].append(ParityCase(x, t, noise.numpy(), conditioning))
        cases["features"].append(ParityCase(x, t, feature.numpy(), conditioning))
        cases["shallow"].append(ParityCase(x_later, later, moved.numpy(), {**conditioning, DEEP_FEATURE: feature.numpy()}))
    if not split_error <= SPLIT_RTOL:
        raise GateError(f"the split computation differs from the UNet's forward by {split_error:.3g} of the output "
                        f"(tolerance {SPLIT_RTOL:g}): this diffusers version's forward is not the one export.deepcache "
                        "splits; report it with the diffusers version")
    return SplitCases(tuple(feature.shape[1:]), cases["full"], cases["features"], cases["shallow"], split_error)


def _torch_stage(model: load.ModelSource, io: UNetIO, branch: int, folder: Path, opset: int) -> SplitCases:
    """In a child process: PyTorch's references, then both graphs traced into ``folder``."""
    unet = load.load_unet(model)
    cases = split_references(unet, io, branch)
    for role in ROLES:
        graph_io = io.with_feature(role, cases.feature_shape)
        log.info("exporting the %s graph (branch %d, deep feature %s)", role, branch, list(cases.feature_shape))
        if export_onnx(unet, graph_io, folder / CacheGraph.file_name(role), opset, module=split_module(unet, branch, role)):
            raise DeployError("the model is too large for a self-contained ONNX file; feature reuse does not split "
                              "models past 1.5 GB of weights")
    import onnx

    for role in ROLES:
        onnx.checker.check_model(str(folder / CacheGraph.file_name(role)), full_check=False)
    return cases


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the hub id or folder the engines folder's unet.onnx was exported from")
    p.add_argument("--engines", default="engines", help=f"folder with {ONNX_NAME} and manifest.json (default engines/)")
    p.add_argument("--branch", type=int, default=0, help="where the shallow graph cuts: 0 (default, the outermost "
                   "blocks: cheapest shallow steps) .. down blocks - 2")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--tolerance", type=float, default=FP32_PARITY_ATOL,
                   help=f"parity gate max abs error (default {FP32_PARITY_ATOL:g})")
    p.add_argument("--allow-pickle", action="store_true", help="accept a pickle .bin checkpoint (runs code from the file)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def preflight(args, source: Source):
    """The model the engine was exported from (its weights' sha256 against the manifest's), split at a branch it has."""
    model = load.resolve(args.model, allow_pickle=args.allow_pickle)
    if load.weights_sha256(model) != source.manifest.model.get("weights_sha256"):
        raise DeployError(f"{args.model} is not the model {source.path} was exported from (its weights' sha256 "
                          f"differs from the manifest's); pass that model, or re-export {source.folder} from this one")
    check_branch(model.config, args.branch)
    return model


def build(args, source: Source, work: Path, model) -> Built:
    cases = call_in_child("the PyTorch export of the feature-reuse graphs", _torch_stage, model, source.manifest.domain_io,
                          args.branch, work, args.opset)
    log.info("parity gate: both graphs in ONNX Runtime vs PyTorch's split computation at batch 1 and 3")
    parity = {
        "full": check_parity(work / FULL_NAME, cases.full, atol=args.tolerance),
        "feature": check_parity(work / FULL_NAME, cases.features, atol=args.tolerance, output=DEEP_FEATURE),
        "shallow": check_parity(work / SHALLOW_NAME, cases.shallow, atol=args.tolerance),
    }
    entries = {}
    for role in ROLES:
        path = work / CacheGraph.file_name(role)
        graph = CacheGraph(role=role, branch=args.branch, feature_shape=cases.feature_shape, engine=ONNX_NAME)
        gates = {k: [r.to_dict() for r in v] for k, v in parity.items() if (k == "shallow") == (role == "shallow")}
        entries[path.name] = ArtifactEntry(
            kind="onnx", precision="fp32", sha256=sha256_file(path), bytes=path.stat().st_size, source=ONNX_NAME,
            source_sha256=source.entry.sha256,
            build={**graph.to_build(), "opset": args.opset, "split_error": cases.split_error,
                   "parity": {"tolerance": args.tolerance, **gates}, "tools": tool_versions()})
    worst = max(r.max_abs_error for results in parity.values() for r in results)
    summary = (f"and {source.folder / SHALLOW_NAME} (branch {args.branch}, deep feature {list(cases.feature_shape)}); "
               f"max abs error vs PyTorch {worst:.2e} (tolerance {args.tolerance:g}); split vs the UNet's forward "
               f"{cases.split_error:.1e}")
    # the shallow graph goes live last: a reader finding it finds its full graph
    return Built(FULL_NAME, entries, summary, files=[FULL_NAME, SHALLOW_NAME])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_stage(Stage("deepcache", partial(build, args), preflight=partial(preflight, args)), Path(args.engines))


def cli() -> None:
    sys.exit(run(main, PROG))


if __name__ == "__main__":
    cli()
