"""The scheduler, table and noise comparisons again under each of torch's vectorised CPU kernel sets.

torch picks its kernels by ``ATEN_CPU_CAPABILITY`` (``avx512`` on the machines we meet, ``avx2`` on
many users'); diffusers' tables and torch's ``randn`` go through those kernels (linspace, cumprod,
Box-Muller's log/sin/cos), so our bit-exact claims must hold under both. The ``default`` (scalar)
set is not promised: there torch's linspace rounds twice instead of a fused multiply-add and
``randn`` calls libm, so tables and torch-compatible noise differ in the last bits (README).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.cpu import cpu_flags

ROOT = Path(__file__).resolve().parents[2]
COMPARISONS = [f"tests/runtime/{name}" for name in
               ("test_tables.py", "test_ddpm.py", "test_ddim.py", "test_dpmpp.py", "test_noise.py")]
NESTED = "DDPM_DEPLOY_CAPABILITY_RUN"


def _default_capability() -> str:
    """The kernel set torch runs in this process (``ATEN_CPU_CAPABILITY`` when set, else the CPU's best)."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


@pytest.mark.skipif(os.environ.get(NESTED) == "1", reason="already inside a capability run")
@pytest.mark.parametrize("capability,flag", [("avx2", "avx2"), ("avx512", "avx512f")])
def test_comparisons_pass_under_capability(capability, flag):
    if flag not in cpu_flags():
        pytest.skip(f"this CPU has no {flag}")
    if _default_capability() == capability:
        pytest.skip(f"torch's default kernel set here is {capability}: the suite itself runs these comparisons under it")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, NESTED: "1"}
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip().lower() == capability, probe.stdout  # torch really runs that kernel set
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *COMPARISONS],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {summary}\n{run.stdout[-4000:]}"


def test_torch_sqrt_is_an_mkl_kernel_within_one_ulp():
    """Why diffusers' coefficients differ between CPUs (tests/runtime/torch_arith.py): torch.sqrt is MKL's
    kernel for this CPU, and every MKL kernel is within MKL_HA_ULPS of the correctly rounded root, which
    is what the runtime computes and what the tolerances of the scheduler tests are built on."""
    import numpy as np
    import torch

    from tests.runtime.torch_arith import MKL_HA_ULPS, mkl_sqrt_kernels, ulps_apart

    if "avx512f" not in cpu_flags():
        pytest.skip("MKL's AVX-512 kernel cannot run on this CPU")
    try:
        kernels = mkl_sqrt_kernels()
    except (OSError, AttributeError):
        pytest.skip("this torch build does not export MKL's kernels")
    x = np.random.default_rng(0).uniform(1e-6, 1, 100_000).astype(np.float32)
    exact = np.sqrt(x)
    results = {name: kernel(x) for name, kernel in kernels.items()}
    for name, r in results.items():
        assert ulps_apart(r, exact).max() <= MKL_HA_ULPS, name
    assert np.array_equal(results["L9"], exact)  # MKL's AVX2 kernel is correctly rounded
    mine = torch.from_numpy(x).sqrt().numpy()
    assert any(np.array_equal(mine, r) for r in results.values()), "torch.sqrt is none of MKL's kernels"
