"""Inference backends behind one interface (:class:`~runtime.runners.base.Runner`)."""

from .base import Runner

__all__ = ["Runner"]
