"""export.deepcache: the split computation is UNet2DModel.forward, the graphs reproduce PyTorch's split, the manifest
describes them, and what cannot be split is refused in one line; the runtime's feature reuse equals the same
DeepCache loop written in PyTorch with diffusers' scheduler."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from export.deepcache import check_branch, main, split_module
from export.reference import TINY_CLASS_CONFIG, TINY_CONFIG, TINY_CROSS_ATTENTION_CONFIG, TINY_NCSNPP_CONFIG, reference_blocks_tiny
from runtime.errors import DeployError
from runtime.reuse import FULL_NAME, SHALLOW_NAME
from runtime.manifest import read_manifest
from tests.conftest import DEMO_MODEL, ROOT

DIGITS_COND_CONFIG = {k: v for k, v in json.loads((ROOT / "models/digits16-cond/unet/config.json").read_text()).items()
                      if not k.startswith("_")}

# ONNX Runtime against PyTorch over a whole trajectory: per-call differences of ~1e-6 (the parity gate's) stay
# that small along the trained model's deterministic trajectory; a wrong feature or schedule gives order 0.1
# (tests/runtime/test_reuse.py: shallow steps move the image by 0.2-0.8).
TRAJECTORY_ATOL = 1e-3


def _configs():
    yield "tiny", TINY_CONFIG, 0
    yield "class", TINY_CLASS_CONFIG, 0
    yield "cross-attention", TINY_CROSS_ATTENTION_CONFIG, 0
    yield "digits16-cond", DIGITS_COND_CONFIG, 0
    yield "digits16-cond-b1", DIGITS_COND_CONFIG, 1
    for lpb in (1, 2):
        for branch in range(5):
            yield f"reference-lpb{lpb}-b{branch}", reference_blocks_tiny(lpb), branch


@pytest.mark.parametrize("name,config,branch", list(_configs()), ids=[c[0] for c in _configs()])
def test_split_is_the_unet_forward(name, config, branch):
    """The full graph's prediction, and the shallow graph's fed the feature of the same input, are the UNet's own
    output bit for bit (the same operations on the same values); a shallow step on another input differs. UNet2DModel,
    and UNet2DConditionModel with its cross-attention condition (the second trained digits model's config)."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    torch.manual_seed(0)
    cls = UNet2DConditionModel if "cross_attention_dim" in config else UNet2DModel
    unet = cls(**config).eval()
    check_branch({**unet.config, "_class_name": cls.__name__}, branch)
    size = unet.config.sample_size
    x = torch.randn(2, unet.config.in_channels, size, size)
    t = torch.tensor([10, 900])
    labels = {"class_labels": torch.tensor([1, 3])} if unet.config.get("num_class_embeds") else {}
    if cls is UNet2DConditionModel:
        labels["encoder_hidden_states"] = torch.randn(2, 4, unet.config.cross_attention_dim)
    with torch.no_grad():
        ref = unet(x, t, **labels).sample
        noise, feature = split_module(unet, branch, "full")(x, t, **labels)
        same = split_module(unet, branch, "shallow")(x, t, deep_feature=feature, **labels)
        other = split_module(unet, branch, "shallow")(x, t, deep_feature=feature * 0.5, **labels)
    assert torch.equal(noise, ref) and torch.equal(same, ref)
    assert not torch.allclose(other, ref, atol=1e-3)


def test_refusals():
    with pytest.raises(DeployError, match="UNet2DModel or a UNet2DConditionModel; this model is a UVit2DModel"):
        check_branch({**TINY_CONFIG, "_class_name": "UVit2DModel"}, 0)
    with pytest.raises(DeployError, match="with addition_embed_type \\(added conditioning"):
        check_branch({**TINY_CROSS_ATTENTION_CONFIG, "_class_name": "UNet2DConditionModel", "addition_embed_type": "text"}, 0)
    with pytest.raises(DeployError, match="skip blocks"):
        check_branch({**TINY_NCSNPP_CONFIG, "_class_name": "UNet2DModel"}, 0)
    with pytest.raises(DeployError, match=r"--branch must be in 0\.\.0"):
        check_branch({**TINY_CONFIG, "_class_name": "UNet2DModel"}, 1)


def test_graphs_and_manifest(class_cache_engine):
    """Both graphs are derived from unet.onnx, record their role, branch, feature and gate figures."""
    manifest = read_manifest(class_cache_engine.parent / "manifest.json")
    fp32 = manifest.artifact("unet.onnx")
    full, shallow = manifest.artifact(FULL_NAME), manifest.artifact(SHALLOW_NAME)
    for entry, role in ((full, "full"), (shallow, "shallow")):
        assert entry.source == "unet.onnx" and entry.source_sha256 == fp32.sha256 and entry.kind == "onnx"
        assert entry.build["feature_cache"] == {"role": role, "branch": 0, "feature_shape": [32, 8, 8], "engine": "unet.onnx"}
        assert entry.build["split_error"] == 0.0
    assert {r["batch"] for r in full.build["parity"]["full"]} == {1, 3}
    assert max(r["max_abs_error"] for r in full.build["parity"]["feature"]) < 1e-4
    assert max(r["max_abs_error"] for r in shallow.build["parity"]["shallow"]) < 1e-4
    assert shallow.bytes < full.bytes


def test_refuses_another_model_and_a_missing_engine(class_cache_engine, tiny_model, tmp_path, capsys):
    from runtime.cli import run

    folder = tmp_path / "copy"
    shutil.copytree(class_cache_engine.parent, folder)
    before = (folder / "manifest.json").read_text()
    assert run(main, "export.deepcache", ["--model", str(tiny_model), "--engines", str(folder)]) == 2
    assert "is not the model" in capsys.readouterr().err
    assert (folder / "manifest.json").read_text() == before
    assert run(main, "export.deepcache", ["--model", str(tiny_model), "--engines", str(tmp_path / "none")]) == 2
    assert "export.onnx" in capsys.readouterr().err


def test_a_changed_unet_onnx_drops_the_graphs(class_cache_engine, tmp_path):
    """The graphs derive from unet.onnx: when its entry changes (a re-export), the manifest no longer lists them."""
    from runtime.manifest import update_artifact

    folder = tmp_path / "copy"
    shutil.copytree(class_cache_engine.parent, folder)
    manifest = read_manifest(folder / "manifest.json")
    update_artifact(folder, manifest.base(), "unet.onnx", replace(manifest.artifact("unet.onnx"), sha256="0" * 64))
    assert set(json.loads((folder / "manifest.json").read_text())["artifacts"]) == {"unet.onnx"}


def test_feature_reuse_equals_a_pytorch_deepcache_loop(demo_cache_engine):
    """DPM-Solver++ 2M, 20 steps, full UNet every 3rd step (0, 3, ..., 18) and the shallow graph between, on the
    trained digits model: the runtime against the same loop in PyTorch (diffusers' scheduler, the split modules)."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    from runtime import Pipeline

    unet = UNet2DModel.from_pretrained(DEMO_MODEL / "unet").eval()
    config = json.loads((DEMO_MODEL / "scheduler" / "scheduler_config.json").read_text())
    sched = DPMSolverMultistepScheduler.from_config(config)
    sched.set_timesteps(20)
    full, shallow = split_module(unet, 0, "full"), split_module(unet, 0, "shallow")
    x = randn_tensor((3, 1, 16, 16), generator=torch.manual_seed(5))
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            tt = t.expand(3)
            if i % 3 == 0:
                eps, feature = full(x, tt)
            else:
                eps = shallow(x, tt, deep_feature=feature)
            x = sched.step(eps, t, x).prev_sample
    config = {**dict(sched.config), "_class_name": "DPMSolverMultistepScheduler"}
    with Pipeline.load(demo_cache_engine, scheduler_config=config, cache_dir=None) as pipe:
        ours = pipe.denoise(count=3, steps=20, seed=5, noise="torch", scheduler="dpmpp-2m", cache_interval=3)
        plain = pipe.denoise(count=3, steps=20, seed=5, noise="torch", scheduler="dpmpp-2m")
    err = float(np.abs(ours - x.numpy()).max())
    moved = float(np.abs(plain - x.numpy()).max())
    print(f"\nfeature reuse, runtime vs PyTorch: max abs {err:.2e}; vs no reuse: {moved:.2f}")
    assert err <= TRAJECTORY_ATOL
    assert moved > 100 * TRAJECTORY_ATOL  # the comparison can tell reuse from none
