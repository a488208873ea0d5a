"""Packaging: ONNX Runtime comes through an extra (``[cpu]``: onnxruntime, ``[gpu]``: onnxruntime-gpu), a missing one
is exit 4 in one line, two installed side by side get one warning line; the built wheel installs into a fresh
virtual environment without torch and samples with ``ddpm-sample``."""

import logging
import subprocess
import sys
import tomllib

import pytest

from runtime.runners import ort as ort_module
from tests.conftest import ROOT, import_blocker

BLOCK_ORT = import_blocker("onnxruntime") + "import runpy\n"


def test_onnxruntime_comes_through_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(dep.startswith("onnxruntime") for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(dep.startswith("onnxruntime>=") for dep in extras["cpu"])
    assert any(dep.startswith("onnxruntime-gpu>=") for dep in extras["gpu"])
    for name in ("export", "serve", "test"):  # no extra but the two pulls either wheel in
        assert not any(dep.startswith("onnxruntime") for dep in extras[name])


def test_without_onnxruntime_sampling_is_exit_4_in_one_line(demo_engine, tmp_path):
    code = BLOCK_ORT + (f"sys.argv = ['runtime.sample', '--engine', {str(demo_engine)!r}, '--out', {str(tmp_path)!r}, "
                        "'--steps', '2']\nrunpy.run_module('runtime.sample', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stderr
    assert r.stderr.strip().splitlines() == [
        "runtime.sample: error: ONNX Runtime is not installed here: `pip install 'ddpm-deploy[cpu]'` (onnxruntime), or "
        "`pip install 'ddpm-deploy[gpu]'` (onnxruntime-gpu) on an NVIDIA GPU host"]
    assert not any(tmp_path.iterdir())


def test_two_onnxruntime_wheels_get_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(ort_module, "installed_wheels", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with caplog.at_level(logging.WARNING, logger=ort_module.__name__):
        assert ort_module._import_onnxruntime() is not None
    (record,) = caplog.records
    assert "onnxruntime and onnxruntime-gpu are all installed" in record.getMessage()
    assert "`pip uninstall -y onnxruntime onnxruntime-gpu`" in record.getMessage()
    caplog.clear()
    monkeypatch.setattr(ort_module, "installed_wheels", lambda: ["onnxruntime"])
    ort_module._import_onnxruntime()
    assert not caplog.records


@pytest.mark.slow  # builds the wheel and a virtual environment from the package index (a minute or two)
def test_wheel_installs_without_torch_and_samples(demo_engine, tmp_path):
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(ROOT)], check=True, timeout=600)
    (wheel,) = wheels.glob("ddpm_deploy-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, f"{wheel}[cpu]"], check=True, timeout=900)
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                            capture_output=True, text=True, check=True).stdout.lower()
    assert "onnxruntime==" in listed and "torch" not in listed and "diffusers" not in listed
    out = tmp_path / "out"
    r = subprocess.run([str(venv / "bin" / "ddpm-sample"), "--engine", str(demo_engine), "--steps", "3", "--count", "2",
                        "--out", str(out), "--quiet", "--no-cache"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ddpm_0000.png", "ddpm_0001.png"]
