"""Feature reuse in the runtime: cache schedules, requests with and without one sharing engine calls bit for bit,
refusals in one line, and OpenVINO running both graphs (export.deepcache's graphs on the tiny class model)."""

import shutil
from dataclasses import replace

import numpy as np
import pytest

from runtime import Pipeline
from runtime.batching import StepBatcher
from runtime.errors import InputError
from runtime.reuse import full_steps, graphs_for
from runtime.manifest import read_manifest
from runtime.requests import SampleRequest

REQUESTS = [
    dict(scheduler="dpmpp-2m", steps=9, seed=1, class_labels=[2], cache_interval=3),
    dict(scheduler="ddim", steps=7, seed=2, class_labels=[0, 1], batch=2, cache_interval=2),
    dict(scheduler="dpmpp-2m", steps=8, seed=3, class_labels=[1]),
    dict(scheduler="unipc-3m", steps=6, seed=4, class_labels=[3], guidance_scale=2.0, guidance_rescale=0.5,
         cache_full_steps=[0, 1, 3]),
    dict(scheduler="ddpm", steps=10, seeds=[5, 6], batch=2, class_labels=[2, 0], cache_interval=4, noise="torch"),
    dict(scheduler="dpmpp-3m", steps=5, seed=7, class_labels=[0], guidance_scale=3.0),
]


@pytest.fixture(scope="module")
def pipe(class_cache_engine):
    with Pipeline.load(class_cache_engine, device="cpu") as p:
        yield p


def test_schedules():
    assert full_steps(10, None, None) is None and full_steps(10, 1, None) is None
    assert full_steps(10, 3, None) == {0, 3, 6, 9}
    assert full_steps(10, None, (2, 5)) == {0, 2, 5}
    assert full_steps(3, None, (1, 2)) is None  # every step full: no reuse at all
    with pytest.raises(InputError, match="names step 10, but the request has 10 steps"):
        full_steps(10, None, (1, 10))


@pytest.mark.parametrize("fields,message", [
    (dict(cache_interval=0), "cache_interval must be a whole number of at least 1"),
    (dict(cache_interval=2.5), "cache_interval must be a whole number"),
    (dict(cache_interval=True), "cache_interval must be a whole number"),
    (dict(cache_full_steps=[0, 3, 2]), "ascending step indices"),
    (dict(cache_full_steps=[]), "ascending step indices"),
    (dict(cache_full_steps="0,1"), "ascending step indices"),
    (dict(cache_full_steps=[-1]), "ascending step indices"),
    (dict(cache_full_steps=[0, 2], cache_interval=2), "not both"),
])
def test_bad_schedules_are_refused(fields, message):
    with pytest.raises(InputError, match=message):
        SampleRequest(**fields)


def test_each_entry_point_takes_a_schedule():
    request, _ = SampleRequest.from_json('{"cache_interval": 3}')
    assert request.cache_interval == 3
    request, _ = SampleRequest.from_json('{"cache_full_steps": [0, 2, 5]}')
    assert request.cache_full_steps == (0, 2, 5) and "--cache-full-steps" in request.cli_args()
    names = {name for name, _, _ in SampleRequest.triton_inputs()}
    assert {"cache_interval", "cache_full_steps"} <= names
    assert SampleRequest.json_schema()["properties"]["cache_interval"]["minimum"] == 1


def test_batched_requests_with_and_without_reuse_equal_themselves_alone(pipe):
    alone = [pipe(**r) for r in REQUESTS]
    with StepBatcher(pipe, max_batch=8) as batcher:
        futures = [batcher.submit(**r) for r in REQUESTS]
        results = [f.result(timeout=120) for f in futures]
        stats = batcher.stats
    for i, (a, b) in enumerate(zip(alone, results)):
        np.testing.assert_array_equal(a, b, err_msg=f"request {i}: {REQUESTS[i]}")
    assert stats.completed == len(REQUESTS)
    # full, shallow and plain rows run in separate calls, but requests share each kind's call
    assert stats.engine_calls < sum(r["steps"] for r in REQUESTS)


def test_reuse_changes_the_image_and_runs_fewer_full_steps(pipe, monkeypatch):
    calls = []
    request = dict(scheduler="dpmpp-2m", steps=9, seed=1, class_labels=[2])
    plain = pipe.denoise(**request)
    pipe.denoise(**request, cache_interval=3)  # opens the graphs
    original = pipe.denoiser.outputs
    monkeypatch.setattr(pipe.denoiser, "outputs", lambda x, t, inputs=None, graph="plain":
                        calls.append(graph) or original(x, t, inputs, graph))
    reused = pipe.denoise(**request, cache_interval=3)
    assert calls == ["full", "shallow", "shallow"] * 3
    assert not np.array_equal(plain, reused)
    assert pipe.settings(SampleRequest(**request, cache_interval=3)).full_steps == (0, 3, 6)


def test_png_metadata_names_the_schedule(pipe):
    result = pipe.generate(steps=6, class_labels=[1], cache_full_steps=[0, 2])
    assert result.png_metadata(0)["feature_cache_full_steps"] == "0,2"
    assert "feature_cache_full_steps" not in pipe.generate(steps=6, class_labels=[1]).png_metadata(0)


