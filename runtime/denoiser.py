"""Between the runner and the samplers: what the model needs besides the sample and its timesteps.

After k-diffusion's denoiser wrappers: the samplers and the batcher speak ``eps = denoiser(x, t,
conditioning)``; the denoiser alone knows the engine's input and output names (from the manifest's
I/O declaration) and builds the feed. A conditional UNet (class labels, cross-attention states) adds
its inputs to the I/O declaration; they arrive here as ``conditioning``, one row per image, and are
gathered across requests like the sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InputError
from .io_spec import NOISE_PRED, SAMPLE, TIMESTEP
from .runners.base import Runner


class Denoiser:
    def __init__(self, runner: Runner):
        self.runner = runner
        io = runner.io
        self.conditioning_names = tuple(n for n in io.input_names if n not in (SAMPLE, TIMESTEP))
        self._specs = {t.name: t for t in io.inputs}

    def check_conditioning(self, conditioning: Mapping[str, np.ndarray] | None, rows: int) -> dict[str, np.ndarray]:
        """The conditioning inputs of one request (``rows`` images), checked against the engine's declaration."""
        conditioning = dict(conditioning or {})
        if set(conditioning) != set(self.conditioning_names):
            want = ", ".join(self.conditioning_names) or "none"
            raise InputError(f"this engine takes conditioning inputs: {want}; got {', '.join(sorted(conditioning)) or 'none'}")
        out = {}
        for name, value in conditioning.items():
            spec = self._specs[name]
            arr = np.ascontiguousarray(value, dtype=np.dtype(spec.dtype))
            if arr.shape != spec.concrete(rows):
                raise InputError(f"conditioning {name!r} must have shape {spec.concrete(rows)}, got {arr.shape}")
            out[name] = arr
        return out

    def __call__(self, x: np.ndarray, t: np.ndarray, conditioning: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        feed = {SAMPLE: x, TIMESTEP: t, **(conditioning or {})}
        return self.runner.infer(feed)[NOISE_PRED]
