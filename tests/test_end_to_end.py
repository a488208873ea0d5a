"""tiny random UNet2DModel → save_pretrained → export CLI → runtime.sample CLI == diffusers' DDPMPipeline."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from tests.conftest import DEMO_MODEL, ROOT

# ONNX Runtime and PyTorch kernels differ in the last bits and torch's vectorised randn by a few
# ulps, so a pixel may round the other way: at most 1 on uint8, on at most 0.5 % of values.
MAX_PIXEL_DIFF = 1
MAX_DIFF_FRACTION = 0.005


def diffusers_images(model_dir, batch, steps, generator, pipeline=DDPMPipeline, scheduler_class=DDPMScheduler, **kwargs):
    """A diffusers pipeline's images, the scheduler converted from the model's config as users do."""
    scheduler = scheduler_class.from_config(DDPMScheduler.from_pretrained(model_dir).config)
    pipe = pipeline(unet=UNet2DModel.from_pretrained(model_dir), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=batch, generator=generator, num_inference_steps=steps, output_type="np", **kwargs).images
    return (out * 255).round().astype(np.uint8)  # the pipelines' numpy_to_pil conversion


def sample_cli(engine, out, *args):
    r = subprocess.run(
        [sys.executable, "-m", "runtime.sample", "--engine", str(engine), "--out", str(out), "--quiet", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return r


def read_pngs(out, n):
    """uint8 [n, H, W, C]; a single-channel model's grayscale PNGs come back with C = 1."""
    images = np.stack([np.array(Image.open(out / f"ddpm_{i:04d}.png")) for i in range(n)])
    return images[..., None] if images.ndim == 3 else images


def assert_images_close(ours, ref):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= MAX_PIXEL_DIFF, f"max pixel difference {diff.max()}"
    assert (diff > 0).mean() <= MAX_DIFF_FRACTION, f"{(diff > 0).mean():.4%} of values differ"
    return diff


@pytest.mark.parametrize("steps", [25, 1000])
def test_sample_cli_equals_ddpm_pipeline(tiny_model, tiny_engine, tmp_path, steps):
    r = sample_cli(tiny_engine, tmp_path, "--batch", "2", "--steps", str(steps), "--seed", "7", "--noise", "torch")
    assert "wrote 2 image(s)" in r.stdout and "s/step" in r.stdout
    ours = read_pngs(tmp_path, 2)
    ref = diffusers_images(tiny_model, 2, steps, torch.manual_seed(7))
    diff = assert_images_close(ours, ref)
    print(f"\n{steps} steps: max diff {diff.max()}, {(diff > 0).mean():.4%} of values differ")


def test_per_image_seeds_equal_a_generator_list(tiny_model, tiny_engine, tmp_path):
    sample_cli(tiny_engine, tmp_path, "--batch", "3", "--steps", "10", "--seed", "40", "--per-image-seeds", "--noise", "torch")
    ref = diffusers_images(tiny_model, 3, 10, [torch.Generator().manual_seed(s) for s in (40, 41, 42)])
    assert_images_close(read_pngs(tmp_path, 3), ref)


def test_png_metadata(tiny_engine, tmp_path):
    sample_cli(tiny_engine, tmp_path, "--steps", "3", "--seed", "5")
    info = Image.open(tmp_path / "ddpm_0000.png").text
    from runtime.manifest import sha256_file

    assert info["seed"] == "5" and info["steps"] == "3" and info["noise"] == "numpy"
    assert info["engine_sha256"] == sha256_file(tiny_engine)
    assert '"_class_name": "DDPMScheduler"' in info["scheduler"]


# DDIM (eta 0) and DPM-Solver++ are deterministic maps: on a random UNet they are chaotic (a 1e-7
# difference between ONNX Runtime's and PyTorch's kernels grows ~1000-fold over 20 steps), so they are
# compared on the trained demo model (models/digits16), whose sensitivity tests/test_demo_model.py
# measures: the same bound as DDPM holds at diffusers' default step counts.


def demo_pipeline_images(batch, steps, seed, scheduler_class, pipeline_class=DDPMPipeline, **kwargs):
    """The demo model through a diffusers pipeline, its scheduler converted from the model's config."""
    pipe = pipeline_class.from_pretrained(DEMO_MODEL)
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=batch, generator=torch.manual_seed(seed), num_inference_steps=steps, output_type="np", **kwargs).images
    return (out * 255).round().astype(np.uint8)


