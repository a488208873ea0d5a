"""The runtime runs in a process where `import torch` (and diffusers) fail."""

import subprocess
import sys

from tests.conftest import ROOT, import_blocker

BLOCK = import_blocker("torch", "diffusers")


def run_blocked(code: str):
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_block_works():
    r = run_blocked("import torch")
    assert r.returncode != 0 and "blocked" in r.stderr


def test_sample_cli_without_torch(tiny_engine, tmp_path):
    code = (
        "import runpy\n"
        f"sys.argv = ['runtime.sample', '--engine', {str(tiny_engine)!r}, '--out', {str(tmp_path)!r}, "
        "'--steps', '3', '--noise', 'torch', '--batch', '2']\n"
        "try:\n"
        "    runpy.run_module('runtime.sample', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert not any(m.split('.')[0] in ('torch', 'diffusers') for m in sys.modules)\n"
    )
    r = run_blocked(code)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddpm_0000.png", "ddpm_0001.png"]


def test_every_runtime_module_imports_without_torch():
    code = (
        "import pkgutil, importlib, runtime\n"
        "for m in pkgutil.walk_packages(runtime.__path__, 'runtime.'):\n"
        "    importlib.import_module(m.name)\n"
    )
    r = run_blocked(code)
    assert r.returncode == 0, r.stderr


def test_layers_on_top_of_the_runtime_import_without_torch():
    """The C ABI's Python side and the Triton repository writer (the Triton model itself is served from an
    environment without torch in tests/export/test_triton.py)."""
    r = run_blocked("import embed.host, export.triton, runtime.steps\n")
    assert r.returncode == 0, r.stderr
