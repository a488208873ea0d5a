"""Deprecated name of :mod:`runtime.reuse` (feature reuse is "reuse"; "cache" is the per-machine engine cache)."""

import warnings

from .reuse import *  # noqa: F401,F403
from .reuse import ReuseGraphs

FeatureCache = ReuseGraphs

warnings.warn("runtime.feature_cache is deprecated: import runtime.reuse (FeatureCache is runtime.reuse.ReuseGraphs)",
              DeprecationWarning, stacklevel=2)
