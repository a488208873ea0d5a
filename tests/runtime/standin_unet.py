"""A stand-in UNet for tests of the layers above the runner (denoiser, trajectories): a Runner whose
noise prediction is a fixed row-wise function of the sample, the timestep and an optional class label.
It checks wiring and arithmetic only; the real engines are tested against diffusers elsewhere."""

from __future__ import annotations

import numpy as np

from runtime.io_spec import BATCH, NOISE_PRED, SAMPLE, TIMESTEP, TensorSpec, UNetIO
from runtime.runners.base import Runner

SHAPE = (1, 4, 4)  # C, H, W


def standin_io(class_labels: bool = False) -> UNetIO:
    io = UNetIO.for_model(SHAPE[0], SHAPE[0], SHAPE[1], SHAPE[2])
    if class_labels:
        io = UNetIO(io.inputs + (TensorSpec("class_labels", "int64", (BATCH,)),), io.outputs)
    return io


class StandinUNet(Runner):
    """noise_pred = 0.5 * sample * (1 - t / 1000) + 0.01 * label, row by row; NaN rows where t == nan_at."""

    name = "stand-in"

    def __init__(self, class_labels: bool = False, nan_at: float | None = None):
        super().__init__("standin.onnx", standin_io(class_labels))
        self.nan_at = nan_at
        self.calls: list[int] = []  # rows per call

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed):
        x, t = feed[SAMPLE], feed[TIMESTEP]
        out = np.float32(0.5) * x * (np.float32(1) - t / np.float32(1000))[:, None, None, None]
        if "class_labels" in feed:
            out = out + np.float32(0.01) * feed["class_labels"].astype(np.float32)[:, None, None, None]
        if self.nan_at is not None:
            out[t == self.nan_at] = np.nan
        self.calls.append(len(t))
        return {NOISE_PRED: out.astype(np.float32)}
