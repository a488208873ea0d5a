"""The mixed-precision FP16 ONNX: what stays FP32, the accuracy gate, and sampling from it on ORT CPU."""

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from export.artifacts import FP16_NAME
from export.fp16 import fp16_gate, main as fp16_main
from export.gates import FP16_MIN_IMAGE_PSNR_DB, FP16_MIN_PSNR_DB, psnr
from runtime import Pipeline
from runtime.errors import GateError
from runtime.manifest import read_manifest, sha256_file
from tests.conftest import copied_engine

FP32, FP16 = TensorProto.FLOAT, TensorProto.FLOAT16


@pytest.fixture(scope="module")
def fp16_engines(reference_blocks_engine, tmp_path_factory):
    """The reference block-type lists at layers_per_block 1 and 2: FP32 export, then FP16 with its gate."""
    folder = copied_engine(reference_blocks_engine, tmp_path_factory.mktemp("fp16")).parent
    assert fp16_main(["--engines", str(folder)]) == 0
    return folder


def tensor_types(model) -> dict[str, int]:
    model = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def test_gate_passes_and_is_recorded(fp16_engines):
    entry = read_manifest(fp16_engines / "manifest.json").artifact(FP16_NAME)
    assert entry.sha256 == sha256_file(fp16_engines / FP16_NAME)
    assert entry.precision == "fp16-mixed" and entry.source == "unet.onnx"
    gate = entry.build["gate"]
    timesteps = [r["timestep"] for r in gate["noise_prediction"]]
    assert timesteps[0] == 0 and timesteps[-1] == 999 and len(timesteps) >= 6
    assert min(r["psnr_db"] for r in gate["noise_prediction"]) >= FP16_MIN_PSNR_DB
    assert gate["sampling"]["image_psnr_db"] >= FP16_MIN_IMAGE_PSNR_DB
    # the FP32 entry survives beside it
    assert read_manifest(fp16_engines / "manifest.json").artifact("unet.onnx")


def test_fragile_parts_stay_fp32(fp16_engines):
    model = onnx.load(str(fp16_engines / FP16_NAME))
    types = tensor_types(model)
    assert all(v.type.tensor_type.elem_type == FP32 for v in [*model.graph.input, *model.graph.output])
    by_op: dict[str, list] = {}
    for node in model.graph.node:
        by_op.setdefault(node.op_type, []).append(node)
    for op in ("InstanceNormalization", "Softmax", "Sin", "Cos"):
        assert by_op[op], op
        for node in by_op[op]:
            assert types[node.input[0]] == FP32 and types[node.output[0]] == FP32, (op, node.name)
    # t * freq feeding Sin/Cos is computed in FP32
    producer = {o: n for n in model.graph.node for o in n.output}
    assert types[producer[by_op["Sin"][0].input[0]].output[0]] == FP32
    # attention scores: the MatMul feeding each Softmax is FP32
    for sm in by_op["Softmax"]:
        assert producer[sm.input[0]].op_type == "MatMul" and types[producer[sm.input[0]].input[0]] == FP32
    # the heavy parts are FP16: every Conv weight, most MatMuls
    assert all(types[n.input[1]] == FP16 for n in by_op["Conv"])
    assert sum(types[n.input[0]] == FP16 for n in by_op["MatMul"]) > len(by_op["Softmax"])


def test_runtime_samples_from_the_fp16_model(fp16_engines):
    with Pipeline.load(fp16_engines / FP16_NAME, device="cpu") as p16, Pipeline.load(fp16_engines / "unet.onnx", device="cpu") as p32:
        a = p16.denoise(batch=2, steps=8, seed=1)
        b = p32.denoise(batch=2, steps=8, seed=1)
    assert np.isfinite(a).all()
    assert psnr(b, a, peak=2.0) >= FP16_MIN_IMAGE_PSNR_DB


def test_gate_fails_on_a_broken_fp16_model(fp16_engines, tmp_path):
    """Corrupt one FP16 weight: the gate must refuse (so it is able to fail)."""
    model = onnx.load(str(fp16_engines / FP16_NAME))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    init = next(i for i in model.graph.initializer if i.name in conv_weights)
    arr = onnx.numpy_helper.to_array(init) * np.float16(40)
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    manifest = read_manifest(fp16_engines / "manifest.json")
    with pytest.raises(GateError, match="FP16 gate failed"):
        fp16_gate(fp16_engines / "unet.onnx", broken, manifest)


def test_rebuilt_fp32_model_makes_the_fp16_entry_stale(fp16_engines, tmp_path):
    from dataclasses import replace

    from runtime.manifest import update_artifact

    folder = tmp_path / "engines"
    shutil.copytree(fp16_engines, folder)
    manifest = read_manifest(folder / "manifest.json")
    entry = replace(manifest.artifact("unet.onnx"), sha256="0" * 64)
    update_artifact(folder, manifest.base(), "unet.onnx", entry)
    assert FP16_NAME not in json.loads((folder / "manifest.json").read_text())["artifacts"]


def test_psnr_definition():
    ref = np.array([2.0, -2.0, 0.0, 1.0])
    assert psnr(ref, ref) == float("inf")
    assert psnr(ref, ref + 0.02) == pytest.approx(10 * np.log10(4.0 / 0.0004))
