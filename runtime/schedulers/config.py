"""diffusers' scheduler configuration, read from its own ``scheduler_config.json`` keys.

A model ships one scheduler config (for the reference model, a DDPMScheduler's). Sampling with
another scheduler converts it the way diffusers' ``SchedulerClass.from_config(config)`` does: the
keys the target scheduler's ``__init__`` accepts are taken, every other key is ignored, and missing
keys get the target's defaults (so a DDPM config gives DPM-Solver++ the same betas but its own
``linspace`` timestep spacing unless the config names one). Values this runtime does not implement
are refused with a message rather than silently sampled wrong.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import SchedulerConfigError

SCHEDULERS = ("ddpm", "ddim", "dpmpp-2m")
DIFFUSERS_CLASS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpmpp-2m": "DPMSolverMultistepScheduler"}

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

_COMMON = dict(
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
# What this runtime implements of DPM-Solver: the second-order multistep DPM-Solver++ (midpoint),
# which are also diffusers' defaults; other values of these keys are refused.
_DPM_FIXED = {
    "solver_order": 2,
    "algorithm_type": "dpmsolver++",
    "solver_type": "midpoint",
    "final_sigmas_type": "zero",
    "lambda_min_clipped": -math.inf,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "use_lu_lambdas": False,
    "use_flow_sigmas": False,
    "use_dynamic_shifting": False,
}
# Each scheduler's __init__ keys that change sampling, with diffusers' defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "ddpm": {**_COMMON, "variance_type": "fixed_small", "clip_sample": True, "clip_sample_range": 1.0},
    "ddim": {**_COMMON, "clip_sample": True, "clip_sample_range": 1.0, "set_alpha_to_one": True},
    "dpmpp-2m": {
        **_COMMON,
        "timestep_spacing": "linspace",
        "variance_type": None,
        "lower_order_final": True,
        "euler_at_final": False,
        **_DPM_FIXED,
    },
}


@dataclass(frozen=True)
class SchedulerConfig:
    """One scheduler's effective configuration (``from_dict`` fills the scheduler's own defaults)."""

    scheduler: str = "ddpm"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    prediction_type: str = "epsilon"
    thresholding: bool = False
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    # DDPM
    variance_type: str | None = "fixed_small"
    # DDPM, DDIM
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    # DDIM
    set_alpha_to_one: bool = True
    # DPM-Solver++
    lower_order_final: bool = True
    euler_at_final: bool = False

    def __post_init__(self):
        _choice("scheduler", self.scheduler, SCHEDULERS)
        _choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES, allow=self.trained_betas is not None)
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        if self.scheduler == "ddpm":
            _choice("variance_type", self.variance_type, VARIANCE_TYPES)
        if self.scheduler == "dpmpp-2m" and self.variance_type in ("learned", "learned_range"):
            raise SchedulerConfigError("learned variances need a model with twice the output channels; not supported")
        if self.thresholding:
            raise SchedulerConfigError(
                "scheduler config sets thresholding=true (dynamic thresholding), which this runtime does not "
                "implement; set it to false or pass --scheduler-config with a supported config"
            )
        if isinstance(self.num_train_timesteps, bool) or not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 1:
            raise SchedulerConfigError(f"num_train_timesteps must be a positive integer, got {self.num_train_timesteps!r}")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise SchedulerConfigError(
                f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is {self.num_train_timesteps}"
            )
        if not self.clip_sample_range > 0:
            raise SchedulerConfigError(f"clip_sample_range must be positive, got {self.clip_sample_range!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], scheduler: str = "ddpm") -> SchedulerConfig:
        """``raw`` (diffusers keys, any scheduler's) as ``scheduler`` would take it through ``from_config``."""
        if not isinstance(raw, dict):
            raise SchedulerConfigError("a scheduler config must be a JSON object")
        _choice("scheduler", scheduler, SCHEDULERS)
        defaults = DEFAULTS[scheduler]
        values = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}
        if scheduler == "dpmpp-2m":
            for key, want in _DPM_FIXED.items():
                if values[key] != want:
                    raise SchedulerConfigError(
                        f"scheduler config {key}={values[key]!r}: dpmpp-2m implements DPM-Solver++ 2M with {key}={want!r}"
                    )
        values = {k: v for k, v in values.items() if k not in _DPM_FIXED}
        if values.get("trained_betas") is not None:
            values["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
        return cls(scheduler=scheduler, **values)

    @classmethod
    def from_file(cls, path: str | Path, scheduler: str = "ddpm") -> SchedulerConfig:
        return cls.from_dict(read_config_file(path), scheduler)

    def to_dict(self) -> dict[str, Any]:
        """The effective config as diffusers keys, with ``_class_name``."""
        keys = DEFAULTS[self.scheduler]
        out = {k: v for k, v in asdict(self).items() if k in keys}
        if out["trained_betas"] is not None:
            out["trained_betas"] = list(out["trained_betas"])
        if self.scheduler == "dpmpp-2m":
            out.update({k: v for k, v in _DPM_FIXED.items() if k != "lambda_min_clipped"})
        return {"_class_name": DIFFUSERS_CLASS[self.scheduler], **out}


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchedulerConfigError(f"scheduler config {path} does not exist; pass the path of a diffusers scheduler_config.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchedulerConfigError(f"cannot read scheduler config {path}: {exc}; pass a valid scheduler_config.json") from None
    if not isinstance(raw, dict):
        raise SchedulerConfigError(f"scheduler config {path} is not a JSON object")
    return raw


def _choice(key: str, value: Any, allowed: tuple[str, ...], allow: bool = False) -> None:
    if not allow and value not in allowed:
        raise SchedulerConfigError(f"{key} {value!r} is not supported; use one of: {', '.join(allowed)}")
