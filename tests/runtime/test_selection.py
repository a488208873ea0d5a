"""Engines folders (runtime.selection): ``--precision auto`` runs the fastest engine timed on this CPU kind, else
FP32 with a log line naming export.cpu; a named precision runs that engine or is refused in one line; an engine
file runs as it is. Timings here are written by hand (export.cpu's own run: tests/export/test_cpu.py)."""

import logging
import shutil
from dataclasses import replace

import pytest

from runtime import Pipeline
from runtime.errors import InputError
from runtime.host import HostOptions
from runtime.manifest import read_manifest, update_artifact
from runtime.selection import TIMING_KEY, cpu_key, resolve_engine


def with_timings(folder, seconds: dict[str, float], key: str | None = None) -> None:
    manifest = read_manifest(folder / "manifest.json")
    entries = {name: replace(manifest.artifact(name), build={**manifest.artifact(name).build,
                                                             TIMING_KEY: {key or cpu_key(): {"s_per_call": s}}})
               for name, s in seconds.items()}
    first = next(iter(entries))
    update_artifact(folder, manifest.base(), first, entries[first], {k: v for k, v in entries.items() if k != first})


@pytest.fixture()
def folder(int8_engine, tmp_path):
    shutil.copytree(int8_engine.parent, tmp_path / "engines")
    return tmp_path / "engines"


def test_auto_runs_the_fastest_timed_here(folder):
    with_timings(folder, {"unet.onnx": 2.0, "unet.int8.onnx": 1.0})
    assert resolve_engine(folder) == folder / "unet.int8.onnx"
    with_timings(folder, {"unet.onnx": 0.5, "unet.int8.onnx": 1.0})
    assert resolve_engine(folder, "auto") == folder / "unet.onnx"


def test_timings_of_another_cpu_kind_do_not_count(folder, caplog):
    with_timings(folder, {"unet.onnx": 2.0, "unet.int8.onnx": 1.0}, key="Some Other CPU; no bf16/vnni")
    with caplog.at_level(logging.INFO, logger="runtime.selection"):
        assert resolve_engine(folder) == folder / "unet.onnx"
    assert f"no engine was timed on this CPU kind ({cpu_key()})" in caplog.text
    assert f"python -m export.cpu --engines {folder}" in caplog.text


def test_a_named_precision(folder, simulated_int8):
    assert resolve_engine(folder, "int8") == folder / "unet.int8.onnx"
    assert resolve_engine(folder, "fp32") == folder / "unet.onnx"
    with pytest.raises(InputError, match=r"has no bf16 engine \(it has: unet.int8.onnx, unet.onnx\); build one"):
        resolve_engine(folder, "bf16")
    with pytest.raises(InputError, match="precision must be one of auto, fp32, bf16, int8, fp16, got 'int4'"):
        resolve_engine(folder, "int4")
    with pytest.raises(InputError, match="option precision must be one of"):
        HostOptions(precision="fast")
    with Pipeline.load(folder, precision="int8", device="cpu", cache_dir=None) as pipe:
        assert pipe.runner.path.name == "unet.int8.onnx" and pipe(steps=2).shape == (1, 16, 16, 1)


def test_an_engine_file_runs_as_it_is(folder):
    with_timings(folder, {"unet.onnx": 2.0, "unet.int8.onnx": 1.0})
    assert resolve_engine(folder / "unet.onnx") == folder / "unet.onnx"
    assert resolve_engine(folder / "unet.onnx", "fp32") == folder / "unet.onnx"
    with pytest.raises(InputError, match="unet.onnx is a fp32 engine, not int8; pass its folder"):
        resolve_engine(folder / "unet.onnx", "int8")


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a folder without manifest.json; pass an engines folder"):
        resolve_engine(tmp_path)


def test_the_cli_takes_a_folder(folder, simulated_int8, tmp_path):
    from runtime.sample import main

    with_timings(folder, {"unet.onnx": 2.0, "unet.int8.onnx": 1.0})
    assert main(["--engine", str(folder), "--steps", "2", "--out", str(tmp_path / "out"), "--quiet", "--no-cache"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "out" / "ddpm_0000.png").text["engine"] == "unet.int8.onnx"


def test_every_host_takes_a_folder_and_a_precision(folder, simulated_int8):
    """The C ABI, the HTTP replicas and the Triton model open their engine through Host with these options."""
    from runtime.host import Host
    from runtime.requests import SampleRequest

    options = HostOptions.from_json('{"precision": "int8", "device": "cpu", "cache_dir": null}')
    assert HostOptions.from_strings({"precision": "int8"}).precision == "int8"  # Triton's model parameters
    with Host(folder, options) as host:
        assert host.pipeline.runner.path.name == "unet.int8.onnx"
        assert host.submit(SampleRequest(steps=2)).result().shape == (1, 16, 16, 1)


def test_fp16_prefers_the_tensorrt_plan(folder):
    """FP16 is a GPU precision: the plan where the folder has one, else the FP16 ONNX model (entries only here)."""
    from runtime.manifest import ArtifactEntry

    manifest = read_manifest(folder / "manifest.json")
    fp32 = manifest.artifact("unet.onnx")
    fp16 = ArtifactEntry(kind="onnx", precision="fp16-mixed", sha256="1" * 64, bytes=1, source="unet.onnx",
                         source_sha256=fp32.sha256)
    (folder / "unet.fp16.onnx").write_bytes(b"x")
    update_artifact(folder, manifest.base(), "unet.fp16.onnx", fp16)
    assert resolve_engine(folder, "fp16") == folder / "unet.fp16.onnx"
    (folder / "unet.plan").write_bytes(b"x")
    plan = replace(fp16, kind="tensorrt", precision="fp16", source="unet.fp16.onnx", source_sha256=fp16.sha256)
    update_artifact(folder, manifest.base(), "unet.plan", plan)
    assert resolve_engine(folder, "fp16") == folder / "unet.plan"
