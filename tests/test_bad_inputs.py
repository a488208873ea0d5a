"""The bad-input catalogue: each case refused with one line on stderr and exit code 2 (CLIs), or a
specific exception (API), and nothing written. ``python -m tests.test_bad_inputs`` regenerates
docs/bad-inputs.md from the observed messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    command: str  # "export.onnx", "runtime.sample" or "api"
    make: Callable  # (ctx) -> argv list (CLIs) or a zero-argument callable (API)
    expect: str  # a piece of the message
    error: str = ""  # API: the exception class name


class Ctx:
    """Fresh copies of a tiny model and its engine folder for one case."""

    def __init__(self, tmp: Path, model: Path, engine: Path):
        self.tmp = tmp
        self.model = model
        self.engines = tmp / "engines"
        shutil.copytree(engine.parent, self.engines)
        self.engine = self.engines / "unet.onnx"
        self.out = tmp / "out"

    def manifest(self) -> dict:
        return json.loads((self.engines / "manifest.json").read_text())

    def write_manifest(self, data: dict) -> None:
        (self.engines / "manifest.json").write_text(json.dumps(data))

    def rehash(self, name: str = "unet.onnx") -> None:
        """Make the manifest agree with the file, so a later check has to catch the problem."""
        from runtime.manifest import sha256_file

        data = self.manifest()
        data["artifacts"].setdefault(name, dict(data["artifacts"]["unet.onnx"]))["sha256"] = sha256_file(self.engines / name)
        self.write_manifest(data)

    def sample(self, *args: str) -> list[str]:
        return ["--engine", str(self.engine), "--out", str(self.out), "--steps", "2", *args]


def _folder(ctx, files: dict[str, str | bytes]) -> Path:
    folder = ctx.tmp / "model"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def _truncate(ctx):
    data = ctx.engine.read_bytes()
    ctx.engine.write_bytes(data[: len(data) // 2])
    return ctx.sample()


def _not_onnx(ctx):
    ctx.engine.write_bytes(b"this is not a protobuf" * 100)
    ctx.rehash()
    return ctx.sample()


def _random_plan(ctx):
    plan = ctx.engines / "unet.plan"
    plan.write_bytes(b"\x00" * 64)
    ctx.rehash("unet.plan")
    plan.write_bytes(os.urandom(4096))  # replaced after the build: hash no longer matches
    return ["--engine", str(plan), "--out", str(ctx.out)]


def _other_manifest(ctx):
    data = ctx.manifest()
    data["model"]["config"]["block_out_channels"] = [32, 64]
    data["artifacts"]["unet.onnx"]["sha256"] = "ab" * 32  # another model's engine hash
    ctx.write_manifest(data)
    return ctx.sample()


def _other_image_size(ctx):
    data = ctx.manifest()
    for spec in data["io"]["inputs"] + data["io"]["outputs"]:
        if len(spec["shape"]) == 4:
            spec["shape"][2:] = [32, 32]
    ctx.write_manifest(data)
    return ctx.sample()


def _no_manifest(ctx):
    (ctx.engines / "manifest.json").unlink()
    return ctx.sample()


def _nan_engine(ctx):
    """An engine that returns Inf at timestep 500, the first of 2 leading steps."""
    import onnx
    from onnx import TensorProto, helper

    from runtime.manifest import sha256_file

    io = ctx.manifest()["io"]
    c, h, w = io["inputs"][0]["shape"][1:]
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["timestep", "t500"], ["d"]),
            helper.make_node("Reciprocal", ["d"], ["r"]),
            helper.make_node("Unsqueeze", ["r", "axes"], ["r4"]),
            helper.make_node("Mul", ["sample", "r4"], ["noise_pred"]),
        ],
        "nan",
        [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["batch", c, h, w]),
         helper.make_tensor_value_info("timestep", TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, ["batch", c, h, w])],
        [helper.make_tensor("t500", TensorProto.FLOAT, [], [500.0]),
         helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(ctx.engine))
    data = ctx.manifest()
    data["artifacts"]["unet.onnx"]["sha256"] = sha256_file(ctx.engine)
    ctx.write_manifest(data)
    return ctx.sample()


def _scheduler_override(ctx):
    cfg = ctx.tmp / "sched.json"
    cfg.write_text(json.dumps({"variance_type": "learned_range"}))
    return ctx.sample("--scheduler-config", str(cfg))


def _api(fn):
    def make(ctx):
        def call():
            from runtime import Pipeline

            return fn(ctx, Pipeline)

        return call

    return make


def _api_nan(ctx, Pipeline):
    _nan_engine(ctx)
    with Pipeline.load(ctx.engine) as pipe:
        pipe(steps=2)


def _api_profile(ctx, Pipeline):
    from runtime.io_spec import BatchProfile

    with Pipeline.load(ctx.engine) as pipe:
        pipe.runner.profile = BatchProfile(1, 2, 4)  # as a TensorRT plan built for batches 1..4 declares
        pipe(batch=8, steps=2)


def _png_bytes(pixels) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _png_file(ctx, name: str, pixels=None, data: bytes | None = None) -> str:
    """A PNG (of ``pixels``, or ``data`` as is) in the case's folder."""
    data = _png_bytes(pixels) if data is None else data
    path = ctx.tmp / name
    path.write_bytes(data)
    return str(path)


