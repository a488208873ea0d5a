"""Kill and interrupt safety, concurrent use of one pipeline, determinism."""

import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from runtime import Pipeline
from tests.conftest import ROOT, child_stages_env

KILL_LOOPS_SAMPLE = 8
KILL_LOOPS_EXPORT = 4


def _as_if_from_a_shell():
    """The child starts with SIGINT handled as a shell would give it (default, unblocked), whatever this test
    process inherited or changed: these tests are about the CLI's own handling."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start(module, *args):
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_if_from_a_shell,
                            env=child_stages_env())  # stages in their own processes, as a user's run has them


def final_files(folder):
    """Files a reader would pick up: temporary files are dot-prefixed and end in .tmp."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


def timed_run(module, *args) -> float:
    """Seconds one uninterrupted run takes, to aim the kills at its whole length, writing included."""
    t0 = time.perf_counter()
    proc = start(module, *args)
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    return time.perf_counter() - t0


@pytest.mark.robustness
def test_sigkill_during_sampling_leaves_only_complete_images(tiny_engine, tmp_path):
    rnd = random.Random(0)
    complete = 0
    args = ["--engine", str(tiny_engine), "--batch", "128", "--steps", "20", "--quiet"]
    duration = timed_run("runtime.sample", *args, "--out", str(tmp_path / "timed"))
    for loop in range(KILL_LOOPS_SAMPLE):
        out = tmp_path / f"out{loop}"
        proc = start("runtime.sample", *args, "--out", str(out))
        time.sleep(rnd.uniform(0.5, 1.0) * duration)
        proc.kill()
        proc.wait()
        for png in final_files(out):
            with Image.open(png) as im:
                im.load()  # raises on a truncated file
                assert im.size == (16, 16)
            complete += 1
    print(f"\n{KILL_LOOPS_SAMPLE} SIGKILLs during sampling: {complete} complete images left, none partial")


@pytest.mark.slow  # two minutes of exports killed mid-way: make test-full
@pytest.mark.robustness
def test_sigkill_during_export_leaves_nothing_half_written(tiny_model, tmp_path):
    import onnx

    from runtime.errors import ManifestError
    from runtime.manifest import read_manifest, verify_artifact

    rnd = random.Random(1)
    outcomes = []
    duration = timed_run("export.onnx", "--model", str(tiny_model), "--out", str(tmp_path / "timed"))
    for loop in range(KILL_LOOPS_EXPORT):
        out = tmp_path / f"engines{loop}"
        proc = start("export.onnx", "--model", str(tiny_model), "--out", str(out))
        time.sleep(rnd.uniform(0.8, 1.1) * duration)
        proc.kill()
        proc.wait()
        names = sorted(p.name for p in final_files(out))
        if "unet.onnx" in names:
            onnx.checker.check_model(onnx.load(str(out / "unet.onnx")))
        if "manifest.json" in names:
            read_manifest(out / "manifest.json")
            verify_artifact(out / "unet.onnx")
            outcomes.append("complete")
        elif "unet.onnx" in names:
            with pytest.raises(ManifestError):  # graph written, manifest not yet: refused, never half-read
                verify_artifact(out / "unet.onnx")
            outcomes.append("graph only, refused")
        else:
            outcomes.append("nothing")
    print(f"\n{KILL_LOOPS_EXPORT} SIGKILLs during export: {outcomes}")


@pytest.mark.robustness
def test_sigint_stops_within_a_step_with_exit_130(tiny_engine, tmp_path):
    out = tmp_path / "out"
    proc = start("runtime.sample", "--engine", str(tiny_engine), "--out", str(out), "--batch", "64", "--steps", "1000")
    time.sleep(2.0)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"no exit 30 s after SIGINT (this process: SIGINT handler {signal.getsignal(signal.SIGINT)}, "
                    f"blocked {signal.pthread_sigmask(signal.SIG_BLOCK, [])}); stderr tail: {stderr[-800:]!r}")
    waited = time.perf_counter() - sent
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    assert final_files(out) == []  # no partial (or any) image
    assert waited < 1.0, f"took {waited:.2f} s to stop"


def test_one_pipeline_from_8_threads_equals_serial(tiny_engine):
    requests = [dict(batch=1 + i % 2, steps=6, seed=100 + i, noise=("numpy", "torch")[i % 2]) for i in range(32)]
    with Pipeline.load(tiny_engine) as pipe:
        serial = [pipe(**r) for r in requests]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(lambda r: pipe(**r), requests))
    for a, b in zip(serial, concurrent):
        np.testing.assert_array_equal(a, b)


def test_same_seed_gives_byte_identical_pngs(tiny_engine, tmp_path):
    for run in ("a", "b"):
        r = subprocess.run([sys.executable, "-m", "runtime.sample", "--engine", str(tiny_engine), "--out",
                            str(tmp_path / run), "--batch", "2", "--steps", "5", "--seed", "9", "--quiet"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    for name in ("ddpm_0000.png", "ddpm_0001.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
