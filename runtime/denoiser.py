"""The model side of a step, in one place: from the rows of the trajectories that share a step to the
prediction each one's sampler step takes.

After k-diffusion's denoiser wrappers: one :class:`Denoiser` per engine owns everything between a
trajectory's state and its model output, so a per-step feature (guidance rescale, say) is written here
and nowhere else:

* the engine rows of a step (:meth:`Denoiser.rows`): the sample scaled where the sampler scales the model
  input, each image twice when guided, the timestep of the sampler's table per row in the engine's feed
  (:meth:`runtime.io_spec.UNetIO.timestep_feed`), the conditioning rows (made once per request by
  :func:`runtime.conditioning.request_rows`), and a shallow graph's deep feature;
* which graph runs (:meth:`Denoiser.graph`): the plain engine, or feature reuse's full or shallow graph
  (:mod:`runtime.reuse`) per the trajectory's cache schedule, opened on the first schedule;
* grouping (:meth:`Denoiser.groups`): rows that need another graph or whose conditioning differs in shape
  (token counts on a dynamic sequence axis) cannot be concatenated, one call per graph and shape;
* after the call (:meth:`Denoiser.predict`): each trajectory's rows split off, the deep feature kept,
  guidance combined (:class:`runtime.guidance.Guidance`, one value per request), and a model's variance
  channels trimmed where the sampler does not use them.

A :class:`runtime.trajectory.Trajectory` keeps a request's state and takes its sampler step with the
prediction; :func:`runtime.trajectory.advance` and the batcher gather trajectories and call this.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .reuse import ReuseGraphs, full_steps, no_graphs_error
from .io_spec import DEEP_FEATURE, NOISE_PRED, SAMPLE, TIMESTEP
from .runners.base import Runner

if TYPE_CHECKING:
    from .trajectory import Trajectory

PLAIN, FULL, SHALLOW = "plain", "full", "shallow"  # the graphs a step can run


def _gather(parts: Sequence[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


class Denoiser:
    """One engine's model side (``runner``: the active engine; ``reuse``: its feature-reuse graphs, if any)."""

    def __init__(self, runner: Runner, reuse: ReuseGraphs | None = None):
        self.runner = runner
        self.io = io = runner.io
        self.reuse = reuse
        self.conditioning_names = tuple(n for n in io.input_names if n not in (SAMPLE, TIMESTEP, DEEP_FEATURE))

    # the engine call ---------------------------------------------------------------------------------
    def __call__(self, x: np.ndarray, t: np.ndarray, conditioning: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The plain engine's noise prediction for rows ``x`` at model timesteps ``t`` (one per row)."""
        return self.outputs(x, t, conditioning)[NOISE_PRED]

    def outputs(self, x: np.ndarray, t: np.ndarray, inputs: Mapping[str, np.ndarray] | None = None,
                graph: str = PLAIN) -> dict[str, np.ndarray]:
        """Every output of ``graph`` (the noise prediction, and a full graph's deep feature); ``inputs``: the
        others besides sample and timestep (conditioning, a shallow graph's deep feature)."""
        runner = self.runner if graph == PLAIN else self._graphs()[graph]
        return runner.infer({SAMPLE: x, TIMESTEP: self.io.timestep_feed(t), **(inputs or {})})

    def _graphs(self) -> dict[str, Runner]:
        if self.reuse is None:
            raise no_graphs_error(self.runner.path.parent)
        return self.reuse.open()

    # a request's schedule ----------------------------------------------------------------------------
    def schedule(self, num_steps: int, interval: int | None, steps: Sequence[int] | None) -> frozenset[int] | None:
        """The steps that run the full graph under a request's cache schedule (None: every step runs the plain
        engine); refuses a schedule this engine has no graphs for, and opens them on first use."""
        chosen = full_steps(num_steps, interval, steps)
        if chosen is not None:
            self._graphs()
        return chosen

    # a step ------------------------------------------------------------------------------------------
    @staticmethod
    def graph(tr: Trajectory) -> str:
        """The graph ``tr``'s current step runs."""
        if tr.full_steps is None:
            return PLAIN
        return FULL if tr.feature is None or tr.step_index in tr.full_steps else SHALLOW

    def groups(self, trajectories: Sequence[Trajectory]) -> list[list[Trajectory]]:
        """The trajectories that can share one engine call: all of them, unless they need different graphs or
        their conditioning rows differ in shape; then one group per graph and shape, in first-seen order."""
        groups: dict[tuple, list[Trajectory]] = {}
        for tr in trajectories:
            key = (self.graph(tr), *((name, value.shape[1:]) for name, value in sorted(tr.conditioning.items())))
            groups.setdefault(key, []).append(tr)
        return list(groups.values())

    def rows(self, tr: Trajectory) -> tuple[np.ndarray, np.ndarray]:
        """(sample rows, model timestep per row) of ``tr``'s current step: the sample divided where the sampler
        scales the model input, each image twice (unconditional rows first) when guided."""
        table, i = tr.table, tr.step_index
        divisor = table.model_input_divisor(i)
        x = tr.x if divisor is None else tr.x / divisor
        if tr.guidance.active:
            x = np.concatenate([x, x])
        return x, np.full(len(x), table.model_timestep(i), dtype=np.float32)

    def predict(self, group: Sequence[Trajectory]) -> list[np.ndarray]:
        """One engine call for the rows of ``group`` (one of :meth:`groups`): each trajectory's prediction for
        its sampler step, in order (guidance combined, variance channels trimmed where unused); a full graph's
        deep feature is kept in each trajectory."""
        graph = self.graph(group[0])
        if any(self.graph(tr) != graph for tr in group):
            raise ValueError("trajectories that need different graphs cannot share an engine call; use groups()")
        rows = [self.rows(tr) for tr in group]
        inputs = {name: _gather([tr.conditioning[name] for tr in group]) for name in self.conditioning_names}
        if graph == SHALLOW:
            inputs[DEEP_FEATURE] = _gather([tr.feature for tr in group])
        outputs = self.outputs(_gather([x for x, _ in rows]), _gather([t for _, t in rows]), inputs, graph)
        eps, features = outputs[NOISE_PRED], outputs.get(DEEP_FEATURE)
        predictions, start = [], 0
        for tr in group:
            end = start + tr.rows
            if features is not None:
                tr.feature = features[start:end].copy()  # its own: the batch's array is not kept alive
            prediction = tr.guidance.combine(eps[start:end])
            if prediction.shape[1] != tr.shape[1] and not tr.table.learned_variance:
                prediction = prediction[:, :tr.shape[1]]  # the prediction, without the model's variance
            predictions.append(prediction)
            start = end
        return predictions
