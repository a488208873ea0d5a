"""runtime.requests: one request type, its checks, and every entry point's constructor."""

import argparse
import json
from dataclasses import fields

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.guidance import Guidance
from runtime.noise import MAX_SEED
from runtime.requests import SampleRequest
from runtime.results import SampleResult, SamplerSettings

GRAY = np.arange(256, dtype=np.uint8).reshape(16, 16)  # a 16x16 grayscale image
MASK = np.where(np.arange(16)[:, None] < 8, 255, 0).astype(np.uint8).repeat(16, axis=1)  # the top half kept


def test_defaults_and_image_seeds():
    r = SampleRequest()
    assert (r.count, r.seed, r.steps, r.scheduler, r.eta, r.noise, r.timeout_s) == (1, 0, None, None, 0.0, "numpy", None)
    assert r.image_seeds is None
    assert SampleRequest(count=3, seed=7, per_image_seeds=True).image_seeds == (7, 8, 9)
    assert SampleRequest(count=2, seeds=[5, 1]).image_seeds == (5, 1)


@pytest.mark.parametrize("values, message", [
    ({"count": 0}, "count (batch) must be"),
    ({"count": 2.0}, "count (batch) must be"),
    ({"count": True}, "count (batch) must be"),
    ({"seed": -1}, "seed must be"),
    ({"seed": MAX_SEED + 1}, "seed must be"),
    ({"seed": "7"}, "seed must be"),
    ({"seed": MAX_SEED, "count": 2, "per_image_seeds": True}, "above"),
    ({"seeds": [1], "count": 2}, "one seed per image"),
    ({"seeds": "12", "count": 2}, "list of whole numbers"),
    ({"seeds": [1, 2], "count": 2, "per_image_seeds": True}, "not both"),
    ({"seeds": [1, -2], "count": 2}, "seed must be"),
    ({"steps": 0}, "steps must be"),
    ({"steps": 1.5}, "steps must be"),
    ({"scheduler": "euler"}, "unknown scheduler 'euler'"),
    ({"eta": -0.5}, "eta must be"),
    ({"eta": float("nan")}, "eta must be"),
    ({"noise": "gauss"}, "unknown noise kind 'gauss'"),
    ({"timeout_s": 0}, "timeout_s must be"),
    ({"timeout_s": float("inf")}, "timeout_s must be"),
    ({"per_image_seeds": "yes"}, "per_image_seeds must be"),
    ({"conditioning": [1, 2]}, "conditioning must map"),
    # image inputs (tests/runtime/test_image_input.py: decoding)
    ({"image": GRAY, "strength": 0}, "strength must be a number in (0, 1] (strength 0 would run no step)"),
    ({"image": GRAY, "strength": 1.5}, "strength must be a number in (0, 1]"),
    ({"image": GRAY, "strength": float("nan")}, "strength must be"),
    ({"strength": 0.5}, "strength is image-to-image's; give image too"),
    ({"mask_image": MASK}, "mask_image inpaints an image; give image too"),
    ({"image": GRAY, "mask_image": MASK[:8]}, "mask_image is 8x16 and image 16x16; give a mask of the image's size"),
    ({"image": GRAY, "mask_image": MASK, "strength": 0.5}, "inpainting (with mask_image) runs the whole schedule"),
    ({"image": GRAY, "mask_image": MASK, "scheduler": "ddim"}, "inpainting (mask_image) runs the repaint sampler"),
    ({"scheduler": "repaint"}, "the repaint sampler inpaints: give image and mask_image"),
    ({"jump_length": 3}, "jump_length and jump_n_sample are repaint's"),
    ({"image": GRAY, "mask_image": MASK, "jump_n_sample": 0}, "jump_n_sample must be a whole number of at least 1"),
    ({"image": np.stack([GRAY[..., None]] * 3), "count": 2}, "image holds 3 images for a count of 2"),
    ({"image": GRAY.astype(np.int32)}, "image must be uint8 pixels or a float array"),
    ({"image": "bm90IGEgcG5n"}, "image is not a PNG"),
    ({"image": "%%%"}, "image is not base64"),
    ({"image": 7}, "image must be a PNG (base64 in JSON), a list of them"),
    ({"image": np.full((1, 1, 4, 4), np.nan, np.float32)}, "image holds NaN or Inf"),
])
def test_every_bad_field_is_refused_with_one_line(values, message):
    with pytest.raises(InputError, match=None) as info:
        SampleRequest(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_aliases_in_the_api_and_json():
    assert SampleRequest.create(batch=3) == SampleRequest(count=3)
    assert SampleRequest.create(timeout=5) == SampleRequest(timeout_s=5)
    base = SampleRequest(count=2, seed=4)
    assert SampleRequest.create(base, steps=3) == SampleRequest(count=2, seed=4, steps=3)
    assert SampleRequest.create(base) is base
    with pytest.raises(InputError, match="both 'count' and its alias 'batch'"):
        SampleRequest.create(count=2, batch=2)
    with pytest.raises(InputError, match="no field 'colour'"):
        SampleRequest.create(colour="red")
    request, extra = SampleRequest.from_json('{"batch": 2, "seeds": [3, 4], "format": "json"}', extra={"format": str})
    assert request == SampleRequest(count=2, seeds=(3, 4)) and extra == {"format": "json"}


@pytest.mark.parametrize("text, message", [
    ("[1]", "must be a JSON object"),
    ('{"count": "2"}', "wrong type"),
    ('{"steps": true}', "wrong type"),
    ('{"colour": 1}', "unknown field(s) colour"),
    ('{"count": 1, "count": 0}', "count (batch) must be"),
    ('{"eta": NaN}', "eta must be"),
    ("{" * 100_000, "deeper than 16 levels"),
    ("[" * 100_000 + "]" * 100_000, "deeper than 16 levels"),  # refused before parsing (json.loads would recurse)
    ('{"seeds": ' + "[" * 17 + "]" * 17 + "}", "deeper than 16 levels"),
    ('{"seeds": "' + "[" * 100 + '"}', "wrong type"),  # brackets inside strings do not count
    (b"\xff\xfe", "not valid JSON"),
])
def test_bad_json_is_one_line(text, message):
    with pytest.raises(InputError) as info:
        SampleRequest.from_json(text)
    assert message in str(info.value), str(info.value)


def test_cli_flags_are_generated_from_the_fields_and_round_trip():
    parser = argparse.ArgumentParser()
    SampleRequest.add_arguments(parser)
    flags = {s for action in parser._actions for s in action.option_strings}
    for f in fields(SampleRequest):
        assert (f"--{f.name.replace('_', '-')}" in flags) == (f.metadata["cli"] is not None), f.name
    assert "--batch" in flags  # the alias of --count
    request = SampleRequest(count=3, seed=9, per_image_seeds=True, steps=4, scheduler="ddim", eta=0.5, noise="torch")
    assert SampleRequest.from_args(parser.parse_args(request.cli_args())) == request
    assert SampleRequest.from_args(parser.parse_args(["--batch", "2"])).count == 2
    with pytest.raises(InputError, match="cannot be given as a command-line value"):
        SampleRequest(count=2, seeds=[1, 2]).cli_args()


def test_triton_inputs_and_reader():
    inputs = {name: kind for name, kind, _ in SampleRequest.triton_inputs()}
    assert inputs["count"] == "TYPE_INT32" and inputs["seed"] == "TYPE_UINT64" and inputs["scheduler"] == "TYPE_STRING"
    assert {"per_image_seeds", "timeout_s"} <= set(inputs)  # the fields Triton lacked
    given = {"count": np.int32(2), "seed": np.uint64(2**63), "scheduler": b"ddim", "eta": np.float32(0.5),
             "per_image_seeds": np.bool_(True), "timeout_s": np.float32(30)}
    request = SampleRequest.from_triton(given.get)
    assert request == SampleRequest(count=2, seed=2**63, scheduler="ddim", eta=0.5, per_image_seeds=True, timeout_s=30.0)
    assert SampleRequest.from_triton(lambda name: None) == SampleRequest()
    with pytest.raises(InputError, match="input 'scheduler' is not a STRING value"):
        SampleRequest.from_triton({"scheduler": b"\xff"}.get)
    with pytest.raises(InputError, match="input 'count' is not a INT32 value"):
        SampleRequest.from_triton({"count": np.float32(1.5)}.get)


def test_result_metadata_names_what_was_sampled():
    settings = SamplerSettings("ddim", 4, 0.5, {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000})
    request = SampleRequest(count=2, seed=3, per_image_seeds=True, scheduler="ddim", steps=4, eta=0.5)
    result = SampleResult(np.zeros((2, 4, 4, 3), np.uint8), request, settings, "unet.onnx", "ab" * 32)
    meta = result.png_metadata(1)
    assert meta["seed"] == "4" and meta["seed_mode"] == "per-image" and meta["batch_index"] == "1"
    assert meta["steps"] == "4" and json.loads(meta["scheduler"])["eta"] == 0.5
    assert meta["engine"] == "unet.onnx" and meta["engine_sha256"] == "ab" * 32
    shared = SampleResult(result.images, SampleRequest(count=2, seed=3), settings, "unet.onnx", None).png_metadata(1)
    assert shared["seed"] == "3" and shared["seed_mode"] == "shared"


def test_a_new_field_reaches_every_surface_from_its_declaration_alone():
    """What adding a request field takes: the field, declared once (here in a subclass, as a future
    a sharpening amount might be); the CLI flag, the JSON schema, the Triton input and reader follow."""
    from dataclasses import dataclass

    from runtime.cli import non_negative_number
    from runtime.requests import request_field

    @dataclass(frozen=True)
    class WithSharpness(SampleRequest):
        sharpness: float = request_field(1.0, "sharpening amount", json=(int, float),
                                        cli=non_negative_number, triton="TYPE_FP32", aliases=("sharpen",))

    parser = argparse.ArgumentParser()
    WithSharpness.add_arguments(parser)
    assert WithSharpness.from_args(parser.parse_args(["--sharpness", "0.5"])).sharpness == 0.5
    assert WithSharpness.from_json('{"sharpen": 2, "count": 2}')[0] == WithSharpness(count=2, sharpness=2)
    assert ("sharpness", "TYPE_FP32", (1,)) in WithSharpness.triton_inputs()
    assert WithSharpness.from_triton({"sharpness": np.float32(4)}.get).sharpness == 4.0
    assert WithSharpness(sharpness=7.5).cli_args() == ["--sharpness", "7.5"]


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
FIELDS = st.sampled_from([*SampleRequest.json_schema()["properties"], "format", "x", ""])


@given(body=st.one_of(st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(json.dumps), st.text(max_size=300),
                      st.binary(max_size=300)))
@settings(max_examples=600, deadline=None, derandomize=True)
def test_any_body_is_a_request_or_one_line_input_error(body):
    """Hypothesis: whatever the JSON text (or bytes), parsing gives a valid request or an InputError of one line."""
    try:
        request, _ = SampleRequest.from_json(body, "request body", {"format": str})
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert request.count >= 1 and 0 <= request.seed  # what __post_init__ guarantees


def test_conditioning_fields_arrive_from_every_entry_point(tmp_path):
    """class_labels, embeddings, negative_embeddings, guidance_scale and guidance_rescale through JSON, the CLI and
    Triton."""
    embeddings = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "e.npy", embeddings)
    from_json, _ = SampleRequest.from_json(json.dumps(
        {"count": 2, "class_labels": [1, 2], "embeddings": embeddings.tolist(), "guidance_scale": 3,
         "guidance_rescale": 0.25}))
    parser = argparse.ArgumentParser()
    SampleRequest.add_arguments(parser)
    from_cli = SampleRequest.from_args(parser.parse_args(
        ["--count", "2", "--class-labels", "1,2", "--embeddings", str(tmp_path / "e.npy"), "--guidance-scale", "3",
         "--guidance-rescale", "0.25"]))
    triton = {"count": np.int32(2), "class_labels": np.array([1, 2], np.int64), "embeddings": embeddings[None],
              "guidance_scale": np.float32(3), "guidance_rescale": np.float32(0.25)}
    from_triton = SampleRequest.from_triton(triton.get)
    for request in (from_json, from_cli, from_triton):
        assert request.class_labels == (1, 2) and request.guidance == Guidance(3.0, 0.25)
        np.testing.assert_array_equal(request.embeddings.reshape(2, 3), embeddings)
        assert request.embeddings.dtype == np.float32
    assert SampleRequest(count=2, class_labels=[1, 2]).cli_args() == ["--count", "2", "--class-labels", "1,2"]
    assert SampleRequest(class_labels=3).class_labels == (3,)
    with pytest.raises(SystemExit):  # argparse: one line, exit 2
        parser.parse_args(["--embeddings", str(tmp_path / "missing.npy")])
    (tmp_path / "bad.npy").write_text("not an array")
    with pytest.raises(SystemExit):
        parser.parse_args(["--embeddings", str(tmp_path / "bad.npy")])


def test_the_published_schema_is_current():
    """docs/request.schema.json, which the docs point at instead of listing fields, is the request type's schema."""
    from runtime.surfaces import SCHEMA_FILE, schema_text
    from tests.conftest import ROOT

    assert (ROOT / SCHEMA_FILE).read_text() == schema_text(), (
        f"regenerate it: python -c 'from runtime.surfaces import schema_text; print(schema_text(), end=\"\")' > {SCHEMA_FILE}")


def test_create_names_the_request_type_it_expects():
    with pytest.raises(InputError, match="expected a SampleRequest, got int"):
        SampleRequest.create(3)
