"""runtime.sample refuses bad input with one line on stderr, exit code 2, and writes nothing."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def sample_cli(*args):
    return subprocess.run([sys.executable, "-m", "runtime.sample", "--quiet", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_refused(result, *needles):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("runtime.sample: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


@pytest.fixture
def engine_copy(tiny_engine, tmp_path):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    return folder / "unet.onnx"


def test_missing_engine(tmp_path):
    assert_refused(sample_cli("--engine", str(tmp_path / "nope.onnx"), "--out", str(tmp_path / "o")), "does not exist", "make engine")
    assert not (tmp_path / "o").exists()


def test_file_that_is_not_onnx(engine_copy, tmp_path):
    from runtime.manifest import sha256_file

    engine_copy.write_bytes(b"definitely not a protobuf" * 10)
    manifest = engine_copy.parent / "manifest.json"
    data = json.loads(manifest.read_text())
    data["artifacts"]["unet.onnx"]["sha256"] = sha256_file(engine_copy)  # a consistent manifest: ORT itself must refuse
    manifest.write_text(json.dumps(data))
    assert_refused(sample_cli("--engine", str(engine_copy), "--out", str(tmp_path / "o"), "--steps", "2"), "cannot load", "rebuild")
    assert not (tmp_path / "o").exists()


def test_manifest_missing(engine_copy, tmp_path):
    (engine_copy.parent / "manifest.json").unlink()
    assert_refused(sample_cli("--engine", str(engine_copy), "--out", str(tmp_path / "o")), "no manifest")


def test_manifest_hash_mismatch(engine_copy, tmp_path):
    with open(engine_copy, "ab") as f:
        f.write(b"\0")
    assert_refused(sample_cli("--engine", str(engine_copy), "--out", str(tmp_path / "o")), "does not match its manifest", "rebuild")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,needle", [
    (["--batch", "0"], "--batch"),
    (["--batch", "-2"], "--batch"),
    (["--batch", "two"], "--batch"),
    (["--steps", "0"], "--steps"),
    (["--seed", "-1"], "--seed"),
    (["--noise", "cuda"], "--noise"),
    (["--scheduler", "euler"], "--scheduler"),
    (["--eta", "-0.5"], "--eta"),
    (["--eta", "nan"], "--eta"),
    (["--scheduler", "ddim", "--eta", "x"], "--eta"),
    (["--scheduler", "dpmpp-2m", "--steps", "1000"], "at most 999 steps"),
    (["--scheduler", "ddim", "--steps", "1001"], "1 to 1000"),
    (["--scheduler", "ddpm", "--eta", "0.5"], "ddim and repaint only"),
])
def test_bad_arguments(tiny_engine, tmp_path, args, needle):
    assert_refused(sample_cli("--engine", str(tiny_engine), "--out", str(tmp_path / "o"), *args), needle)
    assert not (tmp_path / "o").exists()


def test_steps_above_num_train_timesteps(tiny_engine, tmp_path):
    assert_refused(sample_cli("--engine", str(tiny_engine), "--out", str(tmp_path / "o"), "--steps", "1001"), "1 to 1000")
    assert not (tmp_path / "o").exists()


def test_output_path_is_a_file(tiny_engine, tmp_path):
    target = tmp_path / "file.png"
    target.write_bytes(b"x")
    assert_refused(sample_cli("--engine", str(tiny_engine), "--out", str(target), "--steps", "2"), "is a file")
    assert target.read_bytes() == b"x"


def test_output_path_not_writable(tiny_engine):
    # /proc refuses new files even to root, unlike a chmod-ed folder.
    assert_refused(sample_cli("--engine", str(tiny_engine), "--out", "/proc/ddpm-out", "--steps", "2"), "cannot write", "writable")


def test_bad_scheduler_override(tiny_engine, tmp_path):
    cfg = tmp_path / "sched.json"
    cfg.write_text(json.dumps({"variance_type": "learned_range"}))
    assert_refused(
        sample_cli("--engine", str(tiny_engine), "--out", str(tmp_path / "o"), "--scheduler-config", str(cfg)), "variance_type"
    )
    assert not (tmp_path / "o").exists()


def test_conditioned_sampling_on_the_command_line(xattn_engine, tmp_path):
    """--class-labels, --embeddings FILE.npy, --negative-embeddings, --guidance-scale; the condition in the PNGs."""
    import numpy as np

    from runtime import Pipeline
    from tests.conftest import read_png

    embeddings = np.linspace(-1, 1, 6 * 16, dtype=np.float32).reshape(6, 16)
    np.save(tmp_path / "e.npy", embeddings)
    np.save(tmp_path / "neg.npy", np.zeros((6, 16), np.float32))
    runs = {
        "labels": (["--count", "2", "--class-labels", "2,0", "--guidance-scale", "3", "--guidance-rescale", "0.5"],
                   dict(count=2, class_labels=[2, 0], guidance_scale=3.0, guidance_rescale=0.5)),
        "embeddings": (["--embeddings", str(tmp_path / "e.npy"), "--negative-embeddings", str(tmp_path / "neg.npy"),
                        "--guidance-scale", "2"],
                       dict(embeddings=embeddings, negative_embeddings=np.zeros((6, 16)), guidance_scale=2.0)),
    }
    with Pipeline.load(xattn_engine, device="cpu") as pipe:
        for name, (args, fields) in runs.items():
            out = tmp_path / name
            r = sample_cli("--engine", str(xattn_engine), "--out", str(out), "--steps", "4", "--scheduler", "ddim", *args)
            assert r.returncode == 0, r.stderr
            expected = pipe.sample(steps=4, scheduler="ddim", **fields)
            got = [read_png(p) for p in sorted(out.glob("*.png"))]
            np.testing.assert_array_equal(np.stack([pixels for pixels, _ in got]), expected)
            text = got[0][1]
            assert text["guidance_scale"] == repr(fields["guidance_scale"])
            assert text.get("guidance_rescale") == ("0.5" if name == "labels" else None)
            assert text.get("class_label") == ("2" if name == "labels" else None)
            assert ("embeddings_sha256" in text) == (name == "embeddings")


@pytest.mark.parametrize("args,needles", [
    (["--class-labels", "3"], ("out of range", "0..2")),
    (["--class-labels", "a,b"], ("--class-labels", "whole numbers")),
    (["--guidance-scale", "2"], ("needs a condition",)),
    (["--class-labels", "1", "--guidance-scale", "0.5"], ("guidance_scale must be",)),
    (["--class-labels", "1", "--guidance-rescale", "0.5"], ("guided requests only",)),
    (["--embeddings", "/nonexistent.npy"], ("cannot read /nonexistent.npy",)),
])
def test_bad_conditions_on_the_command_line(xattn_engine, tmp_path, args, needles):
    r = sample_cli("--engine", str(xattn_engine), "--out", str(tmp_path / "o"), "--steps", "2", *args)
    assert_refused(r, *needles)
    assert not (tmp_path / "o").exists()
