"""runtime.engine: an engine file is opened only once it matches its manifest."""

import shutil

import pytest

from runtime.engine import open_engine
from runtime.errors import EngineError, ManifestError


@pytest.fixture
def engines(tiny_engine, tmp_path):
    for name in ("unet.onnx", "manifest.json"):
        shutil.copy2(tiny_engine.parent / name, tmp_path / name)
    return tmp_path


def test_opens_an_active_runner_with_its_manifest(engines):
    runner, manifest, entry = open_engine(engines / "unet.onnx", device="cpu")
    try:
        assert runner.is_active and entry.kind == "onnx" and manifest.io == runner.io
    finally:
        runner.deactivate()


@pytest.mark.parametrize("name, message", [("missing.onnx", "does not exist"), (".", "is a folder"),
                                           ("manifest.json", "must end in")])
def test_refuses_what_is_not_an_engine_file(engines, name, message):
    with pytest.raises(EngineError, match=message):
        open_engine(engines / name)


def test_a_changed_engine_file_is_refused_and_released(engines, monkeypatch):
    from runtime.runners.ort import OrtRunner

    released = []
    monkeypatch.setattr(OrtRunner, "_deactivate", lambda self: released.append(self))
    data = bytearray((engines / "unet.onnx").read_bytes())
    data[-1] ^= 1  # the last byte of a weight: still loads, no longer what the manifest hashed
    (engines / "unet.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match its manifest"):
        open_engine(engines / "unet.onnx", device="cpu")
    assert released  # activated while hashing, then released