def _rgb(size: int = 16):
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _image_case(*args):
    """``runtime.sample`` with ``--image`` (the tiny model's size unless the case says) and ``args``."""
    def make(c):
        image = _png_file(c, "start.png", _rgb())
        return c.sample("--image", image, *(a(c) if callable(a) else a for a in args))
    return make


def _bomb(c) -> str:
    from tests.runtime.test_image_input import bomb_png

    return _png_file(c, "bomb.png", data=bomb_png(60000, 60000))


CASES = [
    Case("export-no-config", "model folder without config.json", "export.onnx",
         lambda c: ["--model", str(_folder(c, {})), "--out", str(c.out)], "no config.json"),
    Case("export-wrong-class", "config.json `_class_name` is not UNet2DModel", "export.onnx",
         lambda c: ["--model", str(_folder(c, {"config.json": '{"_class_name": "AutoencoderKL"}'})), "--out", str(c.out)],
         "not a UNet2DModel"),
    Case("export-pickle-only", "model folder with only a pickle `.bin` checkpoint", "export.onnx",
         lambda c: ["--model", str(_folder(c, {"config.json": (c.model / "config.json").read_text(),
                                               "diffusion_pytorch_model.bin": b"\x80\x04K\x00."})), "--out", str(c.out)],
         "--allow-pickle"),
    Case("export-hub-offline", "hub id while the hub cannot be reached", "export.onnx",
         lambda c: ["--model", "google/ddpm-cat-256", "--out", str(c.out)], "cannot reach the model hub"),
    Case("export-no-such-path", "`--model` neither a folder nor a hub id", "export.onnx",
         lambda c: ["--model", str(c.tmp / "missing"), "--out", str(c.out)], "no such folder"),
    Case("export-out-is-file", "`--out` is a file", "export.onnx",
         lambda c: ["--model", str(c.model), "--out", str(c.engine)], "is a file"),
    Case("export-old-opset", "`--opset 13`", "export.onnx",
         lambda c: ["--model", str(c.model), "--out", str(c.out), "--opset", "13"], "at least 17"),
    Case("sample-missing-engine", "engine file does not exist", "runtime.sample",
         lambda c: ["--engine", str(c.tmp / "nope.onnx"), "--out", str(c.out)], "does not exist"),
    Case("sample-truncated-onnx", "truncated ONNX engine", "runtime.sample", _truncate, "does not match its manifest"),
    Case("sample-not-onnx", "a file that is not an ONNX model (manifest agrees with it)", "runtime.sample", _not_onnx,
         "ONNX Runtime cannot load"),
    Case("sample-random-plan", "random-bytes TensorRT plan", "runtime.sample", _random_plan, "does not match its manifest"),
    Case("sample-no-manifest", "manifest missing", "runtime.sample", _no_manifest, "no manifest"),
    Case("sample-other-manifest", "manifest from a different model config", "runtime.sample", _other_manifest,
         "does not match its manifest"),
    Case("sample-other-size", "engine built for another image size than its manifest says", "runtime.sample",
         _other_image_size, "another image size"),
    Case("sample-batch-0", "`--batch 0`", "runtime.sample", lambda c: c.sample("--batch", "0"), "--batch"),
    Case("sample-batch-text", "`--batch two`", "runtime.sample", lambda c: c.sample("--batch", "two"), "--batch"),
    Case("sample-steps-0", "`--steps 0`", "runtime.sample", lambda c: c.sample("--steps", "0"), "--steps"),
    Case("sample-steps-high", "`--steps 1001` (above num_train_timesteps)", "runtime.sample",
         lambda c: c.sample("--steps", "1001"), "1 to 1000"),
    Case("sample-seed-negative", "`--seed -1`", "runtime.sample", lambda c: c.sample("--seed", "-1"), "--seed"),
    Case("sample-seed-text", "`--seed abc`", "runtime.sample", lambda c: c.sample("--seed", "abc"), "--seed"),
    Case("sample-eta-negative", "`--eta -1`", "runtime.sample", lambda c: c.sample("--scheduler", "ddim", "--eta", "-1"), "--eta"),
    Case("sample-scheduler", "`--scheduler euler`", "runtime.sample", lambda c: c.sample("--scheduler", "euler"), "--scheduler"),
    Case("sample-cache-no-graphs", "`--cache-interval 2` on an engine folder without feature-reuse graphs", "runtime.sample",
         lambda c: c.sample("--cache-interval", "2"), "python -m export.deepcache"),
    Case("sample-cache-steps", "`--cache-full-steps 0,9` with `--steps 4`", "runtime.sample",
         lambda c: c.sample("--cache-full-steps", "0,9", "--steps", "4"), "names step 9, but the request has 4 steps"),
    Case("sample-out-is-file", "`--out` is a file", "runtime.sample",
         lambda c: ["--engine", str(c.engine), "--out", str(c.engine), "--steps", "2"], "is a file"),
    Case("sample-out-readonly", "`--out` not writable", "runtime.sample",
         lambda c: ["--engine", str(c.engine), "--out", "/proc/ddpm-out", "--steps", "2"], "cannot write"),
    Case("sample-bad-scheduler-config", "scheduler config asking for an unsupported variance", "runtime.sample",
         _scheduler_override, "variance_type"),
    Case("sample-nan", "NaN/Inf in the model output during sampling", "runtime.sample", _nan_engine,
         "NaN or Inf at step 1/2 (timestep 500)"),
    Case("sample-image-not-png", "`--image` a file that is not a PNG", "runtime.sample",
         lambda c: c.sample("--image", _png_file(c, "x.png", data=b"GIF89a not a png")), "is not a PNG"),
    Case("sample-image-corrupt", "`--image` a truncated PNG", "runtime.sample",
         lambda c: c.sample("--image", _png_file(c, "cut.png", data=_png_bytes(_rgb())[:300])),
         "is not a readable PNG"),
    Case("sample-image-bomb", "`--image` a PNG whose header claims 60000x60000 pixels (decompression bomb)",
         "runtime.sample", lambda c: c.sample("--image", _bomb(c)), "60000x60000 pixels, more than"),
    Case("sample-image-size", "`--image` of another size than the model's (no resizing)", "runtime.sample",
         lambda c: c.sample("--image", _png_file(c, "small.png", _rgb(8))),
         "image is 8x8 with 3 channels; this model takes 16x16 with 3 channels"),
    Case("sample-image-channels", "`--image` grayscale for an RGB model", "runtime.sample",
         lambda c: c.sample("--image", _png_file(c, "gray.png", _rgb()[:, :, 0])), "image is 16x16 with 1 channel"),
    Case("sample-mask-size", "`--mask-image` of another size than the image", "runtime.sample",
         _image_case("--mask-image", lambda c: _png_file(c, "mask.png", _rgb(8)[:, :, 0])),
         "mask_image is 8x8 and image 16x16"),
    Case("sample-strength-0", "`--strength 0`", "runtime.sample", _image_case("--strength", "0"),
         "strength must be a number in (0, 1]"),
    Case("sample-strength-high", "`--strength 1.5`", "runtime.sample", _image_case("--strength", "1.5"),
         "strength must be a number in (0, 1]"),
    Case("sample-strength-no-step", "`--strength 0.2` with `--steps 2` (no step would run)", "runtime.sample",
         _image_case("--strength", "0.2", "--scheduler", "ddim"), "runs no step"),
    Case("sample-image-sampler", "`--image` with a sampler that has no image-to-image (`--scheduler pndm`)",
         "runtime.sample", _image_case("--scheduler", "pndm", "--steps", "10"), "image-to-image runs with ddpm, ddim"),
    Case("sample-mask-no-image", "`--mask-image` without `--image`", "runtime.sample",
         lambda c: c.sample("--mask-image", _png_file(c, "mask.png", _rgb()[:, :, 0])), "give image too"),
    Case("api-missing-engine", "`Pipeline.load` of a missing file", "api",
         _api(lambda c, P: P.load(c.tmp / "nope.onnx")), "does not exist", "EngineError"),
    Case("api-stale-engine", "`Pipeline.load` of an engine its manifest does not describe", "api",
         _api(lambda c, P: (_truncate(c), P.load(c.engine))), "does not match its manifest", "ManifestError"),
    Case("api-batch", "`pipe(batch=0)`", "api", _api(lambda c, P: P.load(c.engine)(batch=0, steps=2)), "batch", "InputError"),
    Case("api-eta", "`pipe(scheduler='ddim', eta=-0.5)`", "api",
         _api(lambda c, P: P.load(c.engine)(scheduler="ddim", eta=-0.5, steps=2)), "eta", "InputError"),
    Case("api-seed", "`pipe(seed='7')`", "api", _api(lambda c, P: P.load(c.engine)(seed="7", steps=2)), "seed", "InputError"),
    Case("api-profile", "batch above the engine's profile", "api", _api(_api_profile), "outside the engine's profile", "InputError"),
    Case("api-nan", "NaN/Inf in the model output", "api", _api(_api_nan), "NaN or Inf at step 1/2", "EngineError"),
]


