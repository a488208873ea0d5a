"""TensorRT path end to end on STAND-INS (tests/runtime/trt_standin.py): these check our wiring — the
build through Polygraphy's loaders, the manifest, the runner's checks, buffers and copies — not
TensorRT, which cannot be installed here."""

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import BackendUnavailableError, EngineError
from tests.runtime import trt_standin


@pytest.fixture
def fp16_folder(tiny_fp16_folder, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_fp16_folder, tmp_path / "engines"))


def build(folder, *extra):
    from export.trt import main as trt_main

    return trt_main(["--engines", str(folder), "--min-batch", "1", "--opt-batch", "2", "--max-batch", "4", *extra])


def test_export_and_sample_end_to_end_on_stand_ins(fp16_folder, monkeypatch):
    calls = trt_standin.install(monkeypatch)
    assert build(fp16_folder) == 0
    assert calls["network"] == {"path": str(fp16_folder / "unet.fp16.onnx"), "strongly_typed": True}
    (profile,) = calls["config"]["profiles"]
    assert profile["sample"] == ((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16)) and profile["timestep"] == ((1,), (2,), (4,))
    assert calls["config"]["builder_optimization_level"] == 3
    assert calls["config"]["load_timing_cache"] is None  # no cache file yet: Polygraphy starts an empty one
    assert calls["build"]["save_timing_cache"] == str(fp16_folder / "timing.cache")

    from runtime import Pipeline
    from runtime.manifest import read_manifest

    entry = read_manifest(fp16_folder / "manifest.json").artifact("unet.plan")
    assert entry.kind == "tensorrt" and entry.profile.max == 4 and entry.build["tensorrt"]["compute_capability"] == "9.0"
    with Pipeline.load(fp16_folder / "unet.plan") as pipe:
        x = np.random.default_rng(0).standard_normal((3, 3, 16, 16), dtype=np.float32)
        t = np.array([1.0, 500.0, 999.0], np.float32)
        for _ in range(2):  # the second call reuses the device buffers
            out = pipe.runner.infer({"sample": x, "timestep": t})["noise_pred"]
        np.testing.assert_array_equal(out, np.float32(0.5) * x + (t / np.float32(1000))[:, None, None, None])
        images = pipe(batch=2, steps=3, seed=0)
        assert images.shape == (2, 16, 16, 3)
    assert not trt_standin.FAULTS.error_35 and sys_modules_memory_freed()


def sys_modules_memory_freed() -> bool:
    import sys

    return sys.modules["cuda.bindings.runtime"].memory == {}


def test_a_polygraphy_build_failure_is_one_line_and_writes_nothing(fp16_folder, monkeypatch, capsys):
    from export.trt import cli

    trt_standin.install(monkeypatch, trt_standin.Faults(build_error="Invalid Engine. Please ensure the engine was built correctly\nmore"))
    monkeypatch.setattr("sys.argv", ["export.trt", "--engines", str(fp16_folder)])
    with pytest.raises(SystemExit) as exit_:
        cli()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not build" in err[0] and "Invalid Engine" in err[0]
    assert not (fp16_folder / "unet.plan").exists()


@pytest.mark.parametrize(
    "fault,match",
    [
        (trt_standin.Faults(error_35=True), "cudaErrorInsufficientDriver \\(35\\).*gpu-cu12"),
        (trt_standin.Faults(no_context=True), "execution context.*out of GPU memory"),
        (trt_standin.Faults(plan_override={"timestep": {"name": "t"}}), "has tensors .*manifest declares"),
        (trt_standin.Faults(plan_override={"sample": {"dtype": "HALF"}}), "sample is .*HALF.*declares float32"),
        (trt_standin.Faults(plan_override={"sample": {"max": [8, 3, 16, 16]}}), "profile is .*manifest declares"),
        (trt_standin.Faults(plan_override={"noise_pred": {"mode": "INPUT"}}), "noise_pred is not an output"),
    ],
    ids=["error 35", "no context", "wrong name", "wrong dtype", "wrong profile", "wrong mode"],
)
def test_injected_failures_give_clear_messages(fp16_folder, monkeypatch, fault, match):
    from runtime import Pipeline

    trt_standin.install(monkeypatch, fault)
    if fault.error_35:
        with pytest.raises(BackendUnavailableError, match=match):
            build(fp16_folder)
        return
    assert build(fp16_folder) == 0
    with pytest.raises(EngineError, match=match):
        Pipeline.load(fp16_folder / "unet.plan")


def test_gpu_facts_on_real_cuda_python_without_a_gpu():
    """Real cuda-python (when installed) imports without a GPU; with no driver it answers error 35."""
    bindings = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
    from runtime.runners.trt import gpu_facts

    err, count = bindings.cudaGetDeviceCount()
    if int(err) == 0 and count:
        pytest.skip("a GPU is visible here")
    with pytest.raises(BackendUnavailableError, match=r"cudaError\w+ \(\d+\)"):
        gpu_facts(bindings)


def test_the_profile_covers_every_conditional_input(monkeypatch):
    """STAND-IN Polygraphy: one optimization profile holds batch and sequence ranges for every input."""
    trt_standin.install(monkeypatch)
    from export.trt import polygraphy_profile
    from runtime.io_spec import BatchProfile, SequenceRange, UNetIO

    io = UNetIO.for_model(4, 4, 8, 8, num_classes=5, cross_attention_dim=16, sequence=SequenceRange(3, 6, 9))
    profile = polygraphy_profile(io, BatchProfile(1, 2, 4))
    assert set(profile) == {"sample", "timestep", "class_labels", "encoder_hidden_states"}
    assert profile["class_labels"] == ((1,), (2,), (4,))
    assert profile["encoder_hidden_states"] == ((1, 3, 16), (2, 6, 16), (4, 9, 16))


