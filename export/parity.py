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


@dataclass(frozen=True)
class ParityCase:
    """One gate input and what PyTorch computes for it."""

    sample: np.ndarray
    timesteps: np.ndarray
    reference: np.ndarray

    @property
    def batch(self) -> int:
        return len(self.timesteps)


def torch_references(unet, io: UNetIO, num_train_timesteps: int, seed: int = 0) -> list[ParityCase]:
    """PyTorch's outputs for the gate's inputs, computed before the export so that the torch model and
    its activations need not be resident together with ONNX Runtime's session (the gate's peak memory)."""
    import torch

    rng = np.random.default_rng(seed)
    cases = []
    for batch in PARITY_BATCHES:
        sample = rng.standard_normal(io.sample.concrete(batch), dtype=np.float32)
        t = gate_timesteps(batch, num_train_timesteps)
        with torch.no_grad():
            reference = unet(torch.from_numpy(sample), torch.from_numpy(t), return_dict=False)[0].numpy()
        cases.append(ParityCase(sample, t, reference))
    return cases


def check_parity(onnx_path: Path, cases: list[ParityCase], atol: float = FP32_PARITY_ATOL) -> list[ParityResult]:
    """Runs the ONNX model in ONNX Runtime (CPU) on ``cases``; raises GateError past ``atol``."""
    import onnxruntime as ort

    from runtime.runners.ort import session_options

    options = session_options()
    options.enable_cpu_mem_arena = False  # a few calls: give each call's activations back (peak -0.4 GB at cat-256)
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    results = []
    for case in cases:
        (got,) = session.run([NOISE_PRED], {SAMPLE: case.sample, TIMESTEP: case.timesteps})
        err = float(np.max(np.abs(got.astype(np.float64) - case.reference))) if np.isfinite(got).all() else float("inf")
        results.append(ParityResult(case.batch, case.timesteps.tolist(), err, float(np.max(np.abs(case.reference)))))
        if not err <= atol:
            raise GateError(
                f"parity gate failed: ONNX Runtime differs from PyTorch by {err:.3g} (tolerance {atol:g}) at batch "
                f"{case.batch}, timesteps {case.timesteps.tolist()}; nothing was written. This is an export bug: report it with the model config"
            )
    return results
