"""Conditional UNets: class-conditional UNet2DModel and cross-attention UNet2DConditionModel, exported,
declared in the manifest, and sampled with classifier-free guidance equal to diffusers.

References: for UNet2DConditionModel, diffusers' own ``StableDiffusionPipeline`` (prompt_embeds /
negative_prompt_embeds given, no text encoder or VAE, ``output_type="latent"``); for class-conditional
UNet2DModel, which no diffusers pipeline guides, diffusers' UNet and scheduler in the loop its
pipelines run (``torch.cat([latents] * 2)``, ``chunk(2)``, ``uncond + scale * (cond - uncond)``).
Both models are random and *calmed* (export.reference.save_model), so deterministic samplers are not
chaotic on them.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from runtime import Pipeline
from runtime.manifest import read_manifest, sha256_file
from runtime.pipeline import to_uint8
from tests.conftest import CLASS_NULL, ROOT, SEQUENCE_LENGTH, export_engine, write_declaration

# Float32 kernels of ONNX Runtime and PyTorch differ in the last bits of every UNet call (the parity gate
# measures ~1e-6); over 20-30 steps of these calmed models that grows to ~1e-4 (measured: 1.2e-4 on samples
# clipped to [-1, 1], 1.4e-4 on unclipped latents of magnitude ~300). MAX_ERROR (of max(1, the sample's
# range)) is a quarter of one uint8 step on [-1, 1]; a wrong row order, null row or scale moves samples by ~1e-1.
MAX_ERROR = 2e-3
# As the unconditional tests: uint8 images within 1, on at most 0.5 % of values.
MAX_PIXEL_DIFF, MAX_DIFF_FRACTION = 1, 0.005
SCHEDULERS = {"ddim": "DDIMScheduler", "dpmpp-2m": "DPMSolverMultistepScheduler", "ddpm": "DDPMScheduler"}
STEPS = {"ddim": 20, "dpmpp-2m": 20, "ddpm": 30}


def diffusers_scheduler(model, name):
    import diffusers

    config = diffusers.DDPMScheduler.from_pretrained(model).config
    return getattr(diffusers, SCHEDULERS[name]).from_config(config)


def assert_close(ours, ref, what):
    err = float(np.abs(ours.astype(np.float64) - ref).max())
    scale = float(np.abs(ref).max())
    diff = np.abs(to_uint8(ours).astype(np.int16) - to_uint8(ref.astype(np.float32)).astype(np.int16))
    print(f"\n{what}: max |ours - diffusers| {err:.3g} of a range {scale:.3g} ({err / scale:.2g}); "
          f"uint8: max {diff.max()}, {(diff > 0).mean():.2%} of values differ")
    assert err <= MAX_ERROR * max(1.0, scale)
    assert diff.max() <= MAX_PIXEL_DIFF and (diff > 0).mean() <= MAX_DIFF_FRACTION


# export and manifest ------------------------------------------------------------------------------------
def test_class_conditional_export_declares_its_labels(class_engine):
    manifest = read_manifest(class_engine.parent / "manifest.json")
    assert [t.name for t in manifest.io.inputs] == ["sample", "timestep", "class_labels"]
    assert manifest.io.num_classes == 5
    assert manifest.conditioning == {"labels": ["0", "1", "2", "3"], "unconditional": {"class_label": CLASS_NULL}}
    parity = manifest.artifact("unet.onnx").build["parity"]["results"]
    assert [r["batch"] for r in parity] == [1, 3] and max(r["max_abs_error"] for r in parity) < 1e-4


def test_cross_attention_export_copies_its_embeddings(xattn_model, xattn_engine):
    manifest = read_manifest(xattn_engine.parent / "manifest.json")
    ehs = manifest.io.input("encoder_hidden_states")
    assert ehs.shape == ("batch", SEQUENCE_LENGTH, 16) and manifest.io.sequence.fixed
    section = manifest.conditioning
    assert section["label_embeddings"]["file"] == "labels.npy" and section["label_embeddings"]["shape"] == [3, SEQUENCE_LENGTH, 16]
    for entry in (section["label_embeddings"], section["unconditional"]["embedding"]):
        assert entry["sha256"] == sha256_file(xattn_engine.parent / entry["file"]) == sha256_file(xattn_model / entry["file"])


def test_dynamic_sequence_length(xattn_model, tmp_path):
    engine = export_engine(xattn_model, tmp_path, "--sequence-length", "3:6:9")
    manifest = read_manifest(engine.parent / "manifest.json")
    assert manifest.io.input("encoder_hidden_states").shape == ("batch", "sequence", 16)
    parity = manifest.artifact("unet.onnx").build["parity"]["results"]
    assert [r["batch"] for r in parity] == [1, 3]  # at 3 and 9 tokens
    unet = __import__("diffusers").UNet2DConditionModel.from_pretrained(xattn_model).eval()
    rng = np.random.default_rng(2)
    with Pipeline.load(engine) as pipe:
        for tokens in (3, 7, 9):
            x = rng.standard_normal((2, 4, 8, 8), dtype=np.float32)
            ehs = rng.standard_normal((2, tokens, 16), dtype=np.float32)
            t = np.array([10, 900], np.float32)
            ours = pipe.denoiser(x, t, {"encoder_hidden_states": ehs})
            with torch.no_grad():
                ref = unet(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ehs)).sample.numpy()
            assert np.abs(ours - ref).max() < 1e-4, tokens
        with pytest.raises(Exception, match="3..9"):
            pipe.sample(embeddings=np.zeros((10, 16)), steps=1)


def _export_cli(*args):
    return subprocess.run([sys.executable, "-m", "export.onnx", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("change,message", [
    ({"class_embed_type": "identity"}, "class_embed_type='identity' is not supported"),
    ({"class_embed_type": "timestep", "num_class_embeds": None}, "class_embed_type='timestep' is not supported"),
    ({"addition_embed_type": "text_time", "addition_time_embed_dim": 4, "projection_class_embeddings_input_dim": 20},
     "addition_embed_type='text_time' is not supported"),
    ({"time_cond_proj_dim": 8}, "time_cond_proj_dim=8 is not supported"),
    ({"cross_attention_dim": [16, 32]}, "blocks of different widths"),
], ids=["identity-class", "timestep-class", "sdxl-added-conditions", "lcm-guidance-embedding", "per-block-dims"])
def test_unservable_configs_are_refused_before_any_work(xattn_model, tmp_path, change, message):
    model = tmp_path / "model"
    model.mkdir()
    config = json.loads((xattn_model / "config.json").read_text())
    if "class_embed_type" in change and change.get("num_class_embeds", 1) is not None:  # as a UNet2DModel's config
        from export.family import installed_options

        config = {**{k: v for k, v in config.items() if k in installed_options()}, "_class_name": "UNet2DModel"}
    (model / "config.json").write_text(json.dumps({**config, **change}))
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    r = _export_cli("--model", str(model), "--out", str(tmp_path / "out"), "--sequence-length", "4")
    assert r.returncode == 2 and message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("declaration,arrays,args,message", [
    ({}, None, (), "pass --sequence-length"),
    ({"unconditional": {"embedding": "null.npy"}}, {"null.npy": np.zeros((SEQUENCE_LENGTH, 5), np.float32)}, (),
     "null embedding of shape (6, 5)"),
    ({"label_embeddings": "missing.npy"}, None, ("--sequence-length", "6"), "cannot read label_embeddings missing.npy"),
    ({"label_embeddings": "t.npy"}, {"t.npy": np.full((2, 6, 16), np.nan, np.float32)}, (), "finite float array"),
    ({"labels": ["a"], "label_embeddings": "t.npy"}, {"t.npy": np.zeros((2, 6, 16), np.float32)}, (), "1 labels but"),
    ({"unconditional": {"class_label": 0}}, None, ("--sequence-length", "6"), "null class for an engine without"),
    ({"negative": "x.npy"}, None, ("--sequence-length", "6"), "unknown field(s) negative"),
    ({"label_embeddings": "../t.npy"}, None, ("--sequence-length", "6"), "must name a .npy file beside"),
], ids=["no-length", "null-wrong-dim", "missing-file", "nan-table", "label-count", "null-class-no-classes",
        "unknown-field", "path-outside"])
def test_bad_declarations_are_refused_before_any_work(xattn_model, tmp_path, declaration, arrays, args, message):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"):
        (model / name).write_bytes((xattn_model / name).read_bytes())
    if declaration:
        write_declaration(model, declaration, arrays)
    r = _export_cli("--model", str(model), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_sequence_length_is_refused_for_an_unconditional_model(tiny_model, tmp_path):
    r = _export_cli("--model", str(tiny_model), "--out", str(tmp_path / "out"), "--sequence-length", "4")
    assert r.returncode == 2 and "applies to cross-attention UNets only" in r.stderr


# equal to diffusers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xattn_pipe(xattn_engine):
    with Pipeline.load(xattn_engine) as pipe:
        yield pipe


@pytest.mark.parametrize("scheduler, rescale", [*((s, 0.0) for s in SCHEDULERS), ("ddim", 0.7), ("dpmpp-2m", 1.0)])
def test_guided_cross_attention_equals_stable_diffusion_pipeline(xattn_model, xattn_pipe, scheduler, rescale):
    """Guidance, and guidance rescale (``guidance_rescale=``: diffusers' rescale_noise_cfg after the combination)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((2, SEQUENCE_LENGTH, 16)).astype(np.float32)
    negative = rng.standard_normal((2, SEQUENCE_LENGTH, 16)).astype(np.float32)
    steps, scale, seed = STEPS[scheduler], 3.0, 3
    ours = xattn_pipe.denoise(count=2, steps=steps, scheduler=scheduler, seed=seed, noise="torch", embeddings=embeddings,
                              negative_embeddings=negative, guidance_scale=scale, guidance_rescale=rescale)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=UNet2DConditionModel.from_pretrained(xattn_model),
                                   scheduler=diffusers_scheduler(xattn_model, scheduler), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(prompt_embeds=torch.from_numpy(embeddings), negative_prompt_embeds=torch.from_numpy(negative),
               guidance_scale=scale, guidance_rescale=rescale, num_inference_steps=steps, height=64, width=64,  # 8 latent pixels x vae factor 8
               generator=torch.manual_seed(seed), output_type="latent").images.numpy()
    assert_close(ours, ref, f"StableDiffusionPipeline CFG {scale}, rescale {rescale}, {scheduler} {steps} steps")
    if rescale:  # on this calmed model the rescale moves latents of range ~300 by ~0.4: below assert_close's bound,
        # so the rescale is held to ours' measured distance from diffusers (~1e-4) instead
        plain = xattn_pipe.denoise(count=2, steps=steps, scheduler=scheduler, seed=seed, noise="torch",
                                   embeddings=embeddings, negative_embeddings=negative, guidance_scale=scale)
        moved, err = float(np.abs(ours - plain).max()), float(np.abs(ours - ref).max())
        print(f"rescale {rescale} moves the sample by {moved:.3g}, {moved / err:.0f}x ours' distance from diffusers")
        assert moved > 100 * err


def test_label_table_and_null_embedding_are_what_the_pipeline_gets(xattn_model, xattn_pipe):
    """--class-labels on a cross-attention model = the declared table's rows as prompt_embeds, and the
    null embedding as negative_prompt_embeds."""
    table, null = np.load(xattn_model / "labels.npy"), np.load(xattn_model / "null.npy")
    by_label = xattn_pipe.denoise(count=2, class_labels=[2, 0], guidance_scale=2.5, steps=5, scheduler="ddim", seed=4)
    given = xattn_pipe.denoise(count=2, embeddings=table[[2, 0]], negative_embeddings=null, guidance_scale=2.5, steps=5,
                               scheduler="ddim", seed=4)
    np.testing.assert_array_equal(by_label, given)


def _class_cfg_loop(model, scheduler, labels, scale, steps, seed):
    """diffusers' UNet and scheduler in the loop of its guided pipelines, for a class-conditional UNet2DModel."""
    from diffusers import UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    unet = UNet2DModel.from_pretrained(model).eval()
    sched = diffusers_scheduler(model, scheduler)
    sched.set_timesteps(steps)
    generator = torch.manual_seed(seed)
    n = len(labels)
    latents = randn_tensor((n, 3, 8, 8), generator=generator) * sched.init_noise_sigma
    class_labels = torch.tensor([CLASS_NULL] * n + list(labels))
    with torch.no_grad():
        for t in sched.timesteps:
            out = unet(torch.cat([latents] * 2), t, class_labels=class_labels).sample
            uncond, cond = out.chunk(2)
            out = uncond + scale * (cond - uncond)
            latents = sched.step(out, t, latents, generator=generator).prev_sample
    return latents.numpy()


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_guided_class_labels_equal_diffusers_loop(class_model, class_engine, scheduler):
    steps, scale, seed, labels = STEPS[scheduler], 4.0, 5, (1, 3)
    with Pipeline.load(class_engine) as pipe:
        ours = pipe.denoise(count=2, class_labels=labels, guidance_scale=scale, steps=steps, scheduler=scheduler, seed=seed,
                            noise="torch")
    ref = _class_cfg_loop(class_model, scheduler, labels, scale, steps, seed)
    assert_close(ours, ref, f"class-conditional CFG {scale}, {scheduler} {steps} steps")


def test_conditional_fp16_gate(xattn_engine, tmp_path):
    """The FP16 gate feeds conditions from the declared shapes (different per timestep) and passes."""
    out = tmp_path / "engines"
    out.mkdir()
    for path in xattn_engine.parent.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    r = subprocess.run([sys.executable, "-m", "export.fp16", "--engines", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    manifest = read_manifest(out / "manifest.json")
    assert manifest.artifact("unet.fp16.onnx").precision == "fp16-mixed" and manifest.conditioning
    with Pipeline.load(out / "unet.fp16.onnx") as pipe:
        images = pipe.sample(count=2, class_labels=[0, 1], guidance_scale=2.0, steps=4, scheduler="ddim")
    assert images.shape == (2, 8, 8, 4)
