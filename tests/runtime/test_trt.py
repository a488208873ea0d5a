"""TensorRT backend: refusals testable anywhere; build-and-run where TensorRT and a GPU exist."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import BackendUnavailableError, EngineError
from runtime.runners.trt import check_plan_compatibility
from tests.conftest import ROOT

def importable(name: str) -> bool:
    """Whether ``name`` can be imported. A package providing only a ``cuda`` namespace (cuda-pathfinder,
    cuda-core) has no ``cuda.bindings``: checking ``cuda`` alone would pass here and fail at import."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


HAVE_TRT = importable("tensorrt")
HAVE_CUDA_PYTHON = importable("cuda.bindings.runtime")


def gpu_present() -> bool:
    if not (HAVE_TRT and HAVE_CUDA_PYTHON):
        return False
    from cuda.bindings import runtime as cudart

    err, count = cudart.cudaGetDeviceCount()
    return int(err) == 0 and count > 0


needs_trt_gpu = pytest.mark.skipif(
    not gpu_present(), reason="needs TensorRT >= 10.12, cuda-python and an NVIDIA GPU (none here)"
)

ENTRY = {"tensorrt": {"version": "10.12.0", "compute_capability": "9.0", "gpu": "NVIDIA H100"}}


def test_plan_from_another_tensorrt_version_is_refused():
    with pytest.raises(EngineError, match="TensorRT 10.12.0.*has 11.0.1.*rebuild"):
        check_plan_compatibility(ENTRY, "11.0.1", "9.0")


def test_plan_for_another_gpu_architecture_is_refused():
    with pytest.raises(EngineError, match="compute capability 9.0.*this GPU is 8.6.*rebuild"):
        check_plan_compatibility(ENTRY, "10.12.0", "8.6")


def test_matching_or_compatible_plans_pass():
    check_plan_compatibility(ENTRY, "10.12.0", "9.0")
    compatible = {"tensorrt": {**ENTRY["tensorrt"], "version_compatible": True, "hardware_compatible": True}}
    check_plan_compatibility(compatible, "10.13.1", "8.9")


def plan_beside(tiny_engine, tmp_path, payload=b"not a plan"):
    """A folder with a fake unet.plan described (with its true sha256) by the manifest."""
    from runtime.manifest import sha256_file

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    plan = folder / "unet.plan"
    plan.write_bytes(payload)
    data = json.loads((folder / "manifest.json").read_text())
    data["artifacts"]["unet.plan"] = {
        "kind": "tensorrt", "precision": "fp16-mixed", "sha256": sha256_file(plan), "bytes": len(payload),
        "profile": {"min": 1, "opt": 4, "max": 16}, **ENTRY
    }
    (folder / "manifest.json").write_text(json.dumps(data))
    return plan


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed: the missing-TensorRT path cannot be shown")
def test_plan_without_tensorrt_says_what_to_do(tiny_engine, tmp_path):
    from runtime import Pipeline

    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed.*ONNX"):
        Pipeline.load(plan_beside(tiny_engine, tmp_path))
    r = subprocess.run(
        [sys.executable, "-m", "runtime.sample", "--engine", str(plan_beside(tiny_engine, tmp_path / "cli")),
         "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 4 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed: export.trt would build")
def test_export_trt_without_tensorrt_exits_4_after_the_onnx_models(tiny_fp16_folder, tmp_path):
    folder = Path(shutil.copytree(tiny_fp16_folder, tmp_path / "engines"))
    r = subprocess.run([sys.executable, "-m", "export.trt", "--engines", str(folder)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    assert "TensorRT is not installed" in r.stderr and "ONNX Runtime" in r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "unet.fp16.onnx", "unet.onnx"]


@pytest.fixture(scope="module")
def built_plan(tiny_fp16_folder, tmp_path_factory):
    from export.trt import main as trt_main

    folder = Path(shutil.copytree(tiny_fp16_folder, tmp_path_factory.mktemp("trt") / "engines"))
    assert trt_main(["--engines", str(folder), "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4"]) == 0
    return folder / "unet.plan"


# TRT FP16 vs ORT FP32 on the noise prediction: FP16 accumulation differences, not bugs.
TRT_VS_ORT_ATOL = 5e-2


@needs_trt_gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_trt_matches_ort_fp32(built_plan, batch):
    from runtime.engine import open_engine
    from runtime.io_spec import NOISE_PRED, SAMPLE, TIMESTEP

    trt_runner, manifest, _ = open_engine(built_plan)
    ort_runner, _, _ = open_engine(built_plan.parent / "unet.onnx", device="cpu")
    x = np.random.default_rng(batch).standard_normal(manifest.io.sample.concrete(batch), dtype=np.float32)
    t = np.linspace(0, 999, batch).round().astype(np.float32)
    with trt_runner, ort_runner:
        for _ in range(2):  # buffers are reused on the second call
            got = trt_runner.infer({SAMPLE: x, TIMESTEP: t})[NOISE_PRED]
        ref = ort_runner.infer({SAMPLE: x, TIMESTEP: t})[NOISE_PRED]
    np.testing.assert_allclose(got, ref, rtol=0, atol=TRT_VS_ORT_ATOL)


@needs_trt_gpu
def test_trt_sampling_run_and_profile_limits(built_plan):
    from runtime import Pipeline
    from runtime.errors import InputError

    with Pipeline.load(built_plan) as pipe:
        images = pipe(batch=2, steps=10, seed=0)
        assert images.shape[0] == 2 and images.std() > 0
        with pytest.raises(InputError, match="outside the engine's profile 1..4"):
            pipe(batch=5, steps=2)


@needs_trt_gpu
def test_trt_concurrent_callers_equal_serial(built_plan):
    """One pipeline (one execution context) per caller thread, and one shared pipeline (serialized)."""
    from concurrent.futures import ThreadPoolExecutor

    from runtime import Pipeline

    requests = [dict(batch=1 + i % 2, steps=4, seed=i) for i in range(8)]
    with Pipeline.load(built_plan) as shared:
        serial = [shared(**r) for r in requests]
        with ThreadPoolExecutor(max_workers=4) as pool:
            np.testing.assert_array_equal(np.concatenate(list(pool.map(lambda r: shared(**r), requests))),
                                          np.concatenate(serial))

    def own_pipeline(r):
        with Pipeline.load(built_plan) as pipe:
            return pipe(**r)

    with ThreadPoolExecutor(max_workers=4) as pool:
        np.testing.assert_array_equal(np.concatenate(list(pool.map(own_pipeline, requests))), np.concatenate(serial))
