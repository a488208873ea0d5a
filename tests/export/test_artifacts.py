"""export.artifacts: every stage stages where the leftover cleaner looks."""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from export.artifacts import OLD_STAGING_PREFIXES, remove_leftovers, staging
from tests.conftest import ROOT


def test_staging_folder_is_removed_on_exit_and_on_error(tmp_path):
    with staging(tmp_path, "fp16") as work:
        (work / "x").write_text("partial")
    with pytest.raises(RuntimeError), staging(tmp_path, "bf16") as work:
        raise RuntimeError("gate failed")
    assert list(tmp_path.iterdir()) == []


def test_remove_leftovers_clears_every_stage_and_older_releases(tmp_path):
    for stage in ("export", "fp16", "bf16", "trt"):
        staging(tmp_path, stage).__enter__()  # entered, never exited: as a killed build leaves it
    for prefix in OLD_STAGING_PREFIXES:
        (tmp_path / f"{prefix}abc").mkdir()
    (tmp_path / ".unet.onnx.tmp").write_bytes(b"partial")
    (tmp_path / "unet.onnx").write_bytes(b"a finished artifact")
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.onnx"]


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.robustness
def test_sigkill_during_bf16_build_leaves_nothing_after_the_next_stage(tiny_engine, tmp_path):
    """Kill `export.bf16` once its staging folder exists; the next stage run in the folder (export.fp16) must
    remove what it left. (Before the shared staging prefix, `.bf16-*` folders survived this.)"""
    pytest.importorskip("openvino")
    engines = tmp_path / "engines"
    engines.mkdir()
    for name in ("unet.onnx", "manifest.json"):
        shutil.copy2(tiny_engine.parent / name, engines / name)
    proc = subprocess.Popen([sys.executable, "-m", "export.bf16", "--engines", str(engines), "--precision", "fp32"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _hidden(engines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _hidden(engines)
    assert left, f"the BF16 build finished or failed before its staging folder appeared: {proc.stderr.read()}"
    r = subprocess.run([sys.executable, "-m", "export.fp16", "--engines", str(engines)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _hidden(engines) == [], f"left by the killed BF16 build ({left}), still there after export.fp16"