def test_a_latent_model_plan_runs_with_its_onnx_decoder_on_stand_ins(ldm_engine, tmp_path, monkeypatch):
    """STAND-INS: a latent model's UNet and decoder go through FP16 (each gated) and the plan build; the manifest
    keeps the decoder section and lists both plans, and a plan's pipeline decodes with decoder.plan."""
    import shutil

    from export.fp16 import main as fp16_main
    from runtime import Pipeline
    from runtime.manifest import read_manifest

    folder = Path(shutil.copytree(ldm_engine.parent, tmp_path / "engines"))
    assert fp16_main(["--engines", str(folder)]) == 0
    trt_standin.install(monkeypatch)
    assert build(folder) == 0
    manifest = read_manifest(folder / "manifest.json")
    assert {"unet.plan", "decoder.plan", "decoder.fp16.onnx", "decoder.onnx"} <= set(manifest.artifacts)
    assert manifest.artifact("decoder.fp16.onnx").build["gate"]["image_psnr_db"] >= 35
    assert manifest.artifact("decoder.plan").source == "decoder.fp16.onnx" and manifest.decoder_artifact == "decoder.onnx"
    with Pipeline.load(folder / "unet.plan") as pipe:
        assert pipe.runner.entry.kind == "tensorrt" and pipe.decoder.entry.kind == "tensorrt"  # decoder.plan
        assert pipe.image_shape == (16, 16, 3) and pipe(batch=2, steps=3, seed=0).shape == (2, 16, 16, 3)


def test_feature_reuse_graphs_through_fp16_and_plans_on_stand_ins(class_cache_engine, tmp_path, monkeypatch):
    """The feature-reuse graphs go through FP16 (gated with a cache schedule against FP32) and the plan build with the
    UNet; unet.plan's pipeline runs their plans. STAND-INS check the wiring only: the full plan's deep_feature output
    is its timestep / 1000, the shallow plan adds the kept feature, so a shallow step shows which full step's feature
    reached it."""
    import shutil

    from export.fp16 import main as fp16_main
    from runtime import Pipeline
    from runtime.io_spec import DEEP_FEATURE, NOISE_PRED
    from runtime.manifest import read_manifest

    folder = Path(shutil.copytree(class_cache_engine.parent, tmp_path / "engines"))
    assert fp16_main(["--engines", str(folder)]) == 0
    manifest = read_manifest(folder / "manifest.json")
    for role in ("full", "shallow"):
        entry = manifest.artifact(f"unet.cache-{role}.fp16.onnx")
        assert entry.source == f"unet.cache-{role}.onnx" and entry.build["feature_cache"]["engine"] == "unet.fp16.onnx"
        gate = entry.build["gate"]
        assert gate["sampling"]["image_psnr_db"] >= 35 and gate["sampling"]["cache_interval"] == 2
        assert min(min(r["full_psnr_db"], r["shallow_psnr_db"]) for r in gate["noise_prediction"]) >= 35
    calls = trt_standin.install(monkeypatch)
    assert build(folder) == 0
    assert calls["network"]["path"] == str(folder / "unet.fp16.onnx")  # the UNet's plan last
    manifest = read_manifest(folder / "manifest.json")
    for role in ("full", "shallow"):
        entry = manifest.artifact(f"unet.cache-{role}.plan")
        assert entry.kind == "tensorrt" and entry.source == f"unet.cache-{role}.fp16.onnx" and entry.profile.max == 4
        assert entry.build["feature_cache"] == {"role": role, "branch": 0, "feature_shape": [32, 8, 8], "engine": "unet.plan"}
    with Pipeline.load(folder / "unet.plan") as pipe:
        plain = pipe.denoise(count=2, steps=5, seed=0, class_labels=[1, 2])
        reused = pipe.denoise(count=2, steps=5, seed=0, class_labels=[1, 2], cache_interval=2)
        runners = pipe.reuse.runners
        assert {r.entry.kind for r in runners.values()} == {"tensorrt"} and not np.array_equal(plain, reused)
        x = np.ones((2, 3, 8, 8), np.float32)
        labels = np.array([1, 2], np.int64)
        full = runners["full"].infer({"sample": x, "timestep": np.array([100.0, 900.0], np.float32), "class_labels": labels})
        np.testing.assert_array_equal(full[DEEP_FEATURE][:, 0, 0, 0], np.float32([0.1, 0.9]))
        shallow = runners["shallow"].infer({"sample": x, "timestep": np.array([50.0, 50.0], np.float32),
                                            "class_labels": labels, DEEP_FEATURE: full[DEEP_FEATURE]})
        np.testing.assert_array_equal(shallow[NOISE_PRED][:, 0, 0, 0], np.float32([0.6, 1.4]))
    # graphs for unet.onnx only (feature reuse exported after the FP16 stage): the plan is built, with a warning, and
    # cache schedules on it are refused in one line
    from runtime.errors import InputError
    from runtime.manifest import update_artifact

    for role in ("full", "shallow"):
        (folder / f"unet.cache-{role}.fp16.onnx").unlink()
        (folder / f"unet.cache-{role}.plan").unlink()
    update_artifact(folder, manifest.base(), "unet.fp16.onnx", manifest.artifact("unet.fp16.onnx"))
    assert build(folder) == 0
    assert not any("cache" in name and not name.endswith(".onnx") for name in read_manifest(folder / "manifest.json").artifacts)
    with Pipeline.load(folder / "unet.plan") as pipe:
        with pytest.raises(InputError, match="serve unet.onnx, not unet.plan"):
            pipe.denoise(count=1, steps=3, class_labels=[0], cache_interval=2)
