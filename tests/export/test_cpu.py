"""``python -m export.cpu``: builds what this CPU has units for, times each CPU engine here, records the times, and
``--precision auto`` then runs the fastest; a CPU without BF16/VNNI units gets FP32 and one line saying why."""

import shutil

import pytest

from export import cpu as export_cpu
from export.cpu import main as cpu_main
from runtime import Pipeline
from runtime.cpu import cpu_flags
from runtime.manifest import read_manifest
from runtime.selection import TIMING_KEY, cpu_key, fastest, resolve_engine


def test_times_every_engine_and_auto_runs_the_fastest(int8_engine, tmp_path, capsys):
    """On the INT8 digits folder (FP32, INT8 and their feature-reuse graphs) with nothing built: each CPU engine
    this CPU has units for is timed and recorded under this CPU kind; auto resolves to the fastest recorded."""
    folder = tmp_path / "engines"
    shutil.copytree(int8_engine.parent, folder)
    assert cpu_main(["--engines", str(folder), "--no-build", "--repeats", "1", "--batch", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert "per batch-2 UNet call" in line
    manifest = read_manifest(folder / "manifest.json")
    timed = {name for name, entry in manifest.artifacts.items() if cpu_key() in entry.build.get(TIMING_KEY, {})}
    has_vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
    assert timed == ({"unet.onnx", "unet.int8.onnx"} if has_vnni else {"unet.onnx"})  # never the reuse graphs
    best, seconds = fastest(manifest)
    assert resolve_engine(folder) == folder / best and f"--precision auto runs {best}" in line
    records = [manifest.artifact(name).build[TIMING_KEY][cpu_key()] for name in timed]
    assert seconds == min(r["s_per_call"] for r in records) and {r["batch"] for r in records} == {2}
    with Pipeline.load(folder, device="cpu", cache_dir=None) as pipe:  # a folder is an engine argument
        assert pipe.runner.path == folder / best


def test_a_cpu_without_units_gets_fp32_and_says_why(tiny_engine, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    monkeypatch.setattr(export_cpu, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert cpu_main(["--engines", str(folder), "--repeats", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--precision auto runs unet.onnx" in line
    assert "no BF16 units" in line and "no VNNI or AMX units" in line
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "unet.onnx"]  # nothing else built


def test_a_folder_without_fp32_engine_is_refused(tmp_path, capsys):
    from runtime.cli import run

    assert run(cpu_main, "export.cpu", ["--engines", str(tmp_path)]) == 2
    assert "unet.onnx does not exist; run `python -m export.onnx" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_units_missing_names_the_units(precision, monkeypatch):
    monkeypatch.setattr(export_cpu, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.delenv("DDPM_DEPLOY_INT8_SIMULATE", raising=False)
    assert "no BF16 units" in export_cpu.units_missing("bf16") if precision == "bf16" else \
        "no VNNI or AMX units" in export_cpu.units_missing("int8")
    monkeypatch.setattr(export_cpu, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx512_vnni"}))
    assert export_cpu.units_missing(precision) is None


def test_a_refused_precision_is_one_line_and_fp32_still_runs(tiny_engine, tmp_path, monkeypatch, capsys):
    """A gate that refuses the model, or a backend missing, leaves that engine out with one line; exit 0."""
    import export.bf16
    import export.int8
    from runtime.errors import BackendUnavailableError, GateError

    def refuse(error):
        def main(argv):
            raise error
        return main

    folder = tmp_path / "engines"
    shutil.copytree(tiny_engine.parent, folder)
    monkeypatch.setattr(export_cpu, "cpu_flags", lambda: frozenset({"avx512_bf16", "avx512_vnni"}))
    monkeypatch.setattr(export.bf16, "main", refuse(GateError("BF16 gate failed: image PSNR 20.0 dB")))
    monkeypatch.setattr(export.int8, "main", refuse(BackendUnavailableError("NNCF is not installed here")))
    assert cpu_main(["--engines", str(folder), "--repeats", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert "--precision auto runs unet.onnx" in line and "no unet.ov.xml: BF16 gate failed" in line
    assert "no unet.int8.onnx: NNCF is not installed here" in line and "no unet.int8.ov.xml" in line
