"""Every TensorRT name our code uses exists in each supported release (10.12.0, 10.16, 11.1).

The names are collected by reading our TensorRT modules (``ast``), not from a hand list: every
attribute chain rooted at the ``tensorrt`` module (``trt.MemoryPoolType.WORKSPACE``), and every
attribute used on an object that came from TensorRT (followed through assignments: ``runtime =
trt.Runtime(...)``, ``self._engine = runtime.deserialize_cuda_engine(...)``, and parameters named
``engine``). They are checked against ``shared/reference/tensorrt-api/``, the names the Python
bindings define at each tag (copied into ``tests/export/tensorrt_api/``). Polygraphy's own use of TensorRT is Polygraphy's to check (NVIDIA tests
it against each release); what we pass it (``trt.MemoryPoolType.WORKSPACE``) is collected here. The
stand-in TensorRT of the wiring tests defines only names from these lists too.
"""

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.runtime import trt_standin

REFERENCE = Path(__file__).parent / "tensorrt_api"  # copied from shared/reference/tensorrt-api/
VERSIONS = ("10.12.0", "10.16", "11.1")
MODULES = ("export/trt.py", "runtime/runners/trt.py")
SEEDS = {"trt", "engine"}  # the tensorrt module, and parameters that receive an engine
# Attributes our code sets on its own objects or that Python defines: not TensorRT's.
PYTHON = {"__version__"}


def reference_names(version: str) -> set[str]:
    path = REFERENCE / f"{version}.txt"
    names = set()
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("\t")[1])
    return names


def _root(node):
    """The dotted name an expression starts from (``self._engine`` for ``self._engine.x()``), or None."""
    while isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def used_names(source: str) -> set[str]:
    tree = ast.parse(source)
    tainted = set(SEEDS)

    def is_trt(expr) -> bool:
        name = _root(expr)
        if name is None:
            return False
        return any(name == t or name.startswith(t + ".") for t in tainted)

    changed = True
    while changed:  # follow assignments to a fixed point
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and is_trt(node.value):
                for target in node.targets:
                    for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                        name = _root(t)
                        if name and name not in tainted:
                            tainted.add(name)
                            changed = True
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_trt(node.value):
            names.add(node.attr)
    return names - PYTHON


def our_names() -> set[str]:
    names = set()
    for module in MODULES:
        names |= used_names((ROOT / module).read_text())
    return names


def test_collector_finds_what_the_runner_uses():
    """The collector must see through assignments (a test that cannot fail proves nothing)."""
    names = our_names()
    for expected in ("Runtime", "deserialize_cuda_engine", "create_execution_context", "execute_async_v3",
                     "set_input_shape", "get_tensor_profile_shape", "MemoryPoolType", "WORKSPACE", "TensorIOMode"):
        assert expected in names
    assert "shape" not in names and "ctypes" not in names  # numpy's, not TensorRT's


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_we_use_exists(version):
    missing = sorted(our_names() - reference_names(version))
    assert not missing, f"TensorRT {version} has no {missing}"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_stand_in_defines_only_real_names(version):
    missing = sorted(trt_standin.public_names() - reference_names(version))
    assert not missing, f"the stand-in defines {missing}, which TensorRT {version} does not"
