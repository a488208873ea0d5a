"""INT8 (``python -m export.int8``): the gated QDQ export of the trained digits model, the layers kept in FP32,
sampling through ONNX Runtime, and the refusals.

On a CPU without VNNI/AMX (the AMD Zen 3 some of our machines are) the export and the runtime refuse INT8; these
tests set DDPM_DEPLOY_INT8_SIMULATE=1, which on such a CPU computes the quantized arithmetic in FP32 (a VNNI CPU's
numbers up to requantization rounding), so there they check the export, the graph, the gate and the wiring, not
ONNX Runtime's integer kernels; on a VNNI/AMX CPU the variable changes nothing and the kernels run."""

import json
import shutil

import numpy as np
import onnx
import pytest

from export.artifacts import INT8_NAME, ONNX_NAME
from export.gates import psnr
from export.int8 import GROUPS, INT8_MIN_IMAGE_PSNR_DB, INT8_MIN_PSNR_DB, QUANTIZED_OPS, layer_groups, main as int8_main
from runtime import Pipeline
from runtime import cpu
from runtime.cli import run
from runtime.errors import BackendUnavailableError, GateError, InputError
from runtime.manifest import read_manifest, sha256_file

NO_VNNI = frozenset({"avx2", "fma"})


def test_export_writes_a_gated_entry(int8_engine):
    manifest = read_manifest(int8_engine.parent / "manifest.json")
    entry = manifest.artifact(INT8_NAME)
    assert (entry.kind, entry.precision, entry.source) == ("onnx", "int8", ONNX_NAME)
    assert entry.sha256 == sha256_file(int8_engine) and entry.source_sha256 == manifest.artifact(ONNX_NAME).sha256
    gate = entry.build["gate"]
    assert (gate["min_psnr_db"], gate["min_image_psnr_db"]) == (INT8_MIN_PSNR_DB, INT8_MIN_IMAGE_PSNR_DB)
    assert min(r["psnr_db"] for r in gate["noise_prediction"]) >= INT8_MIN_PSNR_DB
    assert gate["sampling"]["image_psnr_db"] >= INT8_MIN_IMAGE_PSNR_DB
    q = entry.build["quantization"]
    assert set(q["kept_fp32"]) == set(GROUPS) and q["calibration"]["rows"] == 4 * 10  # images x steps, a row each
    assert entry.bytes < 0.5 * manifest.artifact(ONNX_NAME).bytes  # 8-bit weights


def test_quantized_layers_read_int8_weights_and_kept_layers_float(int8_engine):
    """The graph: every Conv/MatMul/Gemm reads a dequantized weight except the kept ones, which read FP32 weights."""
    model = onnx.load(str(int8_engine))
    entry = read_manifest(int8_engine.parent / "manifest.json").artifact(INT8_NAME)
    kept = {name for names in entry.build["quantization"]["kept_fp32"].values() for name in names}
    producer = {out: node for node in model.graph.node for out in node.output}
    weights = {init.name: init for init in model.graph.initializer}
    layers = [node for node in model.graph.node if node.op_type in QUANTIZED_OPS]
    quantized = [node for node in layers if all(getattr(producer.get(i), "op_type", None) == "DequantizeLinear"
                                                for i in node.input[:2])]
    assert {node.name for node in layers} - {node.name for node in quantized} == kept
    assert len(quantized) == entry.build["quantization"]["quantized_nodes"] > 0
    for node in quantized:  # the weight's DequantizeLinear reads an int8 tensor, the activation's a QuantizeLinear
        activation, weight = (producer[name].input[0] for name in node.input[:2])
        if weight in weights:
            assert weights[weight].data_type == onnx.TensorProto.INT8
        assert producer[activation].op_type == "QuantizeLinear"
    conv_in = entry.build["quantization"]["kept_fp32"]["conv_in"]
    assert [n.name for n in layers if n.input[0] == "sample"] == conv_in  # the first conv reads the raw sample


