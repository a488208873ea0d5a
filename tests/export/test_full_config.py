"""The full google/ddpm-cat-256 config (random weights): export time, ONNX size, parity. Slow: `make test-full`."""

import json
import time

import pytest

from tests.conftest import export_engine
from tests.models import REFERENCE_CONFIG, save_model


@pytest.mark.slow
def test_full_reference_config_exports_within_tolerance(tmp_path):
    model = save_model(tmp_path / "cat256", REFERENCE_CONFIG)
    started = time.perf_counter()
    engine = export_engine(model, tmp_path / "engines")
    seconds = time.perf_counter() - started
    entry = json.loads((engine.parent / "manifest.json").read_text())["artifacts"]["unet.onnx"]
    worst = max(r["max_abs_error"] for r in entry["parity"]["results"])
    print(f"\nfull config: export {seconds:.1f} s, ONNX {entry['bytes'] / 1e6:.1f} MB, max abs error {worst:.3g}")
    assert worst <= entry["parity"]["tolerance"]
    assert entry["bytes"] > 400e6  # 113.7M float32 parameters
