"""Samplers as precomputed numpy tables and pure step functions, selected by name.

Every table has ``timesteps``, ``num_steps`` and ``needs_noise(i)``; every step function is wrapped
here to one signature, ``step(table, i, model_output, sample, noise, state, out=None) -> (sample,
state)``, where ``state`` is what a step carries to the next (DPM-Solver++'s previous data
prediction; nothing for DDPM and DDIM). Steps are pure: they never write into their inputs. ``out``
is optional working space the caller owns, two float32 arrays of the sample's shape that alias no
input; a sampler that can use it (DDPM) writes its result into ``out[0]`` and returns it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from .config import DIFFUSERS_CLASS, SCHEDULERS, SchedulerConfig
from .ddim import check_eta, ddim_step, ddim_table
from .ddpm import DDPMTable, ddpm_step, ddpm_table
from .dpmpp import dpmpp_step, dpmpp_table


def _ddpm(table, i, model_output, sample, noise, state, out=None):
    """DDPM into the caller's buffers when given (fresh 800 kB arrays per step cost page faults that
    double the step's time on the full model)."""
    target, scratch = out if out is not None else (None, None)
    return ddpm_step(table, i, model_output, sample, noise, out=target, scratch=scratch), None


@dataclass(frozen=True)
class Sampler:
    name: str
    default_steps: Callable[[SchedulerConfig], int]
    make_table: Callable[[SchedulerConfig, int, float], Any]
    step: Callable[..., tuple[Any, Any]]
    uses_eta: bool = False


SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler(
        "ddpm",
        default_steps=lambda c: c.num_train_timesteps,  # DDPMPipeline's default: every training step
        make_table=lambda c, k, eta: ddpm_table(c, k),
        step=_ddpm,
    ),
    "ddim": Sampler(
        "ddim",
        default_steps=lambda c: 50,  # DDIMPipeline's default
        make_table=lambda c, k, eta: ddim_table(c, k, eta),
        step=lambda t, i, m, x, z, s, out=None: (ddim_step(t, i, m, x, z), None),
        uses_eta=True,
    ),
    "dpmpp-2m": Sampler(
        "dpmpp-2m",
        default_steps=lambda c: 25,
        make_table=lambda c, k, eta: dpmpp_table(c, k),
        step=lambda t, i, m, x, z, s, out=None: dpmpp_step(t, i, m, x, s),
    ),
}


def scheduler_name_for(raw: dict[str, Any]) -> str:
    """The sampler a config was written for (its ``_class_name``), DDPM when unknown."""
    by_class = {cls: name for name, cls in DIFFUSERS_CLASS.items()}
    return by_class.get(raw.get("_class_name"), "ddpm")


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise InputError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return SAMPLERS[name]


def build_table(name: str, raw_config: dict[str, Any], steps: int | None, eta: float = 0.0):
    """(sampler, table) for ``name`` from a diffusers config dict, converted as ``from_config`` would."""
    sampler = get_sampler(name)
    eta = check_eta(eta)
    if eta and not sampler.uses_eta:
        raise InputError(f"eta applies to ddim only; {name} takes no eta (leave it at 0)")
    config = SchedulerConfig.from_dict(raw_config, name)
    return sampler, sampler.make_table(config, sampler.default_steps(config) if steps is None else steps, eta)


__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "DDPMTable",
    "Sampler",
    "SchedulerConfig",
    "build_table",
    "ddpm_step",
    "ddpm_table",
    "get_sampler",
    "scheduler_name_for",
]
