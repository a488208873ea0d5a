"""Classifier-free guidance as one value: what a request asks for, made once, read by the denoiser.

A request's ``guidance_scale`` and ``guidance_rescale`` become one :class:`Guidance` (``SampleRequest.guidance``);
everything past the request reads that value and nothing else. "No guidance" has one encoding:
:data:`NO_GUIDANCE` (``active`` false), which every scale <= 1 maps to (diffusers guides above 1 only).

A guided image takes two rows of the engine call, its unconditional row and its conditional one (all
unconditional rows first, as diffusers' pipelines concatenate them); :meth:`Guidance.combine` turns their
outputs into the prediction exactly as diffusers does: ``uncond + scale * (cond - uncond)``, then, with a
``rescale`` above 0, diffusers' ``rescale_noise_cfg`` (Lin et al. 2023, "Common Diffusion Noise Schedules
and Sample Steps are Flawed", section 3.4): the guided prediction's standard deviation per image brought
towards the conditional one's, mixed by ``rescale``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance of one request: ``scale`` > 1 guides (:attr:`active`); ``rescale`` in [0, 1]."""

    scale: float = 1.0
    rescale: float = 0.0

    @classmethod
    def of(cls, scale: float, rescale: float = 0.0) -> Guidance:
        """The guidance a request's checked fields ask for; :data:`NO_GUIDANCE` for any scale <= 1."""
        return cls(float(scale), float(rescale)) if scale > 1 else NO_GUIDANCE

    @property
    def active(self) -> bool:
        return self.scale > 1

    @property
    def rows_per_image(self) -> int:
        """Engine rows per image: the unconditional and the conditional one when active."""
        return 2 if self.active else 1

    def combine(self, output: np.ndarray) -> np.ndarray:
        """The prediction from the engine's rows of one request (unconditional rows first when active)."""
        if not self.active:
            return output
        n = len(output) // 2
        uncond, cond = output[:n], output[n:]
        guided = uncond + F32(self.scale) * (cond - uncond)
        return rescale_noise_cfg(guided, cond, self.rescale) if self.rescale > 0 else guided


NO_GUIDANCE = Guidance()


def rescale_noise_cfg(guided: np.ndarray, cond: np.ndarray, rescale: float) -> np.ndarray:
    """diffusers' ``rescale_noise_cfg``: per image, ``guided * std(cond) / std(guided)`` mixed with ``guided`` by
    ``rescale``; standard deviations over all but the first axis with Bessel's correction (``torch.std``), each
    image on its own (so an image's result does not depend on the others in its call)."""

    def std(rows: np.ndarray) -> np.ndarray:
        out = np.array([np.std(row, ddof=1, dtype=np.float64) for row in rows], dtype=F32)
        return out.reshape((len(rows),) + (1,) * (rows.ndim - 1))

    rescaled = guided * (std(cond) / std(guided))
    return F32(rescale) * rescaled + F32(1 - rescale) * guided
