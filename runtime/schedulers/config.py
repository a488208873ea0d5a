"""diffusers' scheduler configuration, read from its own ``scheduler_config.json`` keys.

Keys and defaults follow ``diffusers.DDPMScheduler.__init__``. Keys diffusers writes but that do not
change sampling (``_class_name``, ``_diffusers_version``) and keys of other schedulers are ignored,
as diffusers' ``from_config`` ignores them. Values this runtime does not implement are refused with
a message rather than silently sampled wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import SchedulerConfigError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    trained_betas: tuple[float, ...] | None = None
    variance_type: str = "fixed_small"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    prediction_type: str = "epsilon"
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    rescale_betas_zero_snr: bool = False
    thresholding: bool = False

    def __post_init__(self):
        _choice("beta_schedule", self.beta_schedule, BETA_SCHEDULES, allow=self.trained_betas is not None)
        _choice("variance_type", self.variance_type, VARIANCE_TYPES)
        _choice("prediction_type", self.prediction_type, PREDICTION_TYPES)
        _choice("timestep_spacing", self.timestep_spacing, TIMESTEP_SPACINGS)
        if self.thresholding:
            raise SchedulerConfigError(
                "scheduler config sets thresholding=true (dynamic thresholding), which this runtime does not "
                "implement; set it to false or pass --scheduler-config with a supported config"
            )
        if not isinstance(self.num_train_timesteps, int) or self.num_train_timesteps < 1:
            raise SchedulerConfigError(f"num_train_timesteps must be a positive integer, got {self.num_train_timesteps!r}")
        if self.trained_betas is not None and len(self.trained_betas) != self.num_train_timesteps:
            raise SchedulerConfigError(
                f"trained_betas has {len(self.trained_betas)} values but num_train_timesteps is {self.num_train_timesteps}"
            )
        if not self.clip_sample_range > 0:
            raise SchedulerConfigError(f"clip_sample_range must be positive, got {self.clip_sample_range!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "SchedulerConfig":
        if not isinstance(raw, dict):
            raise SchedulerConfigError("a scheduler config must be a JSON object")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        if values.get("trained_betas") is not None:
            values["trained_betas"] = tuple(float(b) for b in values["trained_betas"])
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - dataclass keyword errors
            raise SchedulerConfigError(f"bad scheduler config: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "SchedulerConfig":
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise SchedulerConfigError(f"scheduler config {path} does not exist; pass the path of a diffusers scheduler_config.json") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchedulerConfigError(f"cannot read scheduler config {path}: {exc}; pass a valid scheduler_config.json") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["trained_betas"] is not None:
            out["trained_betas"] = list(out["trained_betas"])
        return out


def _choice(key: str, value: Any, allowed: tuple[str, ...], allow: bool = False) -> None:
    if not allow and value not in allowed:
        raise SchedulerConfigError(
            f"scheduler config {key}={value!r} is not supported; use one of: {', '.join(allowed)}"
        )
