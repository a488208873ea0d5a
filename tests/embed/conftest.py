"""Builds embed/ (the C ABI, the example, the test drivers) once per session with CMake, in a temp dir."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _missing() -> str | None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed (pip install 'ddpm-deploy[test]')"
    return None


@pytest.fixture(scope="session")
def embed_build(tmp_path_factory) -> Path:
    why = _missing()
    if why:
        pytest.skip(f"cannot build embed/: {why}")
    build = tmp_path_factory.mktemp("embed_build")
    for cmd in (
        ["cmake", "-S", str(ROOT / "embed"), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}", "-DDDPM_BUILD_TESTS=ON"],
        ["cmake", "--build", str(build), "-j2"],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return build
