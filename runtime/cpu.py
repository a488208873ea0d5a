"""What this CPU offers an engine: its instruction-set flags, and how an INT8 engine runs here.

An INT8 engine (``python -m export.int8``) pays only where the CPU multiplies 8-bit integers into 32-bit sums
at a higher rate than floats: VNNI (AVX512_VNNI, AVX_VNNI) or AMX. Elsewhere (AVX2 only, e.g. AMD Zen 3)
ONNX Runtime's integer kernels add pairs of 8-bit products in 16 bits, which saturate on full-range int8
weights (ONNX Runtime's documented U8S8 caveat): a 10-step digits image comes out at 26 dB against FP32 where
the exact INT8 arithmetic gives 48 dB. Such CPUs are refused (exit 4), unless
``DDPM_DEPLOY_INT8_SIMULATE=1``: then the engine's quantized arithmetic is computed in FP32 (ONNX Runtime
leaves each DequantizeLinear → layer → QuantizeLinear unfused), which is what a VNNI CPU computes up to the
rounding of its requantization, at less than FP32 speed: for tests, and for checking an engine off its target CPU.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from .errors import BackendUnavailableError

INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # /proc/cpuinfo's names, best first
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # BF16 units (OpenVINO's BF16 inference precision)
SIMULATED = "simulated"
INT8_SIMULATE_ENV = "DDPM_DEPLOY_INT8_SIMULATE"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo names them (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return frozenset(match.group(1).split()) if match else frozenset()


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (a VM may say only "AMD EPYC": see :func:`cpu_generation`)."""
    try:
        match = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return platform.processor()


def cpu_generation() -> str:
    """ "CPU family 25 model 1" from /proc/cpuinfo: the VM's model name ("AMD EPYC") does not say which."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    family = re.search(r"^cpu family\s*:\s*(\d+)$", text, re.M)
    model = re.search(r"^model\s*:\s*(\d+)$", text, re.M)
    return f"CPU family {family.group(1)} model {model.group(1)}" if family and model else ""


def int8_arithmetic(flags: frozenset[str] | None = None) -> str:
    """How an INT8 engine runs here: the best of INT8_FLAGS this CPU has, else SIMULATED under
    ``DDPM_DEPLOY_INT8_SIMULATE=1``; raises BackendUnavailableError (exit 4) otherwise."""
    flags = cpu_flags() if flags is None else flags
    units = next((flag for flag in INT8_FLAGS if flag in flags), None)
    if units is not None:
        return units
    if os.environ.get(INT8_SIMULATE_ENV) == "1":
        return SIMULATED
    raise BackendUnavailableError(
        f"this CPU has no VNNI or AMX units (none of {', '.join(INT8_FLAGS)} in /proc/cpuinfo): ONNX Runtime's integer "
        f"kernels here saturate full-range 8-bit products and are no use for an INT8 engine; use the FP32 engine "
        f"(unet.onnx), or set {INT8_SIMULATE_ENV}=1 to compute the INT8 arithmetic in FP32 (slow: for checking it)"
    )
