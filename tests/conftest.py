import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "digits16"  # trained here (python -m demo.train), shipped in the repo
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from export.reference import TINY_CONFIG, reference_blocks_tiny, save_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def engine_cache_dir(tmp_path_factory):
    """The suite's engine cache (runtime.cache) lives in a temporary folder, never in the user's home;
    subprocesses inherit it through the environment."""
    import os

    path = tmp_path_factory.mktemp("engine_cache")
    old = os.environ.get("DDPM_DEPLOY_CACHE_DIR")
    os.environ["DDPM_DEPLOY_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        del os.environ["DDPM_DEPLOY_CACHE_DIR"]
    else:
        os.environ["DDPM_DEPLOY_CACHE_DIR"] = old


def read_png(path: Path):
    """(uint8 pixels [H, W, C], PNG text chunks)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im)
        return (pixels[..., None] if pixels.ndim == 2 else pixels), dict(im.text)


def sample_offline(engine: Path, request: dict, out: Path) -> list:
    """A service request (runtime.requests fields) run through `python -m runtime.sample`: per image,
    (uint8 pixels [H, W, C], PNG text chunks)."""
    import dataclasses
    import json
    import subprocess

    from runtime.requests import SampleRequest

    request, _ = SampleRequest.from_json(json.dumps(request), extra={"format": str})  # the service's own field too
    request = dataclasses.replace(request, timeout_s=None)  # a deadline does not change the images
    args = ["--engine", str(engine), "--out", str(out), "--quiet", *request.cli_args()]
    r = subprocess.run([sys.executable, "-m", "runtime.sample", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [read_png(path) for path in sorted(Path(out).glob("*.png"))]


def export_engine(model_dir: Path, out: Path) -> Path:
    from export.onnx import main

    assert main(["--model", str(model_dir), "--out", str(out)]) == 0
    return out / "unet.onnx"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("tiny_model"), TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tmp_path_factory) -> Path:
    return export_engine(tiny_model, tmp_path_factory.mktemp("tiny_engine"))


@pytest.fixture(scope="session", params=[1, 2], ids=["lpb1", "lpb2"])
def reference_blocks_model(request, tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp(f"ref_lpb{request.param}"), reference_blocks_tiny(request.param))


@pytest.fixture(scope="session")
def demo_engine(tmp_path_factory) -> Path:
    """The shipped demo model, exported (parity gate) into a temporary folder."""
    return export_engine(DEMO_MODEL, tmp_path_factory.mktemp("demo_engine"))
