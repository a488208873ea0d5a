"""Feature reuse (DeepCache): full UNet steps that keep a deep feature, shallow steps that reuse it.

``python -m export.deepcache`` writes two graphs beside ``unet.onnx``: the *full* graph (the UNet, which
also outputs ``deep_feature``, the input of an outer up block) and the *shallow* graph (the outer blocks
only, fed that feature). A request's **cache schedule** names the steps that run the full graph: every
``cache_interval``-th step (0, N, 2N, ...), or the steps listed in ``cache_full_steps`` (a non-uniform
schedule); the other steps run the shallow graph with the feature of the last full step. Step 0 is
always full. A trajectory keeps its own rows' feature (:class:`runtime.trajectory.Trajectory`), so
requests with and without a schedule, at any steps, share engine calls: the batcher groups the rows
of one step by the graph they need (:meth:`runtime.denoiser.Denoiser.groups`).

The graphs serve the engine they were built for: ``unet.onnx`` (``export.deepcache``), ``unet.fp16.onnx``
(``export.fp16`` converts and gates them with the UNet), ``unet.plan`` (``export.trt`` builds their
plans) and ``unet.int8.onnx`` (``export.int8`` quantizes and gates them with the UNet); an OpenVINO engine
converted from ``unet.onnx`` runs the FP32 graphs at its own precision, BF16 only where ``export.bf16`` gated them
with it. A request without a schedule runs the plain engine, exactly as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InputError, ManifestError
from .io_spec import UNetIO
from .manifest import ArtifactEntry, Manifest

ROLES = ("full", "shallow")
FULL_NAME, SHALLOW_NAME = "unet.cache-full.onnx", "unet.cache-shallow.onnx"  # export.deepcache's (FP32)
BUILD_KEY = "feature_cache"  # the manifest entry's build key describing a feature-reuse graph
REUSE_KEY = "reuse"  # an OpenVINO engine entry's build key: the FP32 graphs gated at its precision, by sha256
HOW_TO_BUILD = "build them with `python -m export.deepcache --model MODEL --engines DIR`"


@dataclass(frozen=True)
class CacheGraph:
    """One feature-reuse graph as its manifest entry describes it."""

    role: str  # "full" or "shallow"
    branch: int  # where the shallow graph cuts (0: the outermost blocks)
    feature_shape: tuple[int, ...]  # deep_feature per row: [C, H, W]
    engine: str  # the engine it serves (unet.onnx; unet.fp16.onnx, unet.plan for the converted graphs)

    @staticmethod
    def file_name(role: str, suffix: str = ".onnx") -> str:
        """The graph's file name: ``unet.cache-full.onnx`` (``suffix`` ".fp16.onnx", ".plan": the converted ones)."""
        return f"unet.cache-{role}{suffix}"

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


@dataclass(frozen=True)
class GraphPair:
    """The full and shallow graphs that serve one engine: their artifact names, and how to run them."""

    names: dict[str, str]  # role -> artifact file name
    graph: CacheGraph  # the full graph's record (branch, feature shape, engine)
    like: ArtifactEntry | None = None  # run them with this entry's backend and precision (None: their own)

    def ios(self, io: UNetIO) -> dict[str, UNetIO]:
        """Each graph's I/O declaration (the engine's ``io`` with the deep feature), by role."""
        return {role: io.with_feature(role, self.graph.feature_shape) for role in ROLES}


def graphs_for(manifest: Manifest, engine_name: str, engine: ArtifactEntry) -> GraphPair | None:
    """The feature-reuse graphs that serve the engine ``engine_name`` (None: the folder has none). Graphs serve
    the engine they were built for (``export.deepcache``: unet.onnx; ``export.fp16``: unet.fp16.onnx;
    ``export.int8``: unet.int8.onnx; ``export.trt``: unet.plan); an OpenVINO engine converted from unet.onnx runs
    unet.onnx's graphs at its own precision (below FP32: the graphs its entry records as gated with it). Graphs
    built for other engines only are refused in one line."""
    pairs: dict[str, dict[str, tuple[str, CacheGraph]]] = {}
    for name, entry in manifest.artifacts.items():
        if BUILD_KEY in entry.build:
            graph = CacheGraph.from_entry(entry, f"manifest {manifest.path}, artifact {name!r}")
            pairs.setdefault(graph.engine, {})[graph.role] = (name, graph)
    pairs = {k: v for k, v in pairs.items() if set(v) == set(ROLES)}
    if not pairs:
        return None
    like = None
    chosen = pairs.get(engine_name)
    if chosen is None and engine.kind == "openvino":
        chosen = next((pair for served, pair in pairs.items() if served in manifest.artifacts
                       and manifest.artifacts[served].sha256 == engine.source_sha256
                       and manifest.artifacts[served].precision == "fp32"), None)
        like = replace(engine, profile=None)
        if chosen is not None and engine.precision != "fp32":
            gated = (engine.build.get(REUSE_KEY) or {}).get("graphs") or {}
            if {name: manifest.artifacts[name].sha256 for name, _ in chosen.values()} != gated:
                how = (f"run `python -m export.bf16 --engines {manifest.path.parent}` again (it gates them with the "
                       "engine)" if engine.precision == "bf16" else "load unet.int8.onnx for cache schedules (export.int8 "
                       "quantizes the graphs with it)")
                raise InputError(f"the feature-reuse graphs in {manifest.path.parent} were not gated at "
                                 f"{engine.precision} with {engine_name}; {how}")
    if chosen is None:
        raise InputError(f"the feature-reuse graphs in {manifest.path.parent} serve {', '.join(sorted(pairs))}, not "
                         f"{engine_name}; load one of those for cache schedules, or build them for it (export.fp16 and "
                         "export.trt convert the graphs with the engine)")
    (full_name, full), (shallow_name, shallow) = chosen["full"], chosen["shallow"]
    if (full.branch, full.feature_shape) != (shallow.branch, shallow.feature_shape):
        raise ManifestError(f"the feature-reuse graphs in {manifest.path.parent} were built for different branches; "
                            f"{HOW_TO_BUILD}")
    return GraphPair({"full": full_name, "shallow": shallow_name}, full, like)


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


class ReuseGraphs:
    """The two graphs' runners for one engine, opened on first use (a request with a schedule)."""

    def __init__(self, pair: GraphPair | None, open_graph: Callable[[str, str, ArtifactEntry | None], Any],
                 refusal: InputError | None = None):
        """``open_graph(artifact name, role, like)`` opens one graph as an active runner (the pipeline's:
        runtime.engine.open_engine with its options). Without a ``pair``, :meth:`open` raises ``refusal`` (why the
        folder's graphs cannot serve this engine)."""
        self.pair = pair
        self.refusal = refusal
        self._open_graph = open_graph
        self.runners: dict[str, Any] = {}
        self._lock = threading.Lock()

    def open(self) -> dict[str, Any]:
        """The active runners by role (opened once; thread-safe)."""
        if self.pair is None:
            raise self.refusal
        with self._lock:
            if not self.runners:
                opened = {}
                try:
                    for role in ROLES:
                        opened[role] = self._open_graph(self.pair.names[role], role, self.pair.like)
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