def run_case(case: Case, ctx: Ctx) -> tuple[int | str, str]:
    """(exit code or exception class, the one message line)."""
    made = case.make(ctx)
    if case.command == "api":
        from runtime.errors import DeployError

        try:
            made()
        except DeployError as exc:
            return type(exc).__name__, str(exc)
        raise AssertionError(f"{case.id}: no error raised")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(ctx.tmp / "hf")}
    r = subprocess.run([sys.executable, "-m", case.command, *made], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env=env)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("sampling")]
    assert len(lines) == 1, f"{case.id}: expected one line on stderr, got:\n{r.stderr}"
    assert r.stdout == "", f"{case.id}: wrote to stdout: {r.stdout}"
    return r.returncode, lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tiny_model, tiny_engine, tmp_path):
    ctx = Ctx(tmp_path, tiny_model, tiny_engine)
    code, message = run_case(case, ctx)
    assert case.expect in message, message
    if case.command == "api":
        assert code == case.error, (code, message)
    else:
        assert code == 2, (code, message)
        assert message.startswith(f"{case.command}: error:")
    assert not ctx.out.exists() or not any(ctx.out.iterdir()), "something was written to the output folder"
    assert not list(ctx.engines.glob("*.png")) and not list(tmp_path.glob("**/*.tmp"))