def test_an_engine_without_graphs_refuses_a_schedule(tiny_engine):
    with Pipeline.load(tiny_engine, device="cpu") as p:
        with pytest.raises(InputError, match="has none for this engine; build them with `python -m export.deepcache"):
            p(steps=4, cache_interval=2)
        assert p(steps=4, cache_interval=1).shape == (1, 16, 16, 3)  # 1: no reuse


def test_graphs_serve_unet_onnx_and_its_openvino_form_only(class_cache_engine):
    manifest = read_manifest(class_cache_engine.parent / "manifest.json")
    fp32 = manifest.artifact("unet.onnx")
    pair = graphs_for(manifest, "unet.onnx", fp32)
    assert pair.names == {"full": "unet.cache-full.onnx", "shallow": "unet.cache-shallow.onnx"} and pair.like is None
    openvino = replace(fp32, kind="openvino", sha256="1" * 64, source="unet.onnx", source_sha256=fp32.sha256)
    assert graphs_for(manifest, "unet.ov.xml", openvino).like.kind == "openvino"
    for name, other in (("unet.fp16.onnx", replace(openvino, kind="onnx", precision="fp16")),
                        ("unet.plan", replace(openvino, kind="tensorrt", precision="fp16")),
                        ("unet.ov.xml", replace(openvino, source_sha256="2" * 64))):
        with pytest.raises(InputError, match=f"serve unet.onnx, not {name}"):
            graphs_for(manifest, name, other)
    # below FP32, OpenVINO runs the graphs only where export.bf16 gated these very graphs with it
    bf16 = replace(openvino, precision="bf16")
    gated = {name: manifest.artifact(name).sha256 for name in pair.names.values()}
    assert graphs_for(manifest, "unet.ov.xml", replace(bf16, build={"reuse": {"graphs": gated}})).like.precision == "bf16"
    for build in ({}, {"reuse": {"graphs": {**gated, "unet.cache-full.onnx": "3" * 64}}}):
        with pytest.raises(InputError, match="were not gated at bf16 with unet.ov.xml; run `python -m export.bf16"):
            graphs_for(manifest, "unet.ov.xml", replace(bf16, build=build))


def test_openvino_runs_both_graphs(class_cache_engine, tmp_path):
    pytest.importorskip("openvino")
    from export.bf16 import main as ov_main

    folder = tmp_path / "ov"
    shutil.copytree(class_cache_engine.parent, folder)
    assert ov_main(["--engines", str(folder), "--precision", "fp32"]) == 0
    manifest = read_manifest(folder / "manifest.json")
    reuse = manifest.artifact("unet.ov.xml").build["reuse"]  # export.bf16 gated the graphs with the engine
    assert reuse["graphs"] == {name: manifest.artifact(name).sha256 for name in ("unet.cache-full.onnx",
                                                                                  "unet.cache-shallow.onnx")}
    assert reuse["gate"]["sampling"]["image_psnr_db"] >= reuse["gate"]["min_image_psnr_db"]
    request = dict(scheduler="dpmpp-2m", steps=8, seed=3, class_labels=[1, 2], batch=2, cache_interval=2)
    with Pipeline.load(folder / "unet.onnx", device="cpu", cache_dir=None) as ort_pipe, \
            Pipeline.load(folder / "unet.ov.xml", device="cpu", cache_dir=None) as ov_pipe:
        ref, got = ort_pipe.denoise(**request), ov_pipe.denoise(**request)
        assert {r.name for r in ov_pipe.reuse.runners.values()} == {"openvino"}
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max())  # FP32 kernels of two libraries


@pytest.mark.slow  # 24 s on a 2-core Zen 3: make test-full
def test_cross_attention_model_with_guidance(xattn_model, xattn_engine, tmp_path):
    """A UNet2DConditionModel's graphs (export.deepcache splits it with its condition): guided requests with and
    without a schedule, batched, equal themselves alone; reuse changes the image."""
    from tests.conftest import copied_engine, export_reuse_graphs

    engine = export_reuse_graphs(xattn_model, copied_engine(xattn_engine, tmp_path / "engines"))
    embeddings = np.random.default_rng(0).standard_normal((2, 6, 16)).astype(np.float32)
    requests = [dict(steps=6, seed=1, embeddings=embeddings[:1], guidance_scale=3.0, cache_interval=2),
                dict(steps=5, seed=2, embeddings=embeddings, batch=2, cache_full_steps=[0, 3]),
                dict(steps=6, seed=1, embeddings=embeddings[:1], guidance_scale=3.0)]
    with Pipeline.load(engine, device="cpu", cache_dir=None) as p:
        alone = [p(scheduler="dpmpp-2m", **r) for r in requests]
        with StepBatcher(p, max_batch=8) as batcher:
            together = [f.result(timeout=120) for f in [batcher.submit(scheduler="dpmpp-2m", **r) for r in requests]]
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(alone[0], alone[2])
