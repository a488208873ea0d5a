"""diffusers' scheduler configuration, read from its own ``scheduler_config.json`` keys.

A model ships one scheduler config (for the reference model, a DDPMScheduler's). Sampling with
another scheduler converts it the way diffusers' ``SchedulerClass.from_config(config)`` does: the
keys the target scheduler's ``__init__`` accepts are taken, every other key is ignored, and missing
keys get the target's defaults (so a DDPM config gives DPM-Solver++ the same betas but its own
``linspace`` timestep spacing unless the config names one). Values this runtime does not implement
are refused with a message rather than silently sampled wrong.

Each sampler declares its own keys, defaults, table builder and step in its module (a
:class:`Sampler` passed to :func:`register`); this module holds what they share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SchedulerConfigError
from ..jsonio import read_json_object
from .prediction import PREDICTION_TYPES

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# The noise-schedule keys every sampler's __init__ takes, with diffusers' defaults; a sampler declares
# its own keys (and any common default it changes) beside its algorithm.
COMMON = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    trained_betas=None,
    prediction_type="epsilon",
    thresholding=False,
    timestep_spacing="leading",
    steps_offset=0,
    rescale_betas_zero_snr=False,
)


@dataclass(frozen=True)
class Sampler:
    """One sampler, declared in its own module and registered with :func:`register`.

    ``keys``: its diffusers ``__init__`` keys beyond :data:`COMMON` (and common defaults it changes), with
    diffusers' defaults; ``fixed``: keys of which it implements one value (others are refused);
    ``default_steps``: its pipeline's default step count (None: every training timestep);
    ``make_table(config, steps, eta)``; ``step(table, i, model_output, sample, noise, state, out=None)
    -> (sample, state)``, pure (see :mod:`runtime.schedulers`); ``validate(config)`` refuses values it
    does not implement; ``plan_row(table, i)``: step i in :mod:`runtime.steps`' linear form, a dict of
    ``sa``, ``sb`` (the scalars of its x0 prediction), ``clip`` and the nonzero ``c_*`` coefficients.
    """

    name: str
    diffusers_class: str
    keys: Mapping[str, Any]
    make_table: Callable[..., Any]
    step: Callable[..., tuple[Any, Any]]
    default_steps: int | None = None
    fixed: Mapping[str, Any] = field(default_factory=dict)
    uses_eta: bool = False
    validate: Callable[[SchedulerConfig], None] | None = None
    plan_row: Callable[[Any, int], dict[str, Any]] | None = None
    timestep_kind: str = "step"  # what it feeds the engine's timestep (runtime.io_spec.TIMESTEP_KINDS)
    make_table_from_timesteps: Callable[..., Any] | None = None  # (config, timesteps): steps given outright
    common_keys: bool = True  # whether it takes COMMON's noise-schedule keys (the sigma-based samplers do not)
    implied: Mapping[str, Any] = field(default_factory=dict)
    # image-to-image (runtime.image_input): ``add_noise(table, i, image, noise)``, the image noised to step i's level
    # as the scheduler's add_noise does (None: no image-to-image); ``start_at(table, i)``, the table of a loop that
    # begins at step i (set_begin_index: multistep solvers warm up again; None: the table as it is)
    add_noise: Callable[..., Any] | None = None
    start_at: Callable[[Any, int], Any] | None = None
    # inpainting: ``inpaint_state(image, mask)``, the state the first step takes (None: the sampler does not inpaint)
    inpaint_state: Callable[..., Any] | None = None
    table_options: tuple[str, ...] = ()  # keyword arguments of make_table beyond (config, steps, eta): RePaint's jumps

    @property
    def defaults(self) -> dict[str, Any]:
        return {**(COMMON if self.common_keys else {}), **self.keys, **self.fixed, **self.implied}

    def steps_for(self, config: SchedulerConfig) -> int:
        return config.num_train_timesteps if self.default_steps is None else self.default_steps


class StepTable:
    """What a sampling loop reads of every table besides ``timesteps`` (one per UNet call) and ``needs_noise(i)``,
    with the values of the DDPM family; a sampler's table overrides what differs (mixed into its dataclass)."""

    init_noise_sigma = 1.0  # the initial sample is init_noise_sigma * z
    unit_data = False  # the final sample's range: [-1, 1] (False) or [0, 1] (score-SDE: True)
    learned_variance = False  # whether the step takes the model's predicted variance too

    @property
    def num_steps(self) -> int:
        """UNet calls in the loop: one per timestep."""
        return len(self.timesteps)

    @property
    def inference_steps(self) -> int:
        """The steps a request asked for (a sampler that calls the UNet more than once a step says so)."""
        return self.num_steps

    def model_timestep(self, i: int):
        """The engine's timestep input at step i (the sampler's timestep; sigma-based samplers transform it)."""
        return self.timesteps[i]

    def model_input_divisor(self, i: int):
        """The engine's sample input at step i is the sample divided by this (None: the sample itself)."""
        return None

    def needs_model(self, i: int) -> bool:
        """Whether step i calls the UNet (RePaint's jumps back re-noise the sample without it)."""
        return True

    def noise_draws(self, i: int) -> int:
        """How many noise arrays of the sample's shape step i takes where it needs noise (stacked when more than one)."""
        return 1


