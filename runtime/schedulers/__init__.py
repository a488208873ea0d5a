"""Schedulers as precomputed numpy tables and pure step functions."""

from .config import SchedulerConfig
from .ddpm import DDPMTable, ddpm_step, ddpm_table

__all__ = ["SchedulerConfig", "DDPMTable", "ddpm_step", "ddpm_table"]
