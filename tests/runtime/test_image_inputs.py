"""Image inputs: image-to-image (every sampler diffusers' img2img pipelines run) and RePaint inpainting, equal to
diffusers; the same requests batched among others, bit-equal to themselves alone."""

from pathlib import Path

import numpy as np
import pytest
import torch

from runtime import Pipeline
from runtime.batching import StepBatcher
from runtime.errors import InputError
from tests.conftest import DEMO_MODEL, export_engine
from tests.test_end_to_end import assert_images_close

# RePaintPipeline's fast test (diffusers tests/pipelines/repaint/test_repaint.py): its UNet, inputs and slice
REPAINT_TEST_UNET = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=3, out_channels=3,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"))
REPAINT_TEST_SLICE = np.array([1.0000, 0.5426, 0.5497, 0.2200, 1.0000, 1.0000, 0.5623, 1.0000, 0.6274])
REPAINT_TEST_TOL = 1e-3  # the fast test's own tolerance on its slice
# ONNX Runtime vs PyTorch kernels on the same float trajectory: RePaint's known half is re-noised from the image at
# every step, so the difference does not grow; measured 3.7e-6 on the fast-test model
REPAINT_VS_DIFFUSERS_ATOL = 1e-4


@pytest.fixture(scope="module")
def repaint_model(tmp_path_factory) -> tuple[Path, Path]:
    """RePaintPipeline's fast-test UNet (torch.manual_seed(0)) with a default RePaintScheduler: (folder, engine)."""
    from export.reference import save_model

    folder = save_model(tmp_path_factory.mktemp("repaint_model"), REPAINT_TEST_UNET, scheduler={},
                        scheduler_class="RePaintScheduler")
    return folder, export_engine(folder, tmp_path_factory.mktemp("repaint_engine"))


