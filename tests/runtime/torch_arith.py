"""What differs between CPUs in diffusers' scheduler arithmetic, and the units the tests bound it in.

torch's CPU ``sqrt`` (and so ``x ** 0.5``), ``exp`` and ``log`` on float32 tensors call Intel MKL's
vector math library (``vmsSqrt`` etc., mode VML_HA), whatever ``ATEN_CPU_CAPABILITY`` says. MKL then
picks a kernel by CPU vendor and ISA; the kernels are exported from ``libtorch_cpu.so`` and
:func:`mkl_sqrt_kernels` calls them directly. Measured on 10^5 uniform float32 inputs in (0, 1]:

========================  ==============================  ==========================
MKL kernel                 taken on                        not correctly rounded
========================  ==============================  ==========================
``sSqrt_Z0HAynn``          Intel with AVX-512 (Xeon)       0.7 % (1 ulp)
``sSqrt_L9HAynn``          Intel with AVX2                 0
``sSqrt_EXHAynn``          AMD EPYC (Zen 4 and Zen 5)      20 % (1 ulp)
========================  ==============================  ==========================

(On the AMD EPYC family 25 machine of the issue-9 session, gdb on ``torch.sqrt`` stops in
``mkl_vml_kernel_sSqrt_EXHAynn``; its output equals ``torch.sqrt`` there bit for bit.) Neither
``ATEN_CPU_CAPABILITY``, numpy's SIMD dispatch nor ``MKL_ENABLE_INSTRUCTIONS``/``MKL_CBWR`` changes
it. So no numpy table can equal diffusers' on every CPU where a coefficient goes through a square
root, exp or log: the runtime computes them correctly rounded (the same on every CPU) and the tests
(1) check that those coefficients are within :data:`MKL_HA_ULPS` of torch's, and (2) replace them by
torch's own values to show that every step is then bit-equal to diffusers'.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import torch

# MKL's VML_HA ("high accuracy") functions are documented as accurate to within 1 ulp.
MKL_HA_ULPS = 1
# float32 unit roundoff: one correctly rounded operation has relative error at most U32.
U32 = 2.0**-24


def ulp(x) -> np.ndarray:
    """The float32 spacing at |x|."""
    return np.spacing(np.abs(np.asarray(x, dtype=np.float32))).astype(np.float64)


def ulps_apart(a, b) -> np.ndarray:
    """How many float32 values lie between a and b (0 where equal; same-sign finite inputs)."""
    a = np.asarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(b, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.abs(a - b)


def pow_half(values) -> np.ndarray:
    """``x ** 0.5`` of each value as a 0-dim float32 tensor, as diffusers' ``step`` computes its scalars."""
    return np.array([(torch.tensor(float(v), dtype=torch.float32) ** 0.5).item() for v in np.asarray(values)], dtype=np.float32)


def mkl_sqrt_kernels() -> dict[str, callable]:
    """MKL's float32 square-root kernels inside libtorch_cpu.so, callable on any x86-64 CPU with AVX-512."""
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))

    def wrap(symbol):
        fn = getattr(lib, symbol)

        def call(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32)
            out = np.empty_like(x)
            fn(ctypes.c_int64(x.size), x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p))
            return out

        return call

    return {name: wrap(f"mkl_vml_kernel_sSqrt_{name}HAynn") for name in ("Z0", "L9", "EX")}
