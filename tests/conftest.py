import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "digits16"  # trained here (python -m demo.train), shipped in the repo
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from export.reference import TINY_CONFIG, reference_blocks_tiny, save_model  # noqa: E402


def child_stages_env() -> dict[str, str]:
    """This environment with the export stages in child processes of their own again, as outside the suite (for
    the tests of memory limits and killed exports)."""
    import os

    from export.child import IN_PROCESS_ENV

    return {k: v for k, v in os.environ.items() if k != IN_PROCESS_ENV}


@pytest.fixture(scope="session", autouse=True)
def suite_environment(tmp_path_factory):
    """What the whole suite (and the subprocesses it starts) runs with, restored afterwards:

    * export stages in the calling process (export.child: arguments and results still pickled), not a fresh
      interpreter each (about 3 s of importing torch per stage); the tests of memory limits and killed exports
      run real child processes (:func:`child_stages_env`), and so does everything outside the suite;
    * the engine cache (runtime.cache) in a temporary folder, never in the user's home.
    """
    from export.child import IN_PROCESS_ENV

    with pytest.MonkeyPatch.context() as env:
        env.setenv(IN_PROCESS_ENV, "1")
        env.setenv("DDPM_DEPLOY_CACHE_DIR", str(tmp_path_factory.mktemp("engine_cache")))
        yield


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

    import numpy as np

    from runtime.requests import SampleRequest

    request, _ = SampleRequest.from_json(json.dumps(request), extra={"format": str})  # the service's own field too
    request = dataclasses.replace(request, timeout_s=None)  # a deadline does not change the images
    image_args = []  # image inputs as .npy files of what the request decoded them to (the same bits)
    for name in ("image", "mask_image", "strength", "jump_length", "jump_n_sample"):
        value = getattr(request, name)
        if isinstance(value, np.ndarray):
            path = Path(out).parent / f"{Path(out).name}-{name}.npy"
            np.save(path, value)
            value = path
        if value is not None:
            image_args += [f"--{name.replace('_', '-')}", str(value)]
    bare = dataclasses.replace(request, image=None, mask_image=None, strength=None, jump_length=None, jump_n_sample=None,
                               scheduler=None if request.inpainting else request.scheduler)
    args = ["--engine", str(engine), "--out", str(out), "--quiet", *bare.cli_args(), *image_args]
    r = subprocess.run([sys.executable, "-m", "runtime.sample", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [read_png(path) for path in sorted(Path(out).glob("*.png"))]


def export_engine(model_dir: Path, out: Path, *args: str) -> Path:
    from export.onnx import main

    assert main(["--model", str(model_dir), "--out", str(out), *args]) == 0
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
def reference_blocks_engine(reference_blocks_model, tmp_path_factory) -> Path:
    """The reference block-type lists, exported (tests/export/test_onnx.py, test_fp16.py copy it before adding to it)."""
    return export_engine(reference_blocks_model, tmp_path_factory.mktemp("ref_engine"))


@pytest.fixture(scope="session")
def tiny_fp16_folder(tiny_engine, tmp_path_factory) -> Path:
    """The tiny engine's folder with its gated unet.fp16.onnx (export.fp16); copy it before adding to it."""
    from export.fp16 import main as fp16_main

    folder = copied_engine(tiny_engine, tmp_path_factory.mktemp("tiny_fp16")).parent
    assert fp16_main(["--engines", str(folder)]) == 0
    return folder


@pytest.fixture(scope="session")
def demo_engine(tmp_path_factory) -> Path:
    """The shipped demo model, exported (parity gate) into a temporary folder."""
    return export_engine(DEMO_MODEL, tmp_path_factory.mktemp("demo_engine"))


# Conditional models (tests/export/test_conditional.py, tests/runtime/test_batching.py) --------------------
CLASS_NULL = 4  # the class-conditional model's declared null class (labels 0..3)
SEQUENCE_LENGTH = 6  # the cross-attention model's condition, in tokens
# diffusers' StableDiffusionPipeline rewrites a scheduler config to steps_offset 1 and clip_sample off; the
# cross-attention model ships that config so that the pipeline and the runtime sample with the same one.
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_schedule": "linear", "clip_sample": False, "steps_offset": 1}


def write_declaration(folder: Path, declaration: dict, arrays: dict | None = None) -> None:
    import json

    import numpy as np

    for name, value in (arrays or {}).items():
        np.save(folder / name, value)
    (folder / "conditioning.json").write_text(json.dumps(declaration))


@pytest.fixture(scope="session")
def class_model(tmp_path_factory) -> Path:
    from export.reference import TINY_CLASS_CONFIG

    folder = save_model(tmp_path_factory.mktemp("class_model"), TINY_CLASS_CONFIG, calm=0.1)
    write_declaration(folder, {"labels": ["0", "1", "2", "3"], "unconditional": {"class_label": CLASS_NULL}})
    return folder


@pytest.fixture(scope="session")
def class_engine(class_model, tmp_path_factory) -> Path:
    return export_engine(class_model, tmp_path_factory.mktemp("class_engine"))


@pytest.fixture(scope="session")
def xattn_model(tmp_path_factory) -> Path:
    """A calmed random UNet2DConditionModel with a 3-label embedding table and a null embedding."""
    import numpy as np

    from export.reference import TINY_CROSS_ATTENTION_CONFIG

    folder = save_model(tmp_path_factory.mktemp("xattn_model"), TINY_CROSS_ATTENTION_CONFIG, SD_SCHEDULER,
                        unet_class="UNet2DConditionModel", calm=0.1)
    rng = np.random.default_rng(0)
    dim = TINY_CROSS_ATTENTION_CONFIG["cross_attention_dim"]
    write_declaration(folder, {"labels": ["a", "b", "c"], "label_embeddings": "labels.npy",
                               "unconditional": {"embedding": "null.npy"}},
                      {"labels.npy": rng.standard_normal((3, SEQUENCE_LENGTH, dim)).astype(np.float32),
                       "null.npy": np.zeros((SEQUENCE_LENGTH, dim), np.float32)})
    return folder


@pytest.fixture(scope="session")
def xattn_engine(xattn_model, tmp_path_factory) -> Path:
    return export_engine(xattn_model, tmp_path_factory.mktemp("xattn_engine"))


@pytest.fixture(scope="session")
def ldm_engine(tmp_path_factory) -> Path:
    """A tiny latent-diffusion pipeline folder (UNet on 8x8x3 latents + VQ-VAE decoder to 16x16x3), exported:
    unet.onnx and decoder.onnx in one manifest (tests/export/test_family.py)."""
    from export.reference import save_ldm

    folder = save_ldm(tmp_path_factory.mktemp("ldm_model"))
    return export_engine(folder, tmp_path_factory.mktemp("ldm_engine"))


# Feature reuse (tests/export/test_deepcache.py, tests/runtime/test_reuse.py) ---------------------------
def export_reuse_graphs(model_dir: Path, engine: Path, *args: str) -> Path:
    """``python -m export.deepcache`` into ``engine``'s folder (a copy of the model's exported engine)."""
    from export.deepcache import main

    assert main(["--model", str(model_dir), "--engines", str(engine.parent), *args]) == 0
    return engine


def copied_engine(engine: Path, folder: Path) -> Path:
    """A copy of ``engine``'s folder (a session engine stays as other tests expect it)."""
    import shutil

    shutil.copytree(engine.parent, folder, dirs_exist_ok=True)
    return folder / engine.name


@pytest.fixture(scope="session")
def class_cache_engine(class_model, class_engine, tmp_path_factory) -> Path:
    """The class-conditional tiny engine with its feature-reuse graphs (branch 0)."""
    return export_reuse_graphs(class_model, copied_engine(class_engine, tmp_path_factory.mktemp("class_cache")))


@pytest.fixture(scope="session")
def demo_cache_engine(demo_engine, tmp_path_factory) -> Path:
    """The shipped demo model's engine with its feature-reuse graphs (branch 0)."""
    return export_reuse_graphs(DEMO_MODEL, copied_engine(demo_engine, tmp_path_factory.mktemp("demo_cache")))


@pytest.fixture(scope="session")
def int8_engine(demo_cache_engine, tmp_path_factory):
    """The digits engine with its feature-reuse graphs, quantized (UNet and graphs) by one export.int8 (the INT8
    arithmetic simulated in FP32 on a CPU without VNNI/AMX: tests/export/test_int8.py)."""
    import shutil

    from export.int8 import main

    folder = tmp_path_factory.mktemp("int8") / "engines"
    shutil.copytree(demo_cache_engine.parent, folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDPM_DEPLOY_INT8_SIMULATE", "1")
        assert main(["--engines", str(folder)]) == 0
    return folder / "unet.int8.onnx"


@pytest.fixture()
def simulated_int8(monkeypatch):
    """INT8 engines run here whatever the CPU: on one without VNNI/AMX their arithmetic is computed in FP32."""
    monkeypatch.setenv("DDPM_DEPLOY_INT8_SIMULATE", "1")


def import_blocker(*packages: str) -> str:
    """Python source that makes ``import`` of ``packages`` (and their submodules) fail in the process that runs it:
    a runtime without torch, or without ONNX Runtime."""
    return ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {packages!r}:\n"
            "            raise ImportError(f'{name} is blocked in this test')\n"
            "sys.meta_path.insert(0, Block())\n")