def write_doc(path: Path) -> None:
    """Runs every case once and writes the catalogue table with what was observed."""
    import tempfile

    from export.reference import TINY_CONFIG, save_model

    rows = []
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        model = save_model(td / "model", TINY_CONFIG)
        from export.onnx import main as export_main

        assert export_main(["--model", str(model), "--out", str(td / "engines")]) == 0
        for i, case in enumerate(CASES):
            tmp = td / f"case{i}"
            tmp.mkdir()
            code, message = run_case(case, Ctx(tmp, model, td / "engines" / "unet.onnx"))
            message = message.replace(str(tmp), "…").replace("|", "\\|")
            surface = "Python API" if case.command == "api" else f"`python -m {case.command}`"
            result = f"`{code}`" if case.command == "api" else f"exit {code}"
            rows.append(f"| {i + 1} | {case.what} | {surface} | {result} | {message} |")
    path.write_text(
        "# Bad-input catalogue\n\n"
        "Each case is a test in `tests/test_bad_inputs.py` (which also checks that nothing was written); this\n"
        "table is regenerated from the observed messages by `python -m tests.test_bad_inputs`.\n"
        "CLIs print one line on stderr and exit 2; the Python API raises the class shown (all derive from\n"
        "`runtime.DeployError`).\n\n"
        "| # | bad input | where | result | message (temp paths shortened to …) |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    write_doc(ROOT / "docs" / "bad-inputs.md")