def test_ddim_50_equals_ddim_pipeline(demo_engine, tmp_path):
    from diffusers import DDIMPipeline, DDIMScheduler

    sample_cli(demo_engine, tmp_path, "--scheduler", "ddim", "--eta", "0", "--batch", "4", "--steps", "50", "--seed", "3",
               "--noise", "torch")
    ref = demo_pipeline_images(4, 50, 3, DDIMScheduler, DDIMPipeline, eta=0.0)
    assert_images_close(read_pngs(tmp_path, 4), ref)


def test_ddim_with_eta_equals_ddim_pipeline(demo_engine, tmp_path):
    from diffusers import DDIMPipeline, DDIMScheduler

    sample_cli(demo_engine, tmp_path, "--scheduler", "ddim", "--eta", "0.5", "--batch", "2", "--steps", "20", "--seed", "4",
               "--noise", "torch")
    ref = demo_pipeline_images(2, 20, 4, DDIMScheduler, DDIMPipeline, eta=0.5)
    assert_images_close(read_pngs(tmp_path, 2), ref)


def test_dpmpp_2m_25_equals_diffusers(demo_engine, tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    sample_cli(demo_engine, tmp_path, "--scheduler", "dpmpp-2m", "--batch", "4", "--steps", "25", "--seed", "5", "--noise", "torch")
    ref = demo_pipeline_images(4, 25, 5, DPMSolverMultistepScheduler)
    assert_images_close(read_pngs(tmp_path, 4), ref)


@pytest.mark.parametrize("name,scheduler,kwargs,steps", [
    ("unipc-2m", "UniPCMultistepScheduler", {}, 10),
    ("unipc-3m", "UniPCMultistepScheduler", {"solver_order": 3}, 8),
    ("unipc-3m", "UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"}, 20),
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3}, 8),
    # under 15 steps: from 15 on, diffusers' last step (Karras ending at sigma_min: zero length) is 0/0 (NaN)
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True, "final_sigmas_type": "sigma_min"}, 12),
])
def test_multistep_solvers_equal_diffusers(demo_engine, name, scheduler, kwargs, steps):
    """UniPC and DPM-Solver++ 3M (the few-step samplers) in DDPMPipeline's loop (UniPC's step takes no generator,
    so the loop is written out), the scheduler converted from the model's config with the options given,
    against the runtime given the same converted config."""
    import diffusers
    from diffusers.utils.torch_utils import randn_tensor

    from runtime import Pipeline

    pipe = DDPMPipeline.from_pretrained(DEMO_MODEL)
    sched = getattr(diffusers, scheduler).from_config(pipe.scheduler.config, **kwargs)
    sched.set_timesteps(steps)
    unet = pipe.unet
    x = randn_tensor((4, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size),
                     generator=torch.manual_seed(8))
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
    theirs = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    config = {**dict(sched.config), "_class_name": scheduler}
    with Pipeline.load(demo_engine, scheduler_config=config, cache_dir=None) as ours:
        images = ours.sample(count=4, steps=steps, seed=8, noise="torch", scheduler=name)
    diff = assert_images_close(images, (theirs * 255).round().astype(np.uint8))
    print(f"\n{name} {steps} steps {kwargs}: max diff {diff.max()}, {(diff > 0).mean():.4%} of values differ")


@pytest.mark.parametrize("skip_prk", [False, True])
def test_pndm_equals_pndm_pipeline(demo_engine, skip_prk):
    """PNDMPipeline (Runge-Kutta warm-up, or PLMS alone) with the scheduler converted from the model's config."""
    from diffusers import PNDMPipeline, PNDMScheduler

    from runtime import Pipeline

    pipe = PNDMPipeline.from_pretrained(DEMO_MODEL)
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config, skip_prk_steps=skip_prk)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(batch_size=4, generator=torch.manual_seed(6), num_inference_steps=50, output_type="np").images
    config = {**dict(pipe.scheduler.config), "_class_name": "PNDMScheduler"}
    with Pipeline.load(demo_engine, scheduler_config=config, cache_dir=None) as ours:
        images = ours.sample(count=4, steps=50, seed=6, noise="torch")
    diff = assert_images_close(images, (theirs * 255).round().astype(np.uint8))
    print(f"\nPNDM 50 steps, skip_prk_steps {skip_prk}: max diff {diff.max()}, {(diff > 0).mean():.4%} of values differ")
