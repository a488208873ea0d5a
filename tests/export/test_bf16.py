"""OpenVINO BF16: the gated export, sampling through the runner, the compiled-model cache, refusals."""

import shutil

import numpy as np
import pytest

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'ddpm-deploy[openvino]')")

from export.artifacts import OV_NAME, OV_WEIGHTS
from export.bf16 import main as bf16_main  # noqa: E402
from runtime import Pipeline  # noqa: E402
from runtime.errors import BackendUnavailableError  # noqa: E402
from runtime.manifest import read_manifest, sha256_file  # noqa: E402
from runtime.runners import openvino as ov_runner  # noqa: E402


def has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def ov_engines(tiny_engine, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bf16") / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    precision = "bf16" if has_bf16() else "fp32"
    assert bf16_main(["--engines", str(folder), "--precision", precision]) == 0
    return folder


def test_export_writes_a_gated_entry(ov_engines):
    entry = read_manifest(ov_engines / "manifest.json").artifact(OV_NAME)
    assert entry.kind == "openvino" and entry.source == "unet.onnx"
    assert entry.sha256 == sha256_file(ov_engines / OV_NAME)
    assert entry.external_data == {OV_WEIGHTS: sha256_file(ov_engines / OV_WEIGHTS)}
    gate = entry.build["gate"]
    assert min(r["psnr_db"] for r in gate["noise_prediction"]) >= gate["min_psnr_db"]
    assert gate["sampling"]["image_psnr_db"] >= gate["min_image_psnr_db"]


def test_samples_close_to_fp32_and_cache_is_bit_equal(ov_engines, tmp_path, monkeypatch):
    import runtime.runners.openvino as ov

    with Pipeline.load(ov_engines / OV_NAME, cache_dir=tmp_path) as pipe:
        assert pipe.runner.cache_status == "off"  # the compiled-model cache is off by default (it does not pay)
    monkeypatch.setattr(ov, "CACHE_COMPILED", True)
    with Pipeline.load(ov_engines / "unet.onnx", device="cpu", cache_dir=None) as ref:
        fp32 = ref(batch=2, steps=5, seed=3)
    runs = []
    for _ in range(2):
        with Pipeline.load(ov_engines / OV_NAME, cache_dir=tmp_path) as pipe:
            runs.append((pipe.runner.cache_status, pipe(batch=2, steps=5, seed=3)))
    assert [s for s, _ in runs] == ["miss", "hit"]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(runs[0][1].astype(int) - fp32.astype(int)).mean() < 2.0  # BF16 vs FP32, uint8 levels


def test_bf16_refused_on_a_cpu_without_bf16_units(ov_engines, monkeypatch, tmp_path):
    class NoBF16Core:
        def get_property(self, device, key):
            return ["FP32", "INT8"]

    with pytest.raises(BackendUnavailableError, match="no BF16 units"):
        ov_runner.check_precision(NoBF16Core(), "bf16")
    assert ov_runner.check_precision(NoBF16Core(), "fp32") == "f32"


def test_missing_openvino_is_exit_4(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError("no openvino")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(BackendUnavailableError, match="OpenVINO is not installed") as exc:
        ov_runner.import_openvino()
    assert exc.value.exit_code == 4


def test_conditional_engine_through_openvino(xattn_engine, tmp_path):
    """The gate feeds the declared conditions; a guided request on OpenVINO matches ONNX Runtime."""
    folder = tmp_path / "engines"
    shutil.copytree(xattn_engine.parent, folder)
    precision = "bf16" if has_bf16() else "fp32"
    assert bf16_main(["--engines", str(folder), "--precision", precision]) == 0
    request = dict(count=2, class_labels=[2, 1], guidance_scale=2.5, steps=5, scheduler="ddim", seed=1)
    with Pipeline.load(folder / "unet.onnx", device="cpu", cache_dir=None) as ref, \
            Pipeline.load(folder / OV_NAME, cache_dir=None) as pipe:
        fp32, got = ref.denoise(**request), pipe.denoise(**request)
    assert np.abs(got - fp32).max() <= (0.05 if precision == "bf16" else 1e-3) * max(1.0, np.abs(fp32).max())
