"""What the benchmark ran on, and the CPU's FP32 FMA peak."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

from runtime.cpu import cpu_flags, cpu_generation, cpu_model


def clock_ghz() -> float:
    """Nominal clock: the highest 'cpu MHz' /proc/cpuinfo reports (turbo is not visible in a VM)."""
    try:
        values = [float(v) for v in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M)]
    except OSError:
        values = []
    return max(values) / 1000 if values else float("nan")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def fp32_peak_gflops(fma_units: int = 2) -> tuple[float, str]:
    """cores x clock x FP32 lanes x 2 (an FMA is two flops) x FMA units per core.

    The number of FMA units is not visible from software: Xeon server cores with AVX-512 have two
    (ports 0 and 5); we assume ``fma_units`` and say so in the report.
    """
    flags = cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags and "fma" in flags else 4
    peak = usable_cores() * clock_ghz() * lanes * 2 * fma_units
    how = f"{usable_cores()} cores x {clock_ghz():.2f} GHz x {lanes} FP32 lanes x 2 (FMA) x {fma_units} FMA units"
    return peak, how


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "onnxruntime", "torch", "diffusers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def describe() -> str:
    peak, how = fp32_peak_gflops()
    v = ", ".join(f"{k} {val}" for k, val in versions().items())
    generation = cpu_generation()
    return f"{cpu_model()}{f' ({generation})' if generation else ''}, {usable_cores()} cores, FP32 FMA peak {peak:.0f} GFLOP/s ({how}); {v}"
