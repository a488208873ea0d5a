"""Feature reuse (DeepCache): full UNet steps that keep a deep feature, shallow steps that reuse it.

``python -m export.deepcache`` writes two graphs beside ``unet.onnx``: the *full* graph (the UNet, which
also outputs ``deep_feature``, the input of an outer up block) and the *shallow* graph (the outer blocks
only, fed that feature). A request's **cache schedule** names the steps that run the full graph: every
``cache_interval``-th step (0, N, 2N, ...), or the steps listed in ``cache_full_steps`` (a non-uniform
schedule); the other steps run the shallow graph with the feature of the last full step. Step 0 is
always full. A trajectory keeps its own rows' feature (:class:`runtime.trajectory.Trajectory`), so
requests with and without a schedule, at any steps, share engine calls: the batcher groups the rows
of one step by the graph they need (:func:`runtime.trajectory.call_groups`).

The graphs run on the backend and precision of the engine they serve: ONNX Runtime beside
``unet.onnx``, OpenVINO (reading the ONNX graphs) beside ``unet.ov.xml``. A request without a schedule
runs the plain engine, exactly as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InputError, ManifestError
from .manifest import ArtifactEntry, Manifest

ROLES = ("full", "shallow")
FULL_NAME, SHALLOW_NAME = "unet.cache-full.onnx", "unet.cache-shallow.onnx"
BUILD_KEY = "feature_cache"  # the manifest entry's build key describing a feature-reuse graph
SERVED_KINDS = ("onnx", "openvino")  # the engines whose backend runs the (FP32 ONNX) graphs
HOW_TO_BUILD = "build them with `python -m export.deepcache --model MODEL --engines DIR`"


@dataclass(frozen=True)
class CacheGraph:
    """One feature-reuse graph as its manifest entry describes it."""

    role: str  # "full" or "shallow"
    branch: int  # where the shallow graph cuts (0: the outermost blocks)
    feature_shape: tuple[int, ...]  # deep_feature per row: [C, H, W]
    engine: str  # the engine it was split from (unet.onnx)

    @staticmethod
    def file_name(role: str) -> str:
        return FULL_NAME if role == "full" else SHALLOW_NAME

    def to_build(self) -> dict[str, Any]:
        return {BUILD_KEY: {"role": self.role, "branch": self.branch, "feature_shape": list(self.feature_shape),
                            "engine": self.engine}}

    @classmethod
    def from_entry(cls, entry: ArtifactEntry, where: str) -> CacheGraph:
        raw = entry.build.get(BUILD_KEY)
        try:
            graph = cls(raw["role"], int(raw["branch"]), tuple(int(d) for d in raw["feature_shape"]), str(raw["engine"]))
            if graph.role not in ROLES or len(graph.feature_shape) != 3:
                raise ValueError(graph)
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"{where} has a malformed {BUILD_KEY} record; {HOW_TO_BUILD}") from None
        return graph


def graphs_for(manifest: Manifest, engine: ArtifactEntry) -> dict[str, tuple[CacheGraph, ArtifactEntry]] | None:
    """The full and shallow graphs that serve ``engine`` (None: the folder has none for it; refused in one line
    when the engine's backend or precision cannot run them)."""
    found = {}
    for name, entry in manifest.artifacts.items():
        if BUILD_KEY in entry.build:
            graph = CacheGraph.from_entry(entry, f"manifest {manifest.path}, artifact {name!r}")
            found[graph.role] = (graph, entry)
    if set(found) != set(ROLES):
        return None
    source = manifest.artifacts.get(found["full"][0].engine)
    if source is None or engine.kind not in SERVED_KINDS or engine.precision == "fp16" or not (
            engine.sha256 == source.sha256 or engine.source_sha256 == source.sha256):
        raise InputError(f"the feature-reuse graphs in {manifest.path.parent} serve {found['full'][0].engine} and its "
                         f"OpenVINO form, not this {engine.kind} {engine.precision} engine; load one of those for cache "
                         "schedules")
    if found["full"][0].branch != found["shallow"][0].branch or found["full"][0].feature_shape != found["shallow"][0].feature_shape:
        raise ManifestError(f"the feature-reuse graphs in {manifest.path.parent} were built for different branches; "
                            f"{HOW_TO_BUILD}")
    return found


def full_steps(num_steps: int, interval: int | None, steps: Sequence[int] | None) -> frozenset[int] | None:
    """The step indices that run the full graph under a request's schedule (None: every step runs the plain
    engine, no feature reuse)."""
    if steps is not None:
        if steps[-1] >= num_steps:
            raise InputError(f"cache_full_steps names step {steps[-1]}, but the request has {num_steps} steps "
                             f"(indices 0..{num_steps - 1})")
        chosen = frozenset((0, *steps))
    elif interval is not None and interval > 1:
        chosen = frozenset(range(0, num_steps, interval))
    else:
        return None
    return None if len(chosen) == num_steps else chosen


class FeatureCache:
    """The two graphs' runners for one engine, opened on first use (a request with a schedule)."""

    def __init__(self, folder: Path, graphs: dict[str, tuple[CacheGraph, ArtifactEntry]], engine: ArtifactEntry,
                 open_graph):
        """``open_graph(path, role, like)`` opens one graph (runtime.engine.open_engine with the pipeline's options)."""
        self.folder = folder
        self.graphs = graphs
        self.engine = engine
        self._open_graph = open_graph
        self.runners: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def branch(self) -> int:
        return self.graphs["full"][0].branch

    def open(self) -> dict[str, Any]:
        """The active runners by role (opened once; thread-safe)."""
        with self._lock:
            if not self.runners:
                like = None if self.engine.kind == "onnx" else replace(self.engine, profile=None)
                opened = {}
                try:
                    for role in ROLES:
                        opened[role] = self._open_graph(self.folder / CacheGraph.file_name(role), role, like)
                except BaseException:
                    for runner in opened.values():
                        runner.deactivate()
                    raise
                self.runners = opened
            return self.runners

    def close(self) -> None:
        with self._lock:
            for runner in self.runners.values():
                runner.deactivate()
            self.runners = {}


def no_graphs_error(folder: Path) -> InputError:
    return InputError(f"a cache schedule needs the feature-reuse graphs, and {folder} has none for this engine; "
                      f"{HOW_TO_BUILD}")
