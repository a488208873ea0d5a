"""``python -m demo.train --out models/digits16``: train the shipped demo DDPM from scratch on CPU.

A small diffusers ``UNet2DModel`` (1 channel, 16x16) on scikit-learn's digits, noised with
diffusers' ``DDPMScheduler`` on the reference model's schedule (linear betas 1e-4..0.02, 1000
steps, epsilon prediction). Seeded and deterministic on one machine (torch's CPU kernels, a fixed
thread count); AdamW with warm-up and cosine decay; the saved weights are an exponential moving
average. Writes a ``DDPMPipeline`` folder (``unet/`` with safetensors, ``scheduler/``), the loss
curve (``loss.png``) and ``training.json`` (settings, time, losses).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import digits
from runtime.cli import require, run

# google/ddpm-cat-256's scheduler (shared/reference/ddpm-cat-256-card.md)
REFERENCE_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", clip_sample=True,
    variance_type="fixed_small",
)

CONFIG = dict(
    sample_size=digits.SIZE,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="demo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/digits16")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    require("demo.train", {"torch": "export", "diffusers": "export", "sklearn": "test"})  # matplotlib: optional (the loss plot)

    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    images, _ = digits.load()
    data = torch.from_numpy(images)
    scheduler = DDPMScheduler(**REFERENCE_SCHEDULER)
    unet = UNet2DModel(**CONFIG)
    ema = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    gen = torch.Generator().manual_seed(args.seed)
    losses = []
    started = time.perf_counter()
    bar = tqdm(range(args.steps), desc="training", unit="step", file=sys.stderr)
    for step in bar:
        idx = torch.randint(0, len(data), (args.batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    seconds = time.perf_counter() - started
    out = Path(args.out)
    DDPMPipeline(unet=ema.eval(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    window = 100
    smooth = [float(np.mean(losses[i : i + window])) for i in range(0, len(losses), window)]
    facts = {
        "data": "sklearn.datasets.load_digits, 1797 images 8x8 upscaled to 16x16 (bilinear), [-1, 1], 1 channel",
        "config": CONFIG,
        "scheduler": REFERENCE_SCHEDULER,
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "ema": args.ema,
        "seed": args.seed,
        "threads": args.threads,
        "parameters": sum(p.numel() for p in unet.parameters()),
        "seconds": round(seconds, 1),
        "final_loss_mean_last_500": float(np.mean(losses[-500:])),
        "loss_every_100_steps": smooth,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(len(smooth)) * window, smooth)
        ax.set(xlabel="step", ylabel="MSE (noise prediction), mean of 100 steps", yscale="log", title="demo model training")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=100)
    except ImportError:
        print("matplotlib not installed: no loss.png", file=sys.stderr)
    print(f"trained {args.steps} steps in {seconds:.0f} s; final loss {facts['final_loss_mean_last_500']:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "demo.train"))