def repaint_test_inputs():
    image = np.random.RandomState(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    return image, (image > 0).astype(np.float32)


def to_unit_hwc(x: np.ndarray) -> np.ndarray:
    return np.clip(x / np.float32(2) + np.float32(0.5), 0, 1).transpose(0, 2, 3, 1)


@pytest.mark.slow  # its own model's export: make test-full (RePaint on the demo model below runs in make test)
def test_repaint_reproduces_diffusers_fast_test(repaint_model):
    from diffusers import RePaintPipeline, RePaintScheduler, UNet2DModel

    source, engine = repaint_model
    image, mask = repaint_test_inputs()
    with Pipeline.load(engine, cache_dir=None) as pipe:
        ours = to_unit_hwc(pipe.denoise(image=image, mask_image=mask, steps=5, jump_length=2, jump_n_sample=2, seed=0,
                                        noise="torch"))
    theirs_pipe = RePaintPipeline(unet=UNet2DModel.from_pretrained(source), scheduler=RePaintScheduler.from_pretrained(source))
    theirs_pipe.set_progress_bar_config(disable=True)
    theirs = theirs_pipe(image=torch.from_numpy(image), mask_image=torch.from_numpy(mask), num_inference_steps=5,
                         eta=0.0, jump_length=2, jump_n_sample=2, generator=torch.Generator().manual_seed(0),
                         output_type="np").images
    slice_error = np.abs(ours[0, -3:, -3:, -1].flatten() - REPAINT_TEST_SLICE).max()
    print(f"\nRePaint fast test: slice error {slice_error:.2e}, max |ours - diffusers| {np.abs(ours - theirs).max():.2e}")
    assert slice_error < REPAINT_TEST_TOL
    np.testing.assert_allclose(ours, theirs, atol=REPAINT_VS_DIFFUSERS_ATOL, rtol=0)


def test_repaint_equals_repaint_pipeline_on_the_trained_model(demo_engine, digit):
    """RePaintPipeline with the demo model's UNet and its scheduler config converted (RePaintScheduler.from_config),
    uint8 against uint8: the top half of a digit given, the bottom inpainted."""
    from diffusers import DDPMScheduler, RePaintPipeline, RePaintScheduler, UNet2DModel

    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255
    scheduler = RePaintScheduler.from_config(DDPMScheduler.from_pretrained(DEMO_MODEL / "scheduler").config)
    theirs_pipe = RePaintPipeline(unet=UNet2DModel.from_pretrained(DEMO_MODEL / "unet"), scheduler=scheduler)
    theirs_pipe.set_progress_bar_config(disable=True)
    image = torch.from_numpy(2 * (digit.astype(np.float32) / 255).transpose(2, 0, 1)[None] - 1)
    theirs = theirs_pipe(image=image, mask_image=torch.from_numpy((mask >= 128).astype(np.float32)[None, None]),
                         num_inference_steps=20, jump_length=5, jump_n_sample=2, eta=0.0,
                         generator=torch.manual_seed(7), output_type="np").images
    with Pipeline.load(demo_engine, cache_dir=None) as pipe:
        ours = pipe.sample(image=digit, mask_image=mask, steps=20, jump_length=5, jump_n_sample=2, seed=7, noise="torch")
    diff = assert_images_close(ours, (theirs * 255).round().astype(np.uint8))
    print(f"\nRePaint 20 steps (jumps 5 x 2) on digits16: max diff {diff.max()}, {(diff > 0).sum()} values differ")
    np.testing.assert_array_equal(ours[0, :8], digit[:8])  # the given half comes back as given


# Image-to-image ----------------------------------------------------------------------------------------------
# diffusers has no UNet2DModel img2img pipeline: the reference is StableDiffusionImg2ImgPipeline's get_timesteps and
# prepare_latents around DDPMPipeline's loop, written out here.

def diffusers_img2img(scheduler, image: torch.Tensor, steps: int, strength: float, seed: int, **step_kwargs):
    from diffusers import UNet2DModel
    from diffusers.utils.torch_utils import randn_tensor

    unet = UNet2DModel.from_pretrained(DEMO_MODEL / "unet")
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    generator = torch.manual_seed(seed)
    noise = randn_tensor(image.shape, generator=generator)
    x = scheduler.add_noise(image, noise, timesteps[:1].repeat(image.shape[0]))
    generated = {"generator": generator} if "generator" in scheduler.step.__code__.co_varnames else {}
    with torch.no_grad():
        for t in timesteps:
            x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x, **generated,
                               **step_kwargs).prev_sample
    return (to_unit_hwc(x.numpy()) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def digit(demo_engine) -> np.ndarray:
    """A starting image: one of the demo model's own digits (uint8 [16, 16, 1])."""
    with Pipeline.load(demo_engine, cache_dir=None) as pipe:
        return pipe.sample(scheduler="ddim", steps=20, seed=11)[0]


@pytest.mark.parametrize("name,scheduler,kwargs,steps,strength", [
    ("ddpm", "DDPMScheduler", {}, 50, 0.6),
    ("ddim", "DDIMScheduler", {}, 20, 0.5),
    ("ddim", "DDIMScheduler", {"eta": 0.5}, 20, 0.75),
    ("dpmpp-2m", "DPMSolverMultistepScheduler", {}, 25, 0.7),
    ("dpmpp-3m", "DPMSolverMultistepScheduler", {"solver_order": 3}, 10, 0.8),
    ("unipc-2m", "UniPCMultistepScheduler", {}, 10, 0.5),
    ("unipc-3m", "UniPCMultistepScheduler", {"solver_order": 3}, 12, 0.75),
])
def test_img2img_equals_the_diffusers_loop(demo_engine, digit, name, scheduler, kwargs, steps, strength):
    import diffusers

    kwargs = dict(kwargs)
    eta = kwargs.pop("eta", 0.0)
    raw = diffusers.DDPMScheduler.from_pretrained(DEMO_MODEL / "scheduler").config
    sched = getattr(diffusers, scheduler).from_config(raw, **kwargs)
    image = torch.from_numpy(2 * (digit.astype(np.float32) / 255)[None].transpose(0, 3, 1, 2) - 1).repeat(3, 1, 1, 1)
    theirs = diffusers_img2img(sched, image, steps, strength, seed=5, **({"eta": eta} if eta else {}))
    config = {**dict(sched.config), "_class_name": scheduler}
    with Pipeline.load(demo_engine, scheduler_config=config, cache_dir=None) as pipe:
        ours = pipe.sample(count=3, image=digit, strength=strength, steps=steps, scheduler=name, eta=eta, seed=5,
                           noise="torch")
    diff = assert_images_close(ours, theirs)
    print(f"\nimg2img {name} {steps} steps strength {strength} {kwargs}: max diff {diff.max()}, "
          f"{(diff > 0).mean():.4%} of values differ")


def test_img2img_runs_the_last_steps_and_reports_them(demo_engine, digit):
    seen = []
    with Pipeline.load(demo_engine, cache_dir=None) as pipe:
        trajectory = pipe.run(image=digit, strength=0.3, steps=20, scheduler="ddim",
                              progress=lambda done, total: seen.append((done, total)))
        assert trajectory.begin == 14 and seen == [(i, 6) for i in range(1, 7)]
        with pytest.raises(InputError, match=r"strength 0.01 with 20 steps runs no step.*at least 0.05"):
            pipe.run(image=digit, strength=0.01, steps=20, scheduler="ddim")
        with pytest.raises(InputError, match="image-to-image runs with ddpm, ddim, dpmpp-2m"):
            pipe.run(image=digit, steps=20, scheduler="pndm")
        with pytest.raises(InputError, match=r"image is 8x8 with 1 channel; this model takes 16x16 with 1 channel"):
            pipe.run(image=digit[:8, :8], steps=20, scheduler="ddim")
        with pytest.raises(InputError, match="repaint sampler inpaints"):
            pipe.run(image=digit, steps=20, scheduler="repaint")


def test_strength_one_is_sampling_from_the_noised_image(demo_engine, digit):
    """At strength 1 the loop runs every step from the image noised to the first timestep: for DDPM's first
    timestep (999) that is nearly pure noise, so the image barely matters; it is not refused."""
    with Pipeline.load(demo_engine, cache_dir=None) as pipe:
        assert pipe.run(image=digit, strength=1.0, steps=10, scheduler="ddim").begin == 0


# Batching: image requests share calls with the others, each bit-equal to itself alone -------------------------
def test_image_requests_batched_equal_themselves_alone(demo_engine, digit):
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255  # the top half given
    requests = [
        dict(count=2, steps=20, scheduler="ddim", seed=1),
        dict(count=1, image=digit, strength=0.6, steps=20, scheduler="ddim", seed=2),
        dict(count=2, image=digit, mask_image=mask, steps=10, jump_length=3, jump_n_sample=2, seed=3),
        dict(count=1, image=digit, strength=0.5, steps=12, scheduler="dpmpp-2m", seed=4),
        dict(count=2, image=np.stack([digit, 255 - digit]), mask_image=mask, steps=8, jump_length=2, jump_n_sample=3,
             seed=5, per_image_seeds=True),
    ]
    with Pipeline.load(demo_engine, cache_dir=None) as pipe:
        alone = [pipe.sample(**r) for r in requests]
        with StepBatcher(pipe, max_batch=8) as batcher:
            futures = [batcher.submit(**r) for r in requests]
            batched = [f.result(timeout=300) for f in futures]
            assert batcher.stats.mean_batch > 1  # they did share calls
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)


