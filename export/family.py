"""The UNet2DModel family: which config options the export serves, and what the timestep means.

Every ``UNet2DModel.__init__`` option of the installed diffusers is listed in :data:`OPTIONS`, either
as part of the graph (any value the model accepts is traced into the engine) or with the values we
serve; anything else is refused before any work with one line naming the option. An option this
table does not know (a newer diffusers) is refused by default, and ``tests/export/test_family.py``
fails when the installed diffusers' signature and this table part ways.

:func:`timestep_domain` reads what the timestep input means from the model and its scheduler: a
training step (DDPM, DDIM, PNDM, DPM-Solver: ``0 .. num_train_timesteps - 1``), the noise level
sigma (``ScoreSdeVeScheduler``: NCSN++'s Fourier embedding takes its log), or ``250 ln sigma``
(``CMStochasticIterativeScheduler``). A ``learned`` time embedding indexes a table with it, so the
engine's timestep is int64 there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from runtime.io_spec import TimestepDomain

from .load import IMAGE_CONDITIONED, ModelSource, ModelSourceError

GRAPH = "graph"  # any value the model accepts: it is traced into the engine

# The blocks UNet2DModel can run (they take the time embedding and no encoder states); the others
# (VAE encoder/decoder blocks, cross-attention and K-diffusion blocks) fail inside diffusers' forward.
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D", "ResnetDownsampleBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "ResnetUpsampleBlock2D")
TIME_EMBEDDINGS = ("positional", "fourier", "learned")
ACTIVATIONS = ("silu", "swish", "mish", "gelu", "relu")

# option -> GRAPH, or the values served (a tuple), or a check returning why a value is refused (None: served)
OPTIONS: dict[str, Any] = {
    "sample_size": lambda v: None if _positive(v) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_positive, v)))
    else "the engine's image size is fixed at export: set it to a size or [height, width]",
    "in_channels": lambda v: None if _positive(v) else "a positive channel count is needed",
    "out_channels": GRAPH,  # checked against in_channels in check_options (learned variance doubles it)
    "center_input_sample": GRAPH,
    "time_embedding_type": TIME_EMBEDDINGS,
    "time_embedding_dim": GRAPH,
    "freq_shift": GRAPH,
    "flip_sin_to_cos": GRAPH,
    "down_block_types": lambda v: _blocks(v, DOWN_BLOCKS),
    "mid_block_type": ("UNetMidBlock2D", None),
    "up_block_types": lambda v: _blocks(v, UP_BLOCKS),
    "block_out_channels": GRAPH,
    "layers_per_block": GRAPH,
    "mid_block_scale_factor": GRAPH,
    "downsample_padding": GRAPH,
    "downsample_type": ("conv", "resnet"),
    "upsample_type": ("conv", "resnet"),
    "dropout": GRAPH,  # the engine runs in eval mode
    "act_fn": ACTIVATIONS,
    "attention_head_dim": GRAPH,
    "norm_num_groups": GRAPH,
    "attn_norm_num_groups": GRAPH,
    "norm_eps": GRAPH,
    "resnet_time_scale_shift": ("default", "scale_shift"),
    "add_attention": GRAPH,
    "class_embed_type": (None,),  # the conditioning issue's: class labels come through num_class_embeds
    "num_class_embeds": lambda v: None if v is None or _positive(v) else "a positive class count or null is needed",
    "num_train_timesteps": GRAPH,  # the learned embedding's table size; checked against the scheduler
}


def _positive(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _blocks(value: Any, served: tuple[str, ...]) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return "a list of block names is needed"
    bad = [b for b in value if b not in served]
    return f"UNet2DModel runs {', '.join(served)}; not {', '.join(map(str, bad))}" if bad else None


def _refusal(model: ModelSource, option: str, value: Any, why: str) -> ModelSourceError:
    return ModelSourceError(f"{model.folder / 'config.json'}: {option}={value!r} is not supported ({why})")


def init_signature(module: str, class_name: str) -> dict[str, Any]:
    """``class_name.__init__``'s parameters and their literal defaults (None where not a literal) in the installed
    diffusers' ``module``, read from its source: importing diffusers' models imports torch (300 MB), and the
    export's parent process stays small (its stages run in children)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("diffusers")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError("diffusers is not installed; install the export extra: pip install 'ddpm-deploy[export]'")
    path = Path(spec.submodule_search_locations[0], *module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names = [a.arg for a in init.args.args[1:]] + [a.arg for a in init.args.kwonlyargs]
    defaults = [None] * (len(init.args.args) - 1 - len(init.args.defaults)) + list(init.args.defaults) + list(init.args.kw_defaults)

    def literal(node):
        try:
            return ast.literal_eval(node) if node is not None else None
        except ValueError:
            return None

    return {name: literal(d) for name, d in zip(names, defaults)}


def installed_options() -> tuple[str, ...]:
    """``UNet2DModel.__init__``'s options in the installed diffusers."""
    return tuple(init_signature("models.unets.unet_2d", "UNet2DModel"))


def check_options(model: ModelSource, installed: tuple[str, ...] | None = None) -> None:
    """Refuses, with one line naming it, the first option of a UNet2DModel config we do not serve."""
    if model.unet_class != "UNet2DModel":
        return
    config = model.config
    installed = installed_options() if installed is None else installed
    for option in config:
        if option.startswith("_"):
            continue  # diffusers' own bookkeeping (_class_name, _diffusers_version, _name_or_path)
        if option not in installed:
            raise _refusal(model, option, config[option], "the installed diffusers' UNet2DModel has no such option "
                           "and would ignore it: the model may need a newer diffusers")
        if option not in OPTIONS:
            raise _refusal(model, option, config[option], "ddpm-deploy does not know this option of the installed "
                           "diffusers yet; use a diffusers release it supports")
    for option, rule in OPTIONS.items():
        if option not in config:
            continue
        value = config[option]
        if rule == GRAPH:
            continue
        why = rule(value) if callable(rule) else (
            None if value in rule else f"use one of: {', '.join(map(repr, rule))}")
        if why:
            raise _refusal(model, option, value, why)
    c_in, c_out = config.get("in_channels", 3), config.get("out_channels", 3)
    if model.pipeline_class in IMAGE_CONDITIONED:
        if not 0 < c_out < c_in:
            raise _refusal(model, "out_channels", c_out, f"an {model.pipeline_class} UNet takes the sample and the "
                           f"image ({c_in} channels, in_channels) and predicts fewer (the sample's)")
    elif c_out not in (c_in, 2 * c_in):
        raise _refusal(model, "out_channels", c_out, f"a UNet2DModel predicts {c_in} channels (in_channels), or "
                       f"{2 * c_in} with a learned variance; a UNet that takes an image besides the sample is exported "
                       f"from its pipeline folder ({', '.join(IMAGE_CONDITIONED)}: model_index.json says which)")


def timestep_domain(model: ModelSource, scheduler: dict[str, Any]) -> tuple[TimestepDomain, str]:
    """(what the timestep means and its range, the engine's timestep dtype) for the model and its scheduler
    config; refuses a time embedding that cannot take that domain."""
    kind = scheduler.get("_class_name")
    if kind == "ScoreSdeVeScheduler":
        domain = TimestepDomain("sigma", float(scheduler.get("sigma_min", 0.01)), float(scheduler.get("sigma_max", 1348.0)))
    elif kind == "CMStochasticIterativeScheduler":
        lo, hi = float(scheduler.get("sigma_min", 0.002)), float(scheduler.get("sigma_max", 80.0))
        domain = TimestepDomain("log_sigma", 250.0 * math.log(lo), 250.0 * math.log(hi))
    else:
        domain = TimestepDomain.steps(int(scheduler.get("num_train_timesteps", 1000)))
    embedding = model.config.get("time_embedding_type", "positional") if model.unet_class == "UNet2DModel" else "positional"
    if embedding == "fourier" and not domain.min > 0:
        raise _refusal(model, "time_embedding_type", embedding, f"a Fourier time embedding takes the log of the timestep, "
                       f"and its scheduler ({kind or 'DDPMScheduler'}) feeds {domain}: pair it with a ScoreSdeVeScheduler")
    if embedding == "learned":
        table = model.config.get("num_train_timesteps")
        if domain.kind != "step":
            raise _refusal(model, "time_embedding_type", embedding, f"a learned time embedding indexes a table with training "
                           f"steps, and its scheduler ({kind}) feeds {domain}")
        if not _positive(table) or domain.max >= table:
            raise _refusal(model, "num_train_timesteps", table, f"the learned time embedding needs a table of at least "
                           f"{int(domain.max) + 1} entries for the scheduler's timesteps")
        return domain, "int64"
    return domain, "float32"
