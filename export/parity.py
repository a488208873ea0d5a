"""The parity gate: the exported model must compute what the PyTorch model computes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.errors import GateError
from runtime.io_spec import NOISE_PRED, SAMPLE, TIMESTEP, UNetIO

# Largest |ONNX Runtime - PyTorch| accepted on the FP32 noise prediction. Measured errors are around
# 2e-6 for tiny models and 5e-6 for the full reference config; 1e-3 leaves room for other CPUs'
# kernels while catching any real divergence (a wrong op or a baked-in shape gives errors of order 1).
FP32_PARITY_ATOL = 1e-3
PARITY_BATCHES = (1, 3)


@dataclass(frozen=True)
class ParityResult:
    batch: int
    timesteps: list[float]
    max_abs_error: float
    max_abs_reference: float

    def to_dict(self) -> dict:
        return {
            "batch": self.batch,
            "timesteps": self.timesteps,
            "max_abs_error": self.max_abs_error,
            "max_abs_reference": self.max_abs_reference,
        }


def gate_timesteps(batch: int, num_train_timesteps: int) -> np.ndarray:
    """Distinct timesteps per element spread over the training range (both ends included)."""
    if batch == 1:
        return np.array([num_train_timesteps // 2], dtype=np.float32)
    return np.round(np.linspace(0, num_train_timesteps - 1, batch)).astype(np.float32)


def check_parity(
    unet, onnx_path: Path, io: UNetIO, num_train_timesteps: int, atol: float = FP32_PARITY_ATOL, seed: int = 0
) -> list[ParityResult]:
    """Runs the ONNX model in ONNX Runtime (CPU) against the PyTorch model; raises GateError past ``atol``."""
    import onnxruntime as ort
    import torch

    from runtime.runners.ort import session_options

    session = ort.InferenceSession(str(onnx_path), sess_options=session_options(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    results = []
    for batch in PARITY_BATCHES:
        sample = rng.standard_normal(io.sample.concrete(batch), dtype=np.float32)
        t = gate_timesteps(batch, num_train_timesteps)
        with torch.no_grad():
            reference = unet(torch.from_numpy(sample), torch.from_numpy(t), return_dict=False)[0].numpy()
        (got,) = session.run([NOISE_PRED], {SAMPLE: sample, TIMESTEP: t})
        err = float(np.max(np.abs(got.astype(np.float64) - reference))) if np.isfinite(got).all() else float("inf")
        results.append(ParityResult(batch, t.tolist(), err, float(np.max(np.abs(reference)))))
        if not err <= atol:
            raise GateError(
                f"parity gate failed: ONNX Runtime differs from PyTorch by {err:.3g} (tolerance {atol:g}) at batch "
                f"{batch}, timesteps {t.tolist()}; nothing was written. This is an export bug: report it with the model config"
            )
    return results
