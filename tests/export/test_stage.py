"""export.stage: the driver every derived-artifact stage runs through (a stand-in stage here: its build writes
files of bytes, no model; the real stages are tested in their own modules)."""

import json
from pathlib import Path

import pytest

from export.stage import Built, Stage, run_stage
from runtime.errors import DeployError, GateError
from runtime.manifest import ArtifactEntry, read_manifest, sha256_file
from tests.conftest import copied_engine


def fake_build(order: list, fail: bool = False):
    def build(source, work: Path, ready) -> Built:
        order.append(("ready", ready))
        entries = {}
        for name in ("side.bin", "main.bin"):
            (work / name).write_bytes(name.encode())
            entries[name] = ArtifactEntry(kind="onnx", precision="fp32", sha256=sha256_file(work / name),
                                          bytes=(work / name).stat().st_size, source="unet.onnx",
                                          source_sha256=source.entry.sha256)
        if fail:
            raise GateError("stand-in gate failed; nothing was written")
        return Built("main.bin", entries, "stand-in summary")
    return build


def test_a_stage_publishes_records_and_summarises(tiny_engine, tmp_path, capsys):
    folder = copied_engine(tiny_engine, tmp_path / "engines").parent
    (folder / ".staging-old-123").mkdir()  # a killed build's leftovers
    order = []
    assert run_stage(Stage("fake", fake_build(order), preflight=lambda source: source.path.name), folder) == 0
    assert order == [("ready", "unet.onnx")]
    manifest = read_manifest(folder / "manifest.json")
    assert {"unet.onnx", "side.bin", "main.bin"} <= set(manifest.artifacts)
    assert manifest.artifact("main.bin").sha256 == sha256_file(folder / "main.bin")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # leftovers and staging gone
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"wrote {folder / 'main.bin'} (0.0 MB) in ") and out[0].endswith("; stand-in summary")


def test_a_failed_gate_publishes_nothing(tiny_engine, tmp_path):
    folder = copied_engine(tiny_engine, tmp_path / "engines").parent
    before = json.loads((folder / "manifest.json").read_text())
    with pytest.raises(GateError):
        run_stage(Stage("fake", fake_build([], fail=True)), folder)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "unet.onnx"]
    assert json.loads((folder / "manifest.json").read_text()) == before


def test_a_missing_source_names_the_command_that_makes_it(tmp_path):
    with pytest.raises(DeployError, match=r"unet.fp16.onnx does not exist; run `python -m export.fp16 --engines"):
        run_stage(Stage("fake", fake_build([]), source="unet.fp16.onnx"), tmp_path)
