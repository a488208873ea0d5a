"""Between the runner and the samplers: what the model needs besides the sample and its timesteps.

After k-diffusion's denoiser wrappers: the samplers and the batcher speak ``eps = denoiser(x, t,
conditioning)``; the denoiser alone knows the engine's input and output names (from the manifest's
I/O declaration) and builds the feed. A conditional UNet (class labels, cross-attention states) adds
its inputs to the I/O declaration; they arrive here as ``conditioning``, one row per engine row
(:func:`runtime.conditioning.request_rows` makes them from a request), gathered across requests like
the sample. With feature reuse (:mod:`runtime.feature_cache`) the denoiser also holds the full and
shallow graphs' denoisers (``reuse``, by role: the same call, plus the ``deep_feature`` output or input).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .io_spec import DEEP_FEATURE, NOISE_PRED, SAMPLE, TIMESTEP
from .runners.base import Runner


class Denoiser:
    def __init__(self, runner: Runner):
        self.runner = runner
        self.io = io = runner.io
        self.conditioning_names = tuple(n for n in io.input_names if n not in (SAMPLE, TIMESTEP, DEEP_FEATURE))
        self.reuse: dict[str, Denoiser] = {}  # the feature-reuse graphs' denoisers by role, once opened

    def __call__(self, x: np.ndarray, t: np.ndarray, conditioning: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        return self.outputs(x, t, conditioning)[NOISE_PRED]

    def outputs(self, x: np.ndarray, t: np.ndarray, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every output of the engine (the noise prediction, and a full graph's deep feature); ``inputs``: the
        others besides sample and timestep (conditioning, a shallow graph's deep feature)."""
        return self.runner.infer({SAMPLE: x, TIMESTEP: self.io.timestep_feed(t), **(inputs or {})})
