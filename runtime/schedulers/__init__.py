"""Samplers as precomputed numpy tables and pure step functions, selected by name.

Each sampler lives in one module (``ddpm``, ``ddim``, ``dpmpp``, ``unipc``, ``pndm``, ``cm``,
``sde_ve``) that
declares its diffusers config keys and defaults, its table builder and its step, and registers them
(:func:`config.register`); adding a sampler is adding a module and importing it here. Tables mix in
:class:`config.StepTable`, whose defaults (initial noise scale 1, the sample as the engine's input, the
table's timestep as the engine's, data in [-1, 1]) a sampler overrides where it differs (consistency
models scale the input and feed ``250 ln sigma``; score-SDE feeds sigma and ends in [0, 1]). Every table has ``timesteps``,
``num_steps`` and ``needs_noise(i)``; every step has one signature, ``step(table, i, model_output,
sample, noise, state, out=None) -> (sample, state)``, where ``state`` is what a step carries to the
next (DPM-Solver++'s previous data prediction, PNDM's previous noise predictions; nothing for DDPM,
DDIM, consistency models and score-SDE). Steps are pure: they never
write into their inputs. ``out`` is optional working space the caller owns, two float32 arrays of the
sample's shape that alias no input; a sampler that can use it (DDPM) writes its result into
``out[0]`` and returns it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
# Each module registers its sampler on import; this order is the registry's (help texts, choices).
from . import ddpm  # noqa: F401, I001
from . import ddim  # noqa: F401
from . import dpmpp  # noqa: F401
from . import unipc  # noqa: F401
from . import pndm  # noqa: F401
from . import cm  # noqa: F401
from . import sde_ve  # noqa: F401
from . import repaint  # noqa: F401
from .config import SAMPLERS, Sampler, SchedulerConfig
from .ddim import check_eta
from .ddpm import DDPMTable, ddpm_step, ddpm_table
from .tuned import tuned_timesteps


def __getattr__(name: str):
    if name == "SCHEDULERS":  # the registry had two names; SAMPLERS is the one
        import warnings

        warnings.warn("runtime.schedulers.SCHEDULERS is deprecated: use SAMPLERS (the registry; its keys are the names)",
                      DeprecationWarning, stacklevel=2)
        return tuple(SAMPLERS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def scheduler_name_for(raw: dict[str, Any]) -> str:
    """The sampler a config was written for (its ``_class_name``; of a class's samplers the first whose implied
    keys it has or lacks, e.g. solver_order 3: dpmpp-3m; none: dpmpp-2m, registered first, diffusers' default
    order), DDPM when unknown."""
    named = [s for s in SAMPLERS.values() if s.diffusers_class == raw.get("_class_name")]
    for s in named:
        if all(raw.get(key, value) == value for key, value in s.implied.items()):
            return s.name
    return named[0].name if named else "ddpm"


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise InputError(f"unknown scheduler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def build_table(name: str, raw_config: dict[str, Any], steps: int | None, eta: float = 0.0,
                timesteps: tuple[int, ...] | None = None, tuned: bool = False, **options: Any):
    """(sampler, table) for ``name`` from a diffusers config dict, converted as ``from_config`` would;
    ``timesteps``: the steps outright (samplers that take them: consistency models, DPM-Solver++); ``tuned``: the
    timesteps tuned for ``name`` at ``steps`` (:mod:`.tuned`); ``options``: a sampler's own (RePaint's jumps; None:
    its default)."""
    sampler = get_sampler(name)
    eta = check_eta(eta)
    if eta and not sampler.uses_eta:
        takes = [s.name for s in SAMPLERS.values() if s.uses_eta]
        raise InputError(f"eta applies to {' and '.join(takes)} only; {name} takes no eta (leave it at 0)")
    options = {key: value for key, value in options.items() if value is not None}
    for key in options:
        if key not in sampler.table_options:
            takes = [s.name for s in SAMPLERS.values() if key in s.table_options]
            raise InputError(f"{key} applies to {' and '.join(takes)} only; {name} does not take it")
    config = SchedulerConfig.from_dict(raw_config, name)
    if tuned:
        timesteps = tuned_timesteps(name, steps, config.num_train_timesteps)
    if timesteps is not None:
        if sampler.make_table_from_timesteps is None:
            takes = [s.name for s in SAMPLERS.values() if s.make_table_from_timesteps is not None]
            raise InputError(f"timesteps apply to {', '.join(takes)} only; {name} takes steps")
        return sampler, sampler.make_table_from_timesteps(config, timesteps)
    return sampler, sampler.make_table(config, sampler.steps_for(config) if steps is None else steps, eta, **options)


def default_steps_help() -> str:
    """"ddpm: every training timestep, ddim 50, ..." for help texts, from the registry."""
    return ", ".join(f"{s.name} {s.default_steps or 'every training timestep'}" for s in SAMPLERS.values())


__all__ = [
    "SAMPLERS",
    "DDPMTable",
    "Sampler",
    "SchedulerConfig",
    "build_table",
    "ddpm_step",
    "ddpm_table",
    "default_steps_help",
    "get_sampler",
    "scheduler_name_for",
]