# Image-conditioned UNets: LDMSuperResolutionPipeline ----------------------------------------------------------
# Its fast test (diffusers tests/pipelines/latent_diffusion/test_latent_diffusion_superresolution.py): the RePaint
# test's UNet with in_channels 6, a VQModel, DDIMScheduler(), 2 steps, a 32x32 image of uniform floats → 64x64
SUPERRES_TEST_UNET = {**REPAINT_TEST_UNET, "in_channels": 6}
SUPERRES_TEST_VQ = dict(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=3,
                        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"])
SUPERRES_TEST_SLICE = np.array([0.8678, 0.8245, 0.6381, 0.6830, 0.4385, 0.5599, 0.4641, 0.6201, 0.5150])
SUPERRES_TEST_TOL = 1e-2  # the fast test's own
# ONNX Runtime vs PyTorch kernels through two DDIM steps and the VQ decoder: measured 3.3e-6
SUPERRES_VS_DIFFUSERS_ATOL = 1e-4


@pytest.fixture(scope="module")
def superres_model(tmp_path_factory) -> tuple[Path, Path]:
    """An LDMSuperResolutionPipeline folder of the fast test's models (each after torch.manual_seed(0)): (folder,
    its exported unet.onnx, with decoder.onnx beside it)."""
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

    torch.manual_seed(0)
    unet = UNet2DModel(**SUPERRES_TEST_UNET)
    torch.manual_seed(0)
    vqvae = VQModel(**SUPERRES_TEST_VQ)
    folder = tmp_path_factory.mktemp("superres_model")
    LDMSuperResolutionPipeline(unet=unet, vqvae=vqvae, scheduler=DDIMScheduler()).save_pretrained(folder)
    return folder, export_engine(folder, tmp_path_factory.mktemp("superres_engine"))


def superres_test_image() -> np.ndarray:
    """The fast test's ``floats_tensor((1, 3, 32, 32), rng=random.Random(0))``: uniform floats in [0, 1)."""
    import random

    rng = random.Random(0)
    return np.array([rng.random() for _ in range(3 * 32 * 32)], dtype=np.float32).reshape(1, 3, 32, 32)


@pytest.mark.slow  # the pipeline folder's export (UNet + VQ decoder): make test-full
def test_superresolution_reproduces_diffusers_fast_test(superres_model):
    from diffusers import LDMSuperResolutionPipeline

    folder, engine = superres_model
    image = superres_test_image()
    with Pipeline.load(engine, cache_dir=None) as pipe:
        assert pipe.image_shape == (64, 64, 3) and pipe.image_conditioned
        ours = pipe.run(image=image, steps=2, seed=0, noise="torch").unit_images().transpose(0, 2, 3, 1)
        result = pipe.generate(image=image, steps=2, seed=0, noise="torch")
        with pytest.raises(InputError, match=r"image is 16x16 with 3 channels; this model takes 32x32 with 3 channels"):
            pipe.run(image=image[:, :, :16, :16], steps=2)
        with pytest.raises(InputError, match="conditioned on an image .*: give image, 32x32 with 3 channels"):
            pipe.run(steps=2)
        with pytest.raises(InputError, match="strength and mask_image do not apply"):
            pipe.run(image=image, strength=0.5, steps=2)
    theirs_pipe = LDMSuperResolutionPipeline.from_pretrained(folder)
    theirs_pipe.set_progress_bar_config(disable=True)
    theirs = theirs_pipe(image=torch.from_numpy(image), generator=torch.Generator().manual_seed(0), num_inference_steps=2,
                         output_type="np").images
    slice_error = np.abs(ours[0, -3:, -3:, -1].flatten() - SUPERRES_TEST_SLICE).max()
    print(f"\nLDMSuperResolution fast test: slice error {slice_error:.2e}, max |ours - diffusers| "
          f"{np.abs(ours - theirs).max():.2e}")
    assert ours.shape == (1, 64, 64, 3) and slice_error < SUPERRES_TEST_TOL
    np.testing.assert_allclose(ours, theirs, atol=SUPERRES_VS_DIFFUSERS_ATOL, rtol=0)
    diff = assert_images_close(result.images, (theirs * 255).round().astype(np.uint8))
    print(f"uint8: max diff {diff.max()}, {(diff > 0).sum()} of {diff.size} values differ")
    assert "image_sha256" in result.png_metadata(0) and "strength" not in result.png_metadata(0)


@pytest.mark.slow  # the pipeline folder's export (UNet + VQ decoder): make test-full
def test_superresolution_export_declares_the_image_and_needs_the_pipeline_folder(superres_model, tmp_path):
    import json

    from export.onnx import main
    from runtime.errors import DeployError

    folder, engine = superres_model
    manifest = json.loads((engine.parent / "manifest.json").read_text())
    assert manifest["image_condition"] == {**manifest["image_condition"], "input": "image_condition", "channels": 3,
                                           "height": 32, "width": 32, "range": [-1, 1],
                                           "pipeline": "LDMSuperResolutionPipeline"}
    assert manifest["decoder"]["scaling_factor"] == 1.0  # the pipeline decodes the latents as they are
    with pytest.raises(DeployError, match="out_channels=3 .*exported from its pipeline folder"):
        main(["--model", str(folder / "unet"), "--out", str(tmp_path / "out")])


@pytest.mark.slow  # the pipeline folder's export (UNet + VQ decoder): make test-full
def test_superresolution_requests_batched_equal_themselves_alone(superres_model):
    _, engine = superres_model
    low = [superres_test_image(), 1 - superres_test_image()]
    requests = [dict(image=low[0], steps=3, seed=1), dict(image=np.concatenate(low), count=2, steps=2, seed=2,
                                                          scheduler="dpmpp-2m")]
    with Pipeline.load(engine, cache_dir=None) as pipe:
        alone = [pipe.sample(**r) for r in requests]
        with StepBatcher(pipe, max_batch=4) as batcher:
            batched = [f.result(timeout=300) for f in [batcher.submit(**r) for r in requests]]
            assert batcher.stats.mean_batch > 1
    for a, b in zip(alone, batched):
        np.testing.assert_array_equal(a, b)
