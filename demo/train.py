"""``python -m demo.train --out models/digits16``: train a shipped demo model from scratch on CPU.

Two models, one loop, on scikit-learn's digits noised with diffusers' ``DDPMScheduler`` on the
reference model's schedule (linear betas 1e-4..0.02, 1000 steps, epsilon prediction):

* ``digits16`` (default): an unconditional ``UNet2DModel`` (1 channel, 16x16);
* ``--conditional`` (``models/digits16-cond``): a ``UNet2DConditionModel`` whose cross-attention
  blocks attend to a learned embedding of the digit (``SEQUENCE`` tokens of ``EMBED_DIM``); with
  probability ``--label-dropout`` a training image gets the learned *null* embedding instead, so
  the model also learns the unconditional prediction that classifier-free guidance needs. The
  folder gets the label → embedding table and the null embedding beside the UNet, and
  ``conditioning.json`` declaring them (what the export copies into the manifest).

Seeded and deterministic on one machine (torch's CPU kernels, a fixed thread count); AdamW with
warm-up and cosine decay; the saved weights are an exponential moving average. ``--checkpoint``
(default ``build/train-<name>.pt``) is written every ``--checkpoint-every`` steps, atomically; a run
started again with the same settings resumes from it. Writes a pipeline folder (``unet/`` with
safetensors, ``scheduler/``), the loss curve (``loss.png``) and ``training.json`` (settings, time, losses).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from runtime.cpu import cpu_generation, cpu_model

from . import digits
from runtime.cli import require, run

log = logging.getLogger("demo.train")

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

SEQUENCE = 4  # tokens per digit embedding
EMBED_DIM = 32  # the cross-attention dimension
COND_CONFIG = {  # the same UNet with cross-attention blocks where digits16 has self-attention
    **CONFIG,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "cross_attention_dim": EMBED_DIM,
    "attention_head_dim": 8,
}
NUM_CLASSES = 10
LABEL_EMBEDDINGS = "label_embeddings.npy"  # [NUM_CLASSES, SEQUENCE, EMBED_DIM] float32
NULL_EMBEDDING = "null_embedding.npy"  # [SEQUENCE, EMBED_DIM] float32


def conditioning_declaration() -> dict:
    """``conditioning.json`` of the conditional model (see ``export.conditioning``)."""
    return {
        "labels": [str(d) for d in range(NUM_CLASSES)],
        "label_embeddings": LABEL_EMBEDDINGS,
        "unconditional": {"embedding": NULL_EMBEDDING},
    }


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="demo.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="default models/digits16 (models/digits16-cond with --conditional)")
    ap.add_argument("--conditional", action="store_true", help="the cross-attention model conditioned on the digit")
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--label-dropout", type=float, default=0.15, help="share of images trained with the null embedding")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None, help="default build/train-<out folder name>.pt")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    require("demo.train", {"torch": "export", "diffusers": "export", "sklearn": "test"})  # matplotlib: optional (the loss plot)

    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel
    from tqdm import tqdm

    out = Path(args.out or ("models/digits16-cond" if args.conditional else "models/digits16"))
    checkpoint = Path(args.checkpoint or f"build/train-{out.name}.pt")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    images, labels = digits.load()
    data, targets = torch.from_numpy(images), torch.from_numpy(labels)
    scheduler = DDPMScheduler(**REFERENCE_SCHEDULER)
    config = COND_CONFIG if args.conditional else CONFIG
    unet = UNet2DConditionModel(**config) if args.conditional else UNet2DModel(**config)
    model = torch.nn.Module()
    model.unet = unet
    if args.conditional:  # rows 0..9: the digits; row 10: the null (unconditional) embedding
        model.embeddings = torch.nn.Parameter(0.5 * torch.randn(NUM_CLASSES + 1, SEQUENCE, EMBED_DIM))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 200
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )
    gen = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    seconds_before = 0.0
    start_step = 0
    settings = {k: getattr(args, k) for k in ("conditional", "steps", "batch", "lr", "ema", "label_dropout", "seed", "threads")}
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["settings"] != settings:
            raise SystemExit(f"demo.train: {checkpoint} was written with other settings ({state['settings']}); "
                             "remove it or pass the same settings")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        losses, seconds_before, start_step = state["losses"], state["seconds"], state["step"]
        log.info("resuming from %s at step %d", checkpoint, start_step)
    started = time.perf_counter()
    bar = tqdm(range(start_step, args.steps), desc="training", unit="step", file=sys.stderr,
               initial=start_step, total=args.steps)
    for step in bar:
        idx = torch.randint(0, len(data), (args.batch,), generator=gen)
        x0 = data[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        if args.conditional:
            label = targets[idx].clone()
            label[torch.rand(args.batch, generator=gen) < args.label_dropout] = NUM_CLASSES
            pred = unet(xt, t, model.embeddings[label]).sample
        else:
            pred = unet(xt, t).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        done = step + 1
        if done % args.checkpoint_every == 0 and done < args.steps:
            _save_checkpoint(checkpoint, {
                "settings": settings, "step": done, "model": model.state_dict(), "ema": ema.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(), "losses": losses,
                "seconds": seconds_before + time.perf_counter() - started})
    seconds = seconds_before + time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    if args.conditional:  # no diffusers pipeline takes label embeddings: the UNet and scheduler folders
        ema.unet.eval().save_pretrained(out / "unet", safe_serialization=True)
        scheduler.save_pretrained(out / "scheduler")
    else:
        DDPMPipeline(unet=ema.unet.eval(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    if args.conditional:
        table = ema.embeddings.detach().numpy().astype(np.float32)
        np.save(out / LABEL_EMBEDDINGS, table[:NUM_CLASSES])
        np.save(out / NULL_EMBEDDING, table[NUM_CLASSES])
        (out / "conditioning.json").write_text(json.dumps(conditioning_declaration(), indent=2) + "\n")
    window = 100
    smooth = [float(np.mean(losses[i : i + window])) for i in range(0, len(losses), window)]
    facts = {
        "data": "sklearn.datasets.load_digits, 1797 images 8x8 upscaled to 16x16 (bilinear), [-1, 1], 1 channel"
                + (", with their labels" if args.conditional else ""),
        "model": type(unet).__name__,
        "config": config,
        "scheduler": REFERENCE_SCHEDULER,
        **settings,
        "conditioning": {"sequence": SEQUENCE, "dim": EMBED_DIM, "null_row": NUM_CLASSES} if args.conditional else None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(seconds, 1),
        "resumed": start_step > 0,
        "final_loss_mean_last_500": float(np.mean(losses[-500:])),
        "loss_every_100_steps": smooth,
        "torch": torch.__version__,
        "cpu": f"{cpu_model()} ({cpu_generation()})",
    }
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(len(smooth)) * window, smooth)
        ax.set(xlabel="step", ylabel="MSE (noise prediction), mean of 100 steps", yscale="log",
               title=f"{out.name} training")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "loss.png", dpi=100)
    except ImportError:
        log.warning("matplotlib not installed: no loss.png")
    checkpoint.unlink(missing_ok=True)
    print(f"trained {args.steps} steps in {seconds:.0f} s; final loss {facts['final_loss_mean_last_500']:.4f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "demo.train"))
