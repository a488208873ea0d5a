"""Between the runner and the samplers: what the model needs besides the sample and its timesteps.

After k-diffusion's denoiser wrappers: the samplers and the batcher speak ``eps = denoiser(x, t,
conditioning)``; the denoiser alone knows the engine's input and output names (from the manifest's
I/O declaration) and builds the feed. A conditional UNet (class labels, cross-attention states) adds
its inputs to the I/O declaration; they arrive here as ``conditioning``, one row per engine row
(:func:`runtime.conditioning.request_rows` makes them from a request), gathered across requests like
the sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .io_spec import NOISE_PRED, SAMPLE, TIMESTEP
from .runners.base import Runner


class Denoiser:
    def __init__(self, runner: Runner):
        self.runner = runner
        self.io = io = runner.io
        self.conditioning_names = tuple(n for n in io.input_names if n not in (SAMPLE, TIMESTEP))

    def __call__(self, x: np.ndarray, t: np.ndarray, conditioning: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        feed = {SAMPLE: x, TIMESTEP: self.io.timestep_feed(t), **(conditioning or {})}
        return self.runner.infer(feed)[NOISE_PRED]
