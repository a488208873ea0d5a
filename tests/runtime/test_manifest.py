"""Typed manifest entries: what export writes reads back equal, and malformed entries are refused by name."""

import json
import shutil

import pytest

from runtime.errors import ManifestError
from runtime.io_spec import BatchProfile
from runtime.manifest import ArtifactEntry, read_manifest, update_artifact
from runtime.runners import BACKENDS, runner_class


def test_entry_round_trips_with_its_build_facts():
    entry = ArtifactEntry(kind="tensorrt", precision="fp16", sha256="a" * 64, bytes=3, source="unet.fp16.onnx",
                          source_sha256="b" * 64, profile=BatchProfile(1, 2, 8), build={"tensorrt": {"version": "10.12.0"}})
    raw = entry.to_dict()
    assert raw["tensorrt"] == {"version": "10.12.0"} and raw["profile"] == {"min": 1, "opt": 2, "max": 8}  # flat layout
    assert ArtifactEntry.from_dict(json.loads(json.dumps(raw)), "x") == entry


@pytest.mark.parametrize(
    "change,match",
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"bytes": "12"}, "bytes"),
        ({"kind": None}, "kind"),
        ({"profile": {"min": 4, "opt": 2, "max": 1}}, "profile"),
        ({"external_data": ["unet.onnx.data"]}, "external_data"),
    ],
)
def test_malformed_entries_are_refused_with_the_key(tiny_engine, tmp_path, change, match):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["artifacts"]["unet.onnx"].update(change)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=match):
        read_manifest(path)


def test_update_keeps_other_entries_typed(tiny_engine, tmp_path):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    manifest = read_manifest(folder / "manifest.json")
    update_artifact(folder, manifest.base(), "unet.onnx", manifest.artifact("unet.onnx"))
    assert read_manifest(folder / "manifest.json") == manifest


def test_backends_are_found_by_kind_and_unknown_kinds_refused():
    assert set(BACKENDS) == {"onnx", "tensorrt", "openvino"}
    assert runner_class("onnx").name == "onnxruntime"
    with pytest.raises(ManifestError, match="kind 'coreml'.*onnx, tensorrt, openvino"):
        runner_class("coreml")


def test_tensorrt_runner_constructs_without_tensorrt(tiny_engine):
    """Constructors have no side effects: TensorRT is imported in activate(), not before."""
    manifest = read_manifest(tiny_engine.parent / "manifest.json")
    runner = runner_class("tensorrt")(tiny_engine, manifest.io, manifest.artifact("unet.onnx"))
    assert not runner.is_active