def test_layer_groups_follow_the_graph(demo_engine, class_engine, xattn_engine):
    """Groups come from the structure: the conditioning path is every layer the sample does not reach (time
    embedding, class embedding, cross-attention keys/values of the condition), scores are matmuls of two activations."""
    digits = layer_groups(onnx.load(str(demo_engine), load_external_data=False))
    assert {len(digits[g]) for g in ("conv_in", "conv_out")} == {1}
    assert len(digits["attention_scores"]) == 8  # 4 attention layers, Q·Kᵀ and softmax·V each
    model = onnx.load(str(demo_engine), load_external_data=False)
    gemms = {node.name for node in model.graph.node if node.op_type == "Gemm"}
    assert set(digits["conditioning"]) == gemms  # this model's linear layers are all on the timestep's path
    classes = layer_groups(onnx.load(str(class_engine), load_external_data=False))
    assert len(classes["conditioning"]) > 0
    xattn = onnx.load(str(xattn_engine), load_external_data=False)
    groups = layer_groups(xattn)
    by_name = {node.name: node for node in xattn.graph.node}
    condition_reads = [name for name in groups["conditioning"]
                       if by_name[name].op_type == "MatMul" and "encoder_hidden_states" in _ancestors(xattn, by_name[name])]
    assert condition_reads  # the keys and values of cross-attention stay FP32
    assert len(groups["attention_scores"]) >= 4


def _ancestors(model, node) -> set[str]:
    producer = {out: n for n in model.graph.node for out in n.output}
    seen, stack = set(), list(node.input)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer:
            stack.extend(producer[name].input)
    return seen


def test_samples_close_to_fp32_and_deterministic(int8_engine, simulated_int8):
    request = dict(scheduler="dpmpp-2m", steps=10, seed=5, count=4)
    with Pipeline.load(int8_engine.parent / ONNX_NAME, device="cpu", cache_dir=None) as ref:
        fp32 = ref.run(**request).unit_images()
    runs = []
    for cache_dir in (None, int8_engine.parent / "cache", int8_engine.parent / "cache"):  # plain, cache miss, cache hit
        with Pipeline.load(int8_engine, device="cpu", cache_dir=cache_dir) as pipe:
            runs.append(pipe.run(**request).unit_images())
    for images in runs[1:]:
        np.testing.assert_array_equal(images, runs[0])  # the cached optimized graph computes the same
    assert psnr(fp32, runs[0], peak=1.0) >= INT8_MIN_IMAGE_PSNR_DB


def test_reuse_graphs_quantized_and_gated_with_the_unet(int8_engine, simulated_int8):
    """Composition: the INT8 engine serves cache schedules with INT8 full and shallow graphs (gated with it against
    FP32's), close to FP32 with the same schedule, and a request batched with others equals itself alone."""
    manifest = read_manifest(int8_engine.parent / "manifest.json")
    for role in ("full", "shallow"):
        entry = manifest.artifact(f"unet.cache-{role}.int8.onnx")
        assert (entry.precision, entry.source) == ("int8", f"unet.cache-{role}.onnx")
        assert entry.build["feature_cache"]["engine"] == INT8_NAME and entry.build["quantization"]["quantized_nodes"] > 0
        gate = entry.build["gate"]
        assert gate["sampling"]["images"] == 8 and gate["sampling"]["image_psnr_db"] >= INT8_MIN_IMAGE_PSNR_DB
        assert min(min(r["full_psnr_db"], r["shallow_psnr_db"]) for r in gate["noise_prediction"]) >= INT8_MIN_PSNR_DB
    request = dict(scheduler="unipc-3m", steps=8, cache_full_steps=[0, 3, 6], per_image_seeds=True)
    with Pipeline.load(int8_engine.parent / ONNX_NAME, device="cpu", cache_dir=None) as ref:
        fp32 = ref.run(seed=0, count=4, **request).unit_images()
    with Pipeline.load(int8_engine, device="cpu", cache_dir=None) as pipe:
        together = pipe.run(seed=0, count=4, **request).unit_images()
        assert {runner.entry.precision for runner in pipe.reuse.runners.values()} == {"int8"}
        alone = pipe.run(seed=2, count=1, **request).unit_images()
    np.testing.assert_array_equal(together[2:3], alone)
    assert psnr(fp32, together, peak=1.0) >= INT8_MIN_IMAGE_PSNR_DB


