"""A latent-diffusion folder's second artifact: its autoencoder's decoder, exported and parity-gated.

``LDMPipeline`` folders (``unet/`` + ``vqvae/`` + ``scheduler/``) sample in a VQ-VAE's latent space and
decode at the end: ``image = vqvae.decode(latents / scaling_factor).sample`` (``VQModel.decode``
quantizes to the nearest codebook vector first). Folders with an ``AutoencoderKL`` in ``vae/`` decode
the same way. :func:`export_decoder` traces exactly that expression (the division by
``scaling_factor`` included, so the runtime hands the sampler's final sample to the decoder as it is)
with a dynamic batch, in a child process of its own: the export's peak memory is the larger stage's,
not the sum. The gate is the UNet's: ONNX Runtime against PyTorch at batch 1 and 3.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import first_line
from runtime.io_spec import IMAGE, LATENTS, UNetIO
from runtime.jsonio import read_json_object

from .load import CONFIG, IMAGE_CONDITIONED, SAFETENSORS, ModelSource, ModelSourceError

DECODER_DIRS = {"vqvae": "VQModel", "vae": "AutoencoderKL"}  # where diffusers' pipelines keep them
DECODER_MODULES = {"VQModel": "models.autoencoders.vq_model", "AutoencoderKL": "models.autoencoders.autoencoder_kl"}
GATE_BATCHES = (1, 3)

log = logging.getLogger("export.decoder")


@dataclass(frozen=True)
class DecoderSource:
    folder: Path
    class_name: str
    config: dict[str, Any]
    unscaled: bool = False  # LDMSuperResolutionPipeline decodes the latents as they are (no division)

    @property
    def scaling_factor(self) -> float:
        """The config's, or the class's default (what diffusers' pipelines divide by; 1 where the pipeline does not)."""
        from .family import init_signature

        if self.unscaled:
            return 1.0
        if "scaling_factor" in self.config:
            return float(self.config["scaling_factor"])
        return float(init_signature(DECODER_MODULES[self.class_name], self.class_name)["scaling_factor"])

    def manifest_section(self) -> dict[str, Any]:
        return {"class": self.class_name, "folder": self.folder.name, "config": self.config,
                "scaling_factor": self.scaling_factor}


def find_decoder(model: ModelSource) -> DecoderSource | None:
    """The autoencoder of a latent-diffusion pipeline folder (None: a pixel-space model)."""
    for sub, class_name in DECODER_DIRS.items():
        folder = model.root / sub
        if not (folder / CONFIG).is_file():
            continue
        config = read_json_object(
            folder / CONFIG, missing=lambda: ModelSourceError(f"{folder / CONFIG} vanished"),
            unreadable=lambda why, f=folder: ModelSourceError(f"cannot read {f / CONFIG}: {why}; fix or re-save the model"))
        if config.get("_class_name") != class_name:
            raise ModelSourceError(f"{folder / CONFIG} describes a {config.get('_class_name')!r}; a pipeline's {sub}/ "
                                   f"holds a {class_name}")
        if not (folder / SAFETENSORS).is_file():
            raise ModelSourceError(f"{folder} has no {SAFETENSORS}; re-save the pipeline with save_pretrained")
        return DecoderSource(folder, class_name, config, unscaled=model.pipeline_class in IMAGE_CONDITIONED)
    return None


@dataclass(frozen=True)
class DecoderCase:
    """One decoder gate input and PyTorch's image for it (the parity gate's case shape)."""

    latents: np.ndarray
    reference: np.ndarray
    timesteps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # none: the report leaves it empty
    conditioning: dict = field(default_factory=dict)  # none

    @property
    def batch(self) -> int:
        return len(self.latents)

    def feed(self) -> dict[str, np.ndarray]:
        return {LATENTS: self.latents}


def _decode_module(vae, scaling_factor: float):
    import torch

    class Decode(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, latents):
            return self.vae.decode(latents / scaling_factor).sample

    return Decode()


def export_decoder(decoder: DecoderSource, latent: UNetIO, path: Path, opset: int) -> tuple[UNetIO, list[DecoderCase]]:
    """Traces the decoder to ``path`` (run it in a child: :func:`export.child.call_in_child`); returns its I/O
    declaration and the gate's PyTorch references."""
    import diffusers
    import onnx
    import torch

    try:
        vae = getattr(diffusers, decoder.class_name).from_pretrained(decoder.folder).float().eval()
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelSourceError(f"diffusers cannot load the {decoder.class_name} from {decoder.folder}: {first_line(exc)}") from None
    module = _decode_module(vae, decoder.scaling_factor)
    rng = np.random.default_rng(0)
    cases = []
    for batch in GATE_BATCHES:
        # latents as the sampler leaves them: scaled by scaling_factor around the autoencoder's own range
        z = (rng.standard_normal(latent.sample.concrete(batch)) * decoder.scaling_factor).astype(np.float32)
        with torch.no_grad():
            cases.append(DecoderCase(z, module(torch.from_numpy(z)).numpy()))
    io = UNetIO.for_decoder(tuple(latent.sample.shape[1:]), tuple(cases[0].reference.shape[1:]))
    log.info("exporting the %s decoder (%.1fM parameters) to ONNX opset %d", decoder.class_name,
             sum(p.numel() for p in vae.parameters()) / 1e6, opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(latent.sample.concrete(2)),), str(path), input_names=[LATENTS],
                          output_names=[IMAGE], opset_version=opset, dynamo=True, optimize=True, verbose=False,
                          external_data=False,  # decoders are far below protobuf's 2 GB: one self-contained file
                          dynamic_shapes={LATENTS: {0: torch.export.Dim("batch", min=1, max=1024)}})
    onnx.checker.check_model(str(path), full_check=False)
    return io, cases
