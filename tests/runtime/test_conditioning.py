"""runtime.conditioning: a request's condition → the engine's rows, guidance, the manifest's declaration.

The engine here is the stand-in UNet (tests/runtime/standin_unet.py): these tests check wiring and
arithmetic; the exported engines are compared with diffusers in tests/export/test_conditional.py."""

import numpy as np
import pytest

from runtime.conditioning import Conditioning, request_rows
from runtime.errors import InputError, ManifestError
from runtime.io_spec import SequenceRange
from runtime.pipeline import Pipeline
from runtime.requests import SampleRequest
from tests.runtime.standin_unet import DIM, NUM_CLASSES, StandinUNet, standin_io

SEQ = SequenceRange(2, 2, 2)
CONFIG = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}
NULL_CLASS = NUM_CLASSES - 1
TABLE = np.arange(4 * 2 * DIM, dtype=np.float32).reshape(4, 2, DIM) / 10  # 4 labels
NULL = np.full((2, DIM), -1, np.float32)


def rows(io, declared, **fields):
    return request_rows(io, declared, SampleRequest(**fields))


def test_class_labels_unguided_and_guided():
    io = standin_io(class_labels=True)
    declared = Conditioning(null_class=NULL_CLASS)
    plain = rows(io, declared, count=3, class_labels=[1, 2, 3])
    assert plain["class_labels"].tolist() == [1, 2, 3]
    shared = rows(io, declared, count=2, class_labels=[5])
    assert shared["class_labels"].tolist() == [5, 5]
    guided = rows(io, declared, count=2, class_labels=[1, 2], guidance_scale=4)
    assert SampleRequest(count=2, class_labels=[1, 2], guidance_scale=4).guidance.rows_per_image == 2
    assert guided["class_labels"].tolist() == [NULL_CLASS, NULL_CLASS, 1, 2]  # unconditional rows first
    assert rows(io, declared, count=2)["class_labels"].tolist() == [NULL_CLASS] * 2  # no condition: the null class


def test_cross_attention_labels_embeddings_and_negatives():
    io = standin_io(sequence=SEQ)
    declared = Conditioning(labels=("a", "b", "c", "d"), label_embeddings=TABLE, null_embedding=NULL)
    by_label = rows(io, declared, count=2, class_labels=[3, 0])
    np.testing.assert_array_equal(by_label["encoder_hidden_states"], TABLE[[3, 0]])
    given = np.ones((2, DIM), np.float32)
    guided = rows(io, declared, count=2, embeddings=given, guidance_scale=2)
    np.testing.assert_array_equal(guided["encoder_hidden_states"], np.stack([NULL, NULL, given, given]))
    negative = np.zeros((2, 2, DIM))
    with_negative = rows(io, declared, count=2, class_labels=[1], negative_embeddings=negative, guidance_scale=2)
    np.testing.assert_array_equal(with_negative["encoder_hidden_states"][:2], negative)
    np.testing.assert_array_equal(with_negative["encoder_hidden_states"][2:], TABLE[[1, 1]])


# (request fields, engine: "class" | "xattn" | "plain", what the one-line refusal says)
BAD = [
    (dict(class_labels=[NULL_CLASS + 1]), "class", "out of range"),
    (dict(class_labels=[1, 2], count=3), "class", "2 entries for 3 image"),
    (dict(embeddings=np.ones((2, DIM))), "class", "takes no embeddings"),
    (dict(guidance_scale=2), "class", "needs a condition"),
    (dict(class_labels=[1], guidance_scale=2), "class-no-null", "no null class"),
    (dict(), "class-no-null", "needs class_labels"),
    (dict(class_labels=[0]), "plain", "unconditional"),
    (dict(guidance_scale=3), "plain", "unconditional"),
    (dict(embeddings=np.ones((3, DIM))), "xattn", r"must be \[2, 3\]"),
    (dict(embeddings=np.ones((2, DIM + 1))), "xattn", r"must be \[2, 3\]"),
    (dict(embeddings=np.ones((3, 2, DIM)), count=2), "xattn", "3 rows for 2 image"),
    (dict(class_labels=[4]), "xattn", "out of range"),
    (dict(embeddings=np.ones((2, DIM)), negative_embeddings=np.ones((2, DIM))), "xattn", "guidance only"),
    (dict(embeddings=np.ones((2, DIM)), guidance_scale=2), "xattn-bare", "no null embedding"),
    (dict(class_labels=[1]), "xattn-bare", "no class labels"),
    (dict(embeddings=np.ones((2, DIM)), conditioning={"encoder_hidden_states": np.ones((1, 2, DIM))}), "xattn", "not both"),
    (dict(conditioning={"class_labels": np.array([NUM_CLASSES])}), "class", "outside 0.."),
    (dict(conditioning={"encoder_hidden_states": np.full((1, 2, DIM), np.nan)}), "xattn", "NaN"),
]


