"""Random-weight diffusers models for tests and benchmarks: tiny ones (unconditional, class-conditional,
cross-attention, and the UNet2DModel family's: NCSN++, consistency models, ADM-style learned variance, a
learned time embedding), the full google/ddpm-cat-256 config and the LSUN-256 consistency-model config."""

from __future__ import annotations

import math
from pathlib import Path

REFERENCE_DOWN = ("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D")
REFERENCE_UP = ("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4

# google/ddpm-cat-256's config.json (shared/reference/ddpm-cat-256-card.md).
REFERENCE_CONFIG = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    layers_per_block=2,
    down_block_types=REFERENCE_DOWN,
    up_block_types=REFERENCE_UP,
    attention_head_dim=None,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-6,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    time_embedding_type="positional",
    center_input_sample=False,
    mid_block_scale_factor=1,
)
REFERENCE_SCHEDULER = dict(
    beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000, clip_sample=True,
    variance_type="fixed_small",
)


def reference_blocks_tiny(layers_per_block: int) -> dict:
    """The reference block-type lists with tiny channels (32x32 images)."""
    return {
        **REFERENCE_CONFIG,
        "sample_size": 32,
        "block_out_channels": (8, 8, 16, 16, 32, 32),
        "norm_num_groups": 8,
        "layers_per_block": layers_per_block,
    }


TINY_CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


# A class-conditional UNet2DModel (as the consistency-model ImageNet checkpoints: num_class_embeds, no type).
TINY_CLASS_CONFIG = {**TINY_CONFIG, "sample_size": 8, "num_class_embeds": 5}
# A UNet2DConditionModel: cross-attention blocks whose keys and values come from encoder_hidden_states.
TINY_CROSS_ATTENTION_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16,
    attention_head_dim=4,
    norm_num_groups=8,
)


# The UNet2DModel family at tiny sizes, after diffusers' own UNet2DModel tests and the public checkpoints' configs
# (diffusers' scripts/convert_*: google/ncsnpp-*, openai/diffusers-cd_*/ct_*, ADM/improved-DDPM's learned sigma).
# NCSN++ (google/ncsnpp-*, diffusers' NCSNppModelTests): Fourier time embedding, skip blocks, sqrt(2) mid scale.
TINY_NCSNPP_CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=(32, 64, 64, 64),
    layers_per_block=1,
    time_embedding_type="fourier",
    norm_eps=1e-6,
    mid_block_scale_factor=math.sqrt(2.0),
    norm_num_groups=None,
    down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D", "SkipDownBlock2D"),
    up_block_types=("SkipUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"),
)
NCSNPP_SCHEDULER = dict(num_train_timesteps=2000, snr=0.15, sigma_min=0.01, sigma_max=1348.0, sampling_eps=1e-5,
                        correct_steps=1)  # google/ncsnpp-celebahq-256's ScoreSdeVeScheduler
# OpenAI's consistency models (scripts/convert_consistency_to_diffusers.py): resnet down/upsampling, scale-shift
# norms, class-conditional for ImageNet-64 (num_class_embeds), unconditional for LSUN-256.
TINY_CM_CONFIG = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    num_class_embeds=10,
    block_out_channels=(16, 32),
    attention_head_dim=8,
    norm_num_groups=8,
    down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    downsample_type="resnet",
    upsample_type="resnet",
    resnet_time_scale_shift="scale_shift",
)
LSUN_256_CM_CONFIG = dict(  # openai/diffusers-cd_bedroom256_lpips, ..._cat256_...: about 4x ddpm-cat-256's compute
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    num_class_embeds=None,
    block_out_channels=(256, 256, 512, 512, 1024, 1024),
    attention_head_dim=64,
    down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("AttnDownBlock2D",) * 3,
    up_block_types=("AttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",) * 3,
    downsample_type="resnet",
    upsample_type="resnet",
    resnet_time_scale_shift="default",
)
CD_SCHEDULER = dict(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0)  # consistency distillation
CT_LSUN_256_SCHEDULER = dict(num_train_timesteps=151, sigma_min=0.002, sigma_max=80.0)  # consistency training
# ADM / improved DDPM: the model predicts its variance too (out_channels = 2 x in), scale-shift norms.
TINY_LEARNED_VARIANCE_CONFIG = {**TINY_CONFIG, "out_channels": 6, "resnet_time_scale_shift": "scale_shift"}
LEARNED_RANGE_SCHEDULER = {**REFERENCE_SCHEDULER, "variance_type": "learned_range"}
# A learned time embedding: a table of num_train_timesteps rows indexed by the (integer) timestep.
TINY_LEARNED_TIME_CONFIG = {**TINY_CONFIG, "time_embedding_type": "learned", "num_train_timesteps": 1000}