def test_cli_samples_with_the_int8_engine(int8_engine, simulated_int8, tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run([sys.executable, "-m", "runtime.sample", "--engine", str(int8_engine), "--steps", "5",
                        "--count", "2", "--out", str(tmp_path), "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_refused_on_a_cpu_without_vnni(int8_engine, demo_engine, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(cpu.INT8_SIMULATE_ENV, raising=False)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: NO_VNNI)
    with pytest.raises(BackendUnavailableError, match="no VNNI or AMX"):
        Pipeline.load(int8_engine, device="cpu")
    folder = tmp_path / "engines"
    shutil.copytree(demo_engine.parent, folder)
    before = sorted(p.name for p in folder.iterdir())
    assert run(int8_main, "export.int8", ["--engines", str(folder)]) == 4
    assert "no VNNI or AMX" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before  # refused before any work


def test_gate_failure_writes_nothing(demo_engine, simulated_int8, monkeypatch, tmp_path):
    import export.int8

    folder = tmp_path / "engines"
    shutil.copytree(demo_engine.parent, folder)
    manifest = (folder / "manifest.json").read_bytes()
    monkeypatch.setattr(export.int8, "INT8_MIN_IMAGE_PSNR_DB", 99.0)
    monkeypatch.chdir(tmp_path)  # a relative --engines: the quantization's child process works in the staging folder
    with pytest.raises(GateError, match="INT8 gate failed"):
        int8_main(["--engines", "engines", "--keep", "none", "--calibration-images", "1", "--calibration-steps", "3"])
    assert (folder / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", ONNX_NAME]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engines"]  # nothing left in the working folder either


@pytest.mark.parametrize("argv,match", [
    (["--keep", "conv_in,attention"], "--keep takes"),
    (["--keep", ","], "--keep takes"),
    (["--calibration-images", "0"], "--calibration-images must be"),
])
def test_bad_arguments(argv, match, tmp_path):
    with pytest.raises(InputError, match=match):
        int8_main(["--engines", str(tmp_path), *argv])


def test_manifest_entry_is_plain_json(int8_engine):
    """The kept layers are listed by name in the manifest (a user can see what stayed FP32)."""
    raw = json.loads((int8_engine.parent / "manifest.json").read_text())["artifacts"][INT8_NAME]
    assert all(isinstance(name, str) for names in raw["quantization"]["kept_fp32"].values() for name in names)


def test_simulation_computes_the_quantized_arithmetic_in_fp32(int8_engine, simulated_int8, monkeypatch):
    """Under DDPM_DEPLOY_INT8_SIMULATE=1 on a CPU without VNNI, the runner leaves the Q/DQ pairs unfused: it computes
    what the graph says with no graph rewriting at all (ONNX Runtime's optimizations off), up to FP32 rounding."""
    import onnxruntime as ort

    from runtime.manifest import verify_artifact
    from runtime.runners import RunnerOptions
    from runtime.runners.ort import OrtRunner

    monkeypatch.setattr(cpu, "cpu_flags", lambda: NO_VNNI)
    manifest, entry = verify_artifact(int8_engine)
    rng = np.random.default_rng(0)
    feed = {"sample": rng.standard_normal((3, *manifest.io.sample.shape[1:]), dtype=np.float32),
            "timestep": manifest.io.timestep_feed(np.array([999, 500, 1]))}
    with OrtRunner(int8_engine, manifest.io, entry, RunnerOptions(device="cpu")) as runner:
        assert runner.int8 == cpu.SIMULATED
        got = runner.infer(feed)["noise_pred"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    (want,) = ort.InferenceSession(str(int8_engine), options, providers=["CPUExecutionProvider"]).run(["noise_pred"], feed)
    # FP32 reorderings (conv algorithms, fusions of float ops) move a value across a rounding boundary of the
    # next QuantizeLinear now and then: one quantization step of that activation, propagated.
    assert psnr(want, got) > 40.0
    assert read_manifest(int8_engine.parent / "manifest.json").artifact(INT8_NAME).build["gate_arithmetic"] in (
        cpu.SIMULATED, *cpu.INT8_FLAGS)


def test_noise_calibration_spreads_over_the_timesteps(demo_engine):
    """``--calibration noise`` (models with random weights): standard-normal samples at distinct timesteps over the
    whole range, one row each, conditioned like the gate's inputs."""
    from export.int8 import Calibration, calibration_rows
    from runtime.manifest import verify_artifact

    manifest, entry = verify_artifact(demo_engine)
    rows = calibration_rows(demo_engine, manifest, entry, Calibration("noise", images=2, steps=5))
    t = [float(r["timestep"][0]) for r in rows]
    assert len(rows) == 10 and len(set(t)) == 10 and (min(t), max(t)) == (0.0, 999.0)
    assert all(r["sample"].shape == (1, *manifest.io.sample.shape[1:]) for r in rows)
    assert abs(np.std(np.concatenate([r["sample"] for r in rows])) - 1.0) < 0.1


def test_sampler_calibration_of_a_conditional_model(class_engine):
    """Calibration samples a class-conditional model with a different class per image: its rows carry the labels."""
    from export.int8 import Calibration, calibration_rows
    from runtime.manifest import verify_artifact

    manifest, entry = verify_artifact(class_engine)
    rows = calibration_rows(class_engine, manifest, entry, Calibration(images=3, steps=2))
    assert len(rows) >= 3 * 2 and all(set(r) == set(manifest.io.input_names) for r in rows)
    assert len({int(r["class_labels"][0]) for r in rows}) >= 3


@pytest.mark.slow  # a minute on 2 cores: NNCF's quantization and the 8-image gate
def test_openvino_backend(demo_engine, tmp_path):
    """``--backend openvino``: NNCF's quantization of the IR with the same calibration, kept layers and gate; samples
    close to FP32; serves no cache schedule (its graphs: the ONNX Runtime engine's). Needs VNNI/AMX (OpenVINO's INT8
    kernels cannot be simulated): elsewhere the refusal is checked."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    folder = tmp_path / "engines"
    shutil.copytree(demo_engine.parent, folder)
    if not any(flag in cpu.cpu_flags() for flag in cpu.INT8_FLAGS):
        assert run(int8_main, "export.int8", ["--engines", str(folder), "--backend", "openvino"]) == 4
        return
    assert int8_main(["--engines", str(folder), "--backend", "openvino"]) == 0
    entry = read_manifest(folder / "manifest.json").artifact("unet.int8.ov.xml")
    assert (entry.kind, entry.precision) == ("openvino", "int8") and set(entry.external_data) == {"unet.int8.ov.bin"}
    assert entry.build["quantization"]["kept_fp32"].keys() == set(GROUPS)
    assert entry.build["gate"]["sampling"]["image_psnr_db"] >= INT8_MIN_IMAGE_PSNR_DB
    request = dict(scheduler="dpmpp-2m", steps=10, seed=5, count=4)
    with Pipeline.load(folder / ONNX_NAME, device="cpu", cache_dir=None) as ref, \
            Pipeline.load(folder, precision="int8", device="cpu", cache_dir=None) as pipe:
        assert pipe.runner.name == "openvino"
        assert psnr(ref.run(**request).unit_images(), pipe.run(**request).unit_images(), peak=1.0) >= INT8_MIN_IMAGE_PSNR_DB