@pytest.mark.parametrize("fields,engine,message", BAD, ids=[f"{e}:{m}" for _, e, m in BAD])
def test_bad_conditions_are_refused_with_one_line(fields, engine, message):
    io = standin_io(class_labels=engine.startswith("class"), sequence=SEQ if engine.startswith("xattn") else None)
    declared = {"class": Conditioning(labels=tuple("abcdefghijk"), null_class=NULL_CLASS),
                "xattn": Conditioning(label_embeddings=TABLE, null_embedding=NULL)}.get(engine, Conditioning())
    with pytest.raises(InputError, match=message) as info:
        rows(io, declared, **fields)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("fields,message", [
    (dict(embeddings=np.full((2, DIM), np.inf)), "NaN or Inf"),
    (dict(embeddings=[[1e39] * DIM] * 2), "beyond float32"),
    (dict(embeddings=np.ones((2, DIM), np.int32)), "float array"),
    (dict(embeddings=[[1, "x"]]), "hold numbers"),
    (dict(embeddings=[[1], [1, 2]]), "rectangular"),
    (dict(embeddings=np.ones(DIM)), r"\[sequence, dim\]"),
    (dict(embeddings=np.ones((0, DIM))), r"\[sequence, dim\]"),
    (dict(class_labels=[-1]), "whole numbers >= 0"),
    (dict(class_labels=[1.5]), "whole numbers >= 0"),
    (dict(class_labels=[True]), "whole numbers >= 0"),
    (dict(class_labels=[]), "whole numbers >= 0"),
    (dict(guidance_scale=0.5), ">= 1"),
    (dict(guidance_scale=float("nan")), ">= 1"),
    (dict(guidance_scale="7"), ">= 1"),
])
def test_the_request_refuses_malformed_conditions(fields, message):
    with pytest.raises(InputError, match=message):
        SampleRequest(**fields)


def test_guided_trajectory_runs_two_rows_per_image_in_one_call():
    runner = StandinUNet(class_labels=True).activate()
    pipe = Pipeline(runner, CONFIG, conditioning=Conditioning(null_class=NULL_CLASS))
    request = dict(count=2, steps=3, scheduler="ddim", seed=1)
    guided = pipe.denoise(**request, class_labels=[3, 4], guidance_scale=2.0)
    assert runner.calls == [4, 4, 4]  # each image's unconditional and conditional row, in one call per step
    unguided = pipe.denoise(**request, class_labels=[3, 4])
    assert runner.calls[3:] == [2, 2, 2] and not np.array_equal(guided, unguided)
    # guiding towards the null class itself: uncond + s * (cond - uncond) is uncond exactly
    towards_null = pipe.denoise(**request, class_labels=[NULL_CLASS], guidance_scale=5.0)
    np.testing.assert_array_equal(towards_null, pipe.denoise(**request))


def test_manifest_declaration_is_checked():
    io = standin_io(class_labels=True)
    with pytest.raises(ManifestError, match="null class 11"):
        Conditioning.from_manifest({"unconditional": {"class_label": NUM_CLASSES}}, None, io)
    with pytest.raises(ManifestError, match="without encoder_hidden_states"):
        Conditioning(null_embedding=NULL).check_against(io, ManifestError)
    assert Conditioning.from_manifest({}, None, io).can_guide(io) is False
    assert Conditioning.from_manifest({"unconditional": {"class_label": 0}}, None, io).can_guide(io) is True


def test_manifest_arrays_are_hash_checked(tmp_path):
    io = standin_io(sequence=SEQ)
    np.save(tmp_path / "null.npy", NULL)
    section = {"unconditional": {"embedding": {"file": "null.npy", "sha256": "0" * 64}}}
    seen = []

    def check(path, digest):
        seen.append((path.name, digest))
        raise ManifestError("stale")

    with pytest.raises(ManifestError, match="stale"):
        Conditioning.from_manifest(section, tmp_path, io, check)
    assert seen == [("null.npy", "0" * 64)]
    loaded = Conditioning.from_manifest(section, tmp_path, io)
    np.testing.assert_array_equal(loaded.null_embedding, NULL)
    with pytest.raises(ManifestError, match="names no file"):
        Conditioning.from_manifest({"unconditional": {"embedding": {"file": "../x.npy"}}}, tmp_path, io)
