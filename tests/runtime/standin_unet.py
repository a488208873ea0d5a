"""A stand-in UNet for tests of the layers above the runner (denoiser, trajectories, conditioning): a
Runner whose noise prediction is a fixed row-wise function of the sample, the timestep and optional
class labels and encoder hidden states. It checks wiring and arithmetic only; the real engines are
tested against diffusers elsewhere."""

from __future__ import annotations

import numpy as np

from runtime.io_spec import CLASS_LABELS, ENCODER_HIDDEN_STATES, NOISE_PRED, SAMPLE, TIMESTEP, SequenceRange, UNetIO
from runtime.runners.base import Runner

SHAPE = (1, 4, 4)  # C, H, W


NUM_CLASSES = 11
DIM = 3  # encoder hidden states' width


def standin_io(class_labels: bool = False, sequence: SequenceRange | None = None) -> UNetIO:
    return UNetIO.for_model(SHAPE[0], SHAPE[0], SHAPE[1], SHAPE[2], num_classes=NUM_CLASSES if class_labels else None,
                            cross_attention_dim=DIM if sequence else None, sequence=sequence)


class StandinUNet(Runner):
    """noise_pred = 0.5 * sample * (1 - t / 1000) + 0.01 * label + 0.1 * mean(encoder hidden states), row by
    row; NaN rows where t == nan_at."""

    name = "stand-in"

    def __init__(self, class_labels: bool = False, nan_at: float | None = None, sequence: SequenceRange | None = None):
        super().__init__("standin.onnx", standin_io(class_labels, sequence))
        self.nan_at = nan_at
        self.calls: list[int] = []  # rows per call

    def _activate(self) -> None:
        pass

    def _deactivate(self) -> None:
        pass

    def _infer(self, feed):
        x, t = feed[SAMPLE], feed[TIMESTEP]
        out = np.float32(0.5) * x * (np.float32(1) - t / np.float32(1000))[:, None, None, None]
        if CLASS_LABELS in feed:
            out = out + np.float32(0.01) * feed[CLASS_LABELS].astype(np.float32)[:, None, None, None]
        if ENCODER_HIDDEN_STATES in feed:
            out = out + np.float32(0.1) * feed[ENCODER_HIDDEN_STATES].mean(axis=(1, 2), dtype=np.float32)[:, None, None, None]
        if self.nan_at is not None:
            out[t == self.nan_at] = np.nan
        self.calls.append(len(t))
        return {NOISE_PRED: out.astype(np.float32)}