def add_noise_alpha_prod(table: Any, i: int, image, noise):
    """DDPMScheduler / DDIMScheduler ``add_noise`` at step i: sqrt(alpha_prod_t) x + sqrt(1 - alpha_prod_t) z."""
    return table.sqrt_alpha_prod[i] * image + table.sqrt_beta_prod[i] * noise


def add_noise_sigma(table: Any, i: int, image, noise):
    """The sigma-based solvers' ``add_noise`` at step i (DPM-Solver++, UniPC): alpha_t x + sigma_t z."""
    return table.alpha[i] * image + table.sigma[i] * noise


SAMPLERS: dict[str, Sampler] = {}


def register(sampler: Sampler) -> Sampler:
    SAMPLERS[sampler.name] = sampler
    return sampler


def _sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise SchedulerConfigError(f"scheduler {name!r} is not supported; use one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


class SchedulerConfig:
    """One sampler's effective configuration: its declared keys, diffusers' defaults filled in.

    Read a value as an attribute (``config.beta_end``); :meth:`from_dict` converts any scheduler's
    config the way ``from_config`` does. Immutable and hashable.
    """

    __slots__ = ("scheduler", "_values")

    def __init__(self, scheduler: str = "ddpm", **values: Any):
        sampler = _sampler(scheduler)
        defaults = sampler.defaults
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise SchedulerConfigError(f"{scheduler} takes no {', '.join(unknown)}; its keys are {', '.join(defaults)}")
        merged = {**defaults, **values}
        for key, want in {**sampler.fixed, **sampler.implied}.items():
            if merged[key] != want:
                raise SchedulerConfigError(
                    f"scheduler config {key}={merged[key]!r}: {scheduler} implements {sampler.diffusers_class} with {key}={want!r}"
                )
        if merged.get("trained_betas") is not None:
            merged["trained_betas"] = tuple(float(b) for b in merged["trained_betas"])
        merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}  # hashable (disable_corrector)
        object.__setattr__(self, "scheduler", scheduler)
        object.__setattr__(self, "_values", merged)
        _validate_common(self)
        if sampler.validate is not None:
            sampler.validate(self)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"{self.scheduler} has no config key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SchedulerConfig is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SchedulerConfig) and (self.scheduler, self._values) == (other.scheduler, other._values)

    def __hash__(self) -> int:
        return hash((self.scheduler, tuple(sorted(self._values.items()))))

    def __repr__(self) -> str:
        return f"SchedulerConfig({self.scheduler!r}, {self._values!r})"

    @classmethod
    def from_dict(cls, raw: dict[str, Any], scheduler: str = "ddpm") -> SchedulerConfig:
        """``raw`` (diffusers keys, any scheduler's) as ``scheduler`` would take it through ``from_config``."""
        if not isinstance(raw, dict):
            raise SchedulerConfigError("a scheduler config must be a JSON object")
        sampler = _sampler(scheduler)
        defaults = sampler.defaults
        return cls(scheduler, **{k: v for k, v in raw.items() if k in defaults and k not in sampler.implied})

    @classmethod
    def from_file(cls, path: str | Path, scheduler: str = "ddpm") -> SchedulerConfig:
        return cls.from_dict(read_config_file(path), scheduler)

    def to_dict(self) -> dict[str, Any]:
        """The effective config as diffusers keys, with ``_class_name`` (infinite values left out: not JSON)."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._values.items()
               if not (isinstance(v, float) and math.isinf(v))}
        return {"_class_name": _sampler(self.scheduler).diffusers_class, **out}


def _validate_common(config: SchedulerConfig) -> None:
    if not _sampler(config.scheduler).common_keys:
        return
    choice("beta_schedule", config.beta_schedule, BETA_SCHEDULES, allow=config.trained_betas is not None)
    choice("prediction_type", config.prediction_type, PREDICTION_TYPES)
    choice("timestep_spacing", config.timestep_spacing, TIMESTEP_SPACINGS)
    if config.thresholding:
        raise SchedulerConfigError(
            "scheduler config sets thresholding=true (dynamic thresholding), which this runtime does not "
            "implement; set it to false or pass --scheduler-config with a supported config"
        )
    n = config.num_train_timesteps
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SchedulerConfigError(f"num_train_timesteps must be a positive integer, got {n!r}")
    if config.trained_betas is not None and len(config.trained_betas) != n:
        raise SchedulerConfigError(f"trained_betas has {len(config.trained_betas)} values but num_train_timesteps is {n}")


def check_clip_range(config: SchedulerConfig) -> None:
    if not config.clip_sample_range > 0:
        raise SchedulerConfigError(f"clip_sample_range must be positive, got {config.clip_sample_range!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    return read_json_object(
        path,
        missing=lambda: SchedulerConfigError(
            f"scheduler config {path} does not exist; pass the path of a diffusers scheduler_config.json"
        ),
        unreadable=lambda why: SchedulerConfigError(
            f"cannot read scheduler config {path}: {why}; pass a valid scheduler_config.json"
        ),
    )


def choice(key: str, value: Any, allowed: tuple[str, ...], allow: bool = False) -> None:
    if not allow and value not in allowed:
        raise SchedulerConfigError(f"{key} {value!r} is not supported; use one of: {', '.join(allowed)}")
