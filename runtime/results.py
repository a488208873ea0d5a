"""What a request gave: its images, the request, the sampler settings it ran with, and each PNG's metadata."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__

if TYPE_CHECKING:
    from .requests import SampleRequest


@dataclass(frozen=True)
class SamplerSettings:
    """What a request was sampled with, defaults resolved: written into every PNG's metadata."""

    scheduler: str
    steps: int
    eta: float
    config: Mapping[str, Any]  # the sampler's scheduler config (diffusers keys), as used
    full_steps: tuple[int, ...] | None = None  # feature reuse: the steps that ran the full UNet (None: all)
    timesteps: tuple[int, ...] | None = None  # the steps, where the request gave them (or asked for tuned ones)
    strength: float | None = None  # image-to-image: the strength it ran with (None: not image-to-image)
    jumps: tuple[int, int] | None = None  # RePaint: (jump_length, jump_n_sample)


def _array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest()


@dataclass(frozen=True)
class SampleResult:
    """What a request gave: uint8 images [count, H, W, C], the request and the settings it was sampled with."""

    images: np.ndarray
    request: SampleRequest
    settings: SamplerSettings
    engine: str  # the engine file's name
    engine_sha256: str | None

    def png_metadata(self, index: int) -> dict[str, str]:
        """The text chunks of image ``index`` (what `runtime.sample` writes, and the service returns)."""
        request, settings = self.request, self.settings
        seeds = request.image_seeds
        return {
            "seed": str(seeds[index] if seeds else request.seed),
            "seed_mode": "per-image" if seeds else "shared",
            "batch_index": str(index),
            "noise": request.noise,
            "steps": str(settings.steps),
            "scheduler": json.dumps({**settings.config, "eta": settings.eta}, sort_keys=True),
            **({"timesteps": ",".join(map(str, settings.timesteps))} if settings.timesteps else {}),
            **({"feature_cache_full_steps": ",".join(map(str, settings.full_steps))} if settings.full_steps else {}),
            **self._conditioning_metadata(index),
            **self._image_metadata(index),
            "engine": self.engine,
            "engine_sha256": str(self.engine_sha256),
            "software": f"ddpm-deploy {__version__}",
        }

    def _image_metadata(self, index: int) -> dict[str, str]:
        """The image inputs of image ``index``: the sha256 of its starting image and mask (float32 little-endian bytes,
        in the model's range / 0 and 1), image-to-image's strength, RePaint's jumps."""
        request, settings, out = self.request, self.settings, {}
        for name in ("image", "mask_image"):
            value = getattr(request, name)
            if value is not None:
                out[f"{name}_sha256"] = _array_sha256(value[index if len(value) > 1 else 0])
        if settings.strength is not None:
            out["strength"] = repr(settings.strength)
        if settings.jumps is not None:
            out["jump_length"], out["jump_n_sample"] = (str(j) for j in settings.jumps)
        return out

    def _conditioning_metadata(self, index: int) -> dict[str, str]:
        """The image's condition: its class label, the sha256 of its embeddings (float32 little-endian
        bytes), the guidance scale."""
        request, out = self.request, {}
        if request.class_labels is not None:
            labels = request.class_labels
            out["class_label"] = str(labels[index] if len(labels) > 1 else labels[0])
        for name in ("embeddings", "negative_embeddings"):
            value = getattr(request, name)
            if value is not None:
                out[f"{name}_sha256"] = _array_sha256(value[index] if value.ndim == 3 and len(value) > 1 else value.reshape(value.shape[-2:]))
        guidance = request.guidance
        if guidance.active:
            out["guidance_scale"] = repr(guidance.scale)
        if guidance.rescale > 0:
            out["guidance_rescale"] = repr(guidance.rescale)
        return out