def save_model(folder: Path, config: dict, scheduler: dict | None = None, seed: int = 0, unet_class: str = "UNet2DModel",
               calm: float | None = None, scheduler_class: str = "DDPMScheduler") -> Path:
    """``UNet2DModel(**config)`` (or ``unet_class``) with seeded random weights + a ``scheduler_class``
    (DDPMScheduler by default), saved as diffusers does.

    A random UNet makes the deterministic samplers (DDIM at eta 0, DPM-Solver++) chaotic; image-level
    comparisons of those use the trained demo model (models/digits16), or a *calmed* random model:
    ``calm`` scales the output convolution, so the model's output varies little with its input and a
    kernel's last-bit difference no longer grows along the trajectory.
    """
    import diffusers
    import torch

    torch.manual_seed(seed)
    unet = getattr(diffusers, unet_class)(**config)
    if calm is not None:
        with torch.no_grad():
            unet.conv_out.weight.mul_(calm)
            unet.conv_out.bias.mul_(calm)
    unet.save_pretrained(folder)
    getattr(diffusers, scheduler_class)(**(REFERENCE_SCHEDULER if scheduler is None else scheduler)).save_pretrained(folder)
    return folder


# Latent diffusion (CompVis/ldm-celebahq-256's layout: unet/ + vqvae/ + scheduler/, diffusers' LDMPipeline tests):
# a VQ-VAE with one downsampling (16x16 images, 8x8x3 latents) and a UNet on its latents.
TINY_VQ_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=3,
    norm_num_groups=8,
    num_vq_embeddings=32,
    sample_size=16,
)
TINY_KL_CONFIG = {k: v for k, v in TINY_VQ_CONFIG.items() if k != "num_vq_embeddings"}  # AutoencoderKL
TINY_LDM_UNET_CONFIG = {**TINY_CONFIG, "sample_size": 8}
LDM_SCHEDULER = dict(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     clip_sample=False, set_alpha_to_one=False)  # ldm-celebahq-256's DDIMScheduler


def save_ldm(folder: Path, seed: int = 0, calm: float | None = 0.1, autoencoder: str = "VQModel",
             unet_config: dict | None = None, autoencoder_config: dict | None = None) -> Path:
    """A latent-diffusion pipeline folder (``LDMPipeline.save_pretrained``): unet/ (calmed by default: DDIM at eta
    0 is deterministic), vqvae/ (or vae/ with ``autoencoder="AutoencoderKL"``), scheduler/; the tiny configs
    unless ``unet_config`` / ``autoencoder_config`` are given."""
    import diffusers
    import torch

    save_model(folder / "unet", unet_config or TINY_LDM_UNET_CONFIG, LDM_SCHEDULER, seed, calm=calm,
               scheduler_class="DDIMScheduler")
    (folder / "unet" / "scheduler_config.json").rename(folder / "scheduler_config.tmp")
    (folder / "scheduler").mkdir()
    (folder / "scheduler_config.tmp").rename(folder / "scheduler" / "scheduler_config.json")
    torch.manual_seed(seed + 1)
    tiny = TINY_VQ_CONFIG if autoencoder == "VQModel" else TINY_KL_CONFIG
    getattr(diffusers, autoencoder)(**(autoencoder_config or tiny)).save_pretrained(
        folder / ("vqvae" if autoencoder == "VQModel" else "vae"))
    return folder
