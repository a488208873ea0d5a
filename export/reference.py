"""Random-weight diffusers models for tests and benchmarks: tiny ones (unconditional, class-conditional,
cross-attention), and the full google/ddpm-cat-256 config."""

from __future__ import annotations

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


def save_model(folder: Path, config: dict, scheduler: dict | None = None, seed: int = 0, unet_class: str = "UNet2DModel",
               calm: float | None = None) -> Path:
    """``UNet2DModel(**config)`` (or ``unet_class``) with seeded random weights + a DDPMScheduler, saved as
    diffusers does.

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
    diffusers.DDPMScheduler(**(REFERENCE_SCHEDULER if scheduler is None else scheduler)).save_pretrained(folder)
    return folder
