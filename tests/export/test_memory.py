"""Peak memory of the export steps, under hard limits (a memory cgroup per command, tests/memlimit.py).

Before this was bounded, ``export.fp16`` on the mid-size model below peaked at 944 MB (two ONNX Runtime
sessions running all 8 gate timesteps as one batch, next to the converter's graphs) and so failed
the 512 MiB limit; it now peaks at about 260 MB. The full cat-256 config: tests/export/test_full_config.py.
"""

import json
import sys

import pytest

from tests import memlimit
from tests.conftest import ROOT, export_engine
from export.reference import REFERENCE_CONFIG, save_model

MIB = 1 << 20
# The reference block layout with channels / 4 at 128x128: 7.6M parameters, big enough that the gate's
# activations (not the interpreter) decide the peak.
MID_CONFIG = {**REFERENCE_CONFIG, "block_out_channels": (32, 32, 64, 64, 128, 128), "sample_size": 128}
MID_FP16_LIMIT = 512 * MIB

pytestmark = pytest.mark.skipif(memlimit.available() is not None, reason=str(memlimit.available()))


def step(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def gate_of(engines, name: str) -> dict:
    return json.loads((engines / "manifest.json").read_text())["artifacts"][name]


@pytest.mark.slow  # 35 s on a 2-core Zen 3: make test-full
def test_fp16_step_of_a_mid_size_model_fits_512_mib(tmp_path):
    engines = export_engine(save_model(tmp_path / "mid", MID_CONFIG), tmp_path / "engines").parent
    run = memlimit.run_limited(step("export.fp16", "--engines", str(engines)), MID_FP16_LIMIT, cwd=ROOT)
    print(f"\nexport.fp16, mid-size model: peak {run.peak_bytes / MIB:.0f} MiB counted by the cgroup (limit {MID_FP16_LIMIT / MIB:.0f})")
    assert not run.oom_killed and run.returncode == 0, run.stderr[-2000:]
    gate = gate_of(engines, "unet.fp16.onnx")["gate"]
    assert len(gate["noise_prediction"]) == 8 and gate["sampling"]["steps"] == 10


@pytest.mark.robustness
def test_a_killed_stage_is_one_line_and_writes_nothing(tmp_path):
    """The PyTorch export dies of the limit (its child process is OOM-killed): exit 2, one error line, no artifact."""
    out = tmp_path / "engines"
    run = memlimit.run_limited(step("export.onnx", "--model", str(save_model(tmp_path / "mid", MID_CONFIG)), "--out", str(out)),
                               200 * MIB, cwd=ROOT)
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.strip().splitlines() if not line.startswith("INFO: ")]  # progress may precede it
    assert len(errors) == 1 and errors[0].startswith("export.onnx: error: the process running the PyTorch export died "
                                                     "(out of memory?)"), run.stderr
    assert list(out.iterdir()) == []
