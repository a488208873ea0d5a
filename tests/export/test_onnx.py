"""ONNX export vs the PyTorch model, the manifest it writes, and the export CLI's refusals."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from diffusers import UNet2DModel

from runtime.io_spec import NOISE_PRED, SAMPLE, TIMESTEP
from runtime.manifest import sha256_file
from tests.conftest import ROOT

# Independent of the gate's own tolerance: what we expect of an FP32 export on CPU.
ONNX_VS_TORCH_ATOL = 1e-4


def torch_vs_onnx(model_dir, engine, batch):
    unet = UNet2DModel.from_pretrained(model_dir).eval()
    c, s = unet.config.in_channels, unet.config.sample_size
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, c, s, s), dtype=np.float32)
    t = np.array([999, 0, 421, 17, 600][:batch], dtype=np.float32)
    with torch.no_grad():
        ref = unet(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    got = ort.InferenceSession(str(engine)).run([NOISE_PRED], {SAMPLE: x, TIMESTEP: t})[0]
    return got, ref


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_tiny_model_matches_pytorch(tiny_model, tiny_engine, batch):
    got, ref = torch_vs_onnx(tiny_model, tiny_engine, batch)
    np.testing.assert_allclose(got, ref, rtol=0, atol=ONNX_VS_TORCH_ATOL)


def test_reference_block_types_match_pytorch(reference_blocks_model, reference_blocks_engine):
    """The reference down/up block lists (attention at 1/16 resolution) at layers_per_block 1 and 2."""
    engine = reference_blocks_engine
    for batch in (1, 3):
        got, ref = torch_vs_onnx(reference_blocks_model, engine, batch)
        np.testing.assert_allclose(got, ref, rtol=0, atol=ONNX_VS_TORCH_ATOL)


def test_per_element_timesteps_are_honoured(tiny_engine):
    """One call with timesteps [a, b] equals two calls with [a] and [b]."""
    sess = ort.InferenceSession(str(tiny_engine))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16), dtype=np.float32)
    both = sess.run(None, {SAMPLE: x, TIMESTEP: np.array([10, 900], np.float32)})[0]
    for i, t in enumerate((10, 900)):
        one = sess.run(None, {SAMPLE: x[i : i + 1], TIMESTEP: np.array([t], np.float32)})[0]
        np.testing.assert_allclose(both[i : i + 1], one, rtol=0, atol=ONNX_VS_TORCH_ATOL)


def test_graph_io_and_manifest(tiny_model, tiny_engine):
    model = onnx.load(str(tiny_engine), load_external_data=False)
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {SAMPLE: ["batch", 3, 16, 16], TIMESTEP: ["batch"]}
    out_dims = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert model.graph.output[0].name == NOISE_PRED and out_dims == ["batch", 3, 16, 16]

    manifest = json.loads((tiny_engine.parent / "manifest.json").read_text())
    entry = manifest["artifacts"]["unet.onnx"]
    assert entry["sha256"] == sha256_file(tiny_engine)
    assert entry["precision"] == "fp32" and entry["opset"] >= 17
    assert [r["batch"] for r in entry["parity"]["results"]] == [1, 3]
    assert max(r["max_abs_error"] for r in entry["parity"]["results"]) <= entry["parity"]["tolerance"]
    assert {"torch", "diffusers", "onnx", "onnxruntime", "ddpm-deploy"} <= set(entry["tools"])
    assert manifest["model"]["weights_sha256"] == sha256_file(tiny_model / "diffusion_pytorch_model.safetensors")
    assert manifest["model"]["config"]["block_out_channels"] == [16, 32]
    assert manifest["scheduler_config"] == json.loads((tiny_model / "scheduler_config.json").read_text())
    assert manifest["io"]["inputs"][0] == {"name": SAMPLE, "dtype": "float32", "shape": ["batch", 3, 16, 16]}


def test_parity_gate_failure_writes_nothing(tiny_model, tmp_path):
    out = tmp_path / "engines"
    r = export_cli("--model", str(tiny_model), "--out", str(out), "--tolerance", "1e-12")
    assert r.returncode == 3, r.stderr
    assert "parity gate failed" in r.stderr and "nothing was written" in r.stderr
    assert list(out.iterdir()) == []


def export_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "export.onnx", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("export.onnx: error:")
    return lines[0]


def test_model_folder_without_config(tmp_path):
    (tmp_path / "model").mkdir()
    line = one_error_line(export_cli("--model", str(tmp_path / "model"), "--out", str(tmp_path / "out")))
    assert "no config.json" in line and "save_pretrained" in line
    assert not (tmp_path / "out").exists()


def test_hub_unreachable_offline(tmp_path):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = one_error_line(export_cli("--model", "google/ddpm-cat-256", "--out", str(tmp_path / "out"), env=env))
    assert "cannot reach the model hub" in line and "--model DIR" in line
    assert not (tmp_path / "out").exists()


def test_pickle_only_checkpoint_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_model / "config.json").read_text())
    torch.save({}, folder / "diffusion_pytorch_model.bin")
    line = one_error_line(export_cli("--model", str(folder), "--out", str(tmp_path / "out")))
    assert "--allow-pickle" in line


def test_wrong_class_is_refused(tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    line = one_error_line(export_cli("--model", str(folder), "--out", str(tmp_path / "out")))
    assert "AutoencoderKL" in line and "UNet2DModel" in line


def test_not_a_path_nor_hub_id(tmp_path):
    line = one_error_line(export_cli("--model", str(tmp_path / "nope"), "--out", str(tmp_path / "out")))
    assert "no such folder" in line


def test_pipeline_layout_with_subfolders(tmp_path):
    """A DDPMPipeline.save_pretrained folder (unet/ and scheduler/) is accepted."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from export.reference import TINY_CONFIG

    torch.manual_seed(0)
    DDPMPipeline(unet=UNet2DModel(**TINY_CONFIG), scheduler=DDPMScheduler(beta_end=0.03)).save_pretrained(tmp_path / "pipe")
    from export.load import resolve

    src = resolve(str(tmp_path / "pipe"))
    assert src.folder == tmp_path / "pipe" / "unet"
    assert src.scheduler_config["beta_end"] == 0.03
