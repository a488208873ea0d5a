"""A full disk during each step that writes: one line, exit 2, nothing half-written. Each case runs in a
private mount namespace (`unshare -m`, as root) with its output folder on a small tmpfs."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.robustness


def _unavailable() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is needed"
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                       capture_output=True, text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs in a mount namespace here ({r.stderr.strip()})"


if _unavailable():
    pytest.skip(_unavailable(), allow_module_level=True)


def on_small_disk(tmp_path, kib: int, prepare: str, command: list[str]):
    """Runs ``command`` (a python -m ...) with tmp_path/disk a tmpfs of ``kib`` KiB, after the shell lines
    ``prepare`` (which may copy inputs onto it); returns (exit code, stderr lines, files left on the disk)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    listing = tmp_path / "left.json"
    script = (f"mount -t tmpfs -o size={kib}k tmpfs {disk} && {prepare} && "
              f"{{ \"$@\"; code=$?; }}; {sys.executable} -c 'import json, os, sys; "
              f"print(json.dumps(sorted(os.path.relpath(os.path.join(d, f), sys.argv[1]) for d, _, fs in os.walk(sys.argv[1]) for f in fs)))' "
              f"{disk} > {listing}; exit $code")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, *command], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith(("W1", "sampling"))]
    return r.returncode, lines, json.loads(listing.read_text()) if listing.exists() else None


def assert_one_line_disk_full(code, lines, prog):
    """Exit 2, and the error is one line (the stages' INFO progress lines may precede it), no traceback."""
    assert code == 2, (code, lines)
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if line.startswith(f"{prog}: ")]
    assert len(errors) == 1 and errors[0].startswith(f"{prog}: error: no space left on the device"), lines
    assert lines[-1] == errors[0], lines


@pytest.mark.slow  # 20 s on a 2-core Zen 3: make test-full (the other disk-full cases stay)
def test_export_onnx(tiny_model, tmp_path):
    code, lines, left = on_small_disk(tmp_path, 256, "true", ["-m", "export.onnx", "--model", str(tiny_model),
                                                               "--out", str(tmp_path / "disk" / "engines")])
    assert_one_line_disk_full(code, lines, "export.onnx")
    assert left == [], left


@pytest.mark.parametrize("stage, args, prog", [
    ("fp16", ["-m", "export.fp16"], "export.fp16"),
    ("bf16", ["-m", "export.bf16", "--precision", "fp32"], "export.bf16"),
])
def test_derived_artifacts(tiny_engine, tmp_path, stage, args, prog):
    if stage == "bf16":
        pytest.importorskip("openvino")
    engines = tmp_path / "disk" / "engines"
    size_kib = sum(p.stat().st_size for p in tiny_engine.parent.iterdir() if p.is_file()) // 1024 + 200
    prepare = f"mkdir {engines} && cp {tiny_engine.parent}/unet.onnx {tiny_engine.parent}/manifest.json {engines}/"
    code, lines, left = on_small_disk(tmp_path, size_kib, prepare, [*args, "--engines", str(engines)])
    assert_one_line_disk_full(code, lines, prog)
    assert left == ["engines/manifest.json", "engines/unet.onnx"], left  # as before the step


def test_sampling_output(tiny_engine, tmp_path):
    code, lines, left = on_small_disk(tmp_path, 16, "true", ["-m", "runtime.sample", "--engine", str(tiny_engine), "--count", "64",
                                                              "--steps", "2", "--quiet", "--out", str(tmp_path / "disk" / "out")])
    assert code == 2 and len(lines) == 1 and "runtime.sample: error: cannot write" in lines[0], lines
    assert all(name.startswith("out/ddpm_") and name.endswith(".png") for name in left), left  # whole images only


def test_engine_cache_on_a_full_disk_falls_back_with_one_warning(tiny_engine, tmp_path):
    code, lines, left = on_small_disk(tmp_path, 64, "true", ["-m", "runtime.sample", "--engine", str(tiny_engine), "--steps", "2",
                                                              "--quiet", "--cache-dir", str(tmp_path / "disk" / "cache"),
                                                              "--out", str(tmp_path / "out")])
    assert code == 0, lines
    assert len(lines) == 1 and lines[0].startswith("WARNING: engine cache") and "cannot be written" in lines[0], lines
    assert not [name for name in left if not name.startswith("cache/onnxruntime/")] and not any("/.tmp-" in n for n in left), left
    assert (tmp_path / "out" / "ddpm_0000.png").is_file()
