"""Step-level (continuous) batching: many requests share every UNet call.

:class:`StepBatcher` runs one loop thread over a loaded :class:`~runtime.pipeline.Pipeline`. Callers
``submit`` requests (:class:`~runtime.requests.SampleRequest`) from any thread and get a
:class:`SampleFuture` of uint8 images.
Between two engine calls the loop retires finished and cancelled requests, fails those past their
deadline, admits waiting ones oldest first while their rows fit in ``max_batch``, and then advances
every admitted request by one step of its own sampler in one engine call (one timestep per row). This
is iteration-level scheduling as LLM servers do it (Orca, vLLM): a short request does not wait for a
long one to finish, and the engine's batch fills with whatever is in flight.

On ONNX Runtime (CPU) each image equals the same request sampled alone, bit for bit (see
:mod:`runtime.trajectory`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from .errors import InputError, QueueFullError, RequestCancelledError, RequestTimeoutError
from .pipeline import Pipeline
from .requests import SampleRequest
from .results import SampleResult, SamplerSettings
from .trajectory import ProgressFn, Trajectory, advance

__all__ = ["QueueFullError", "RequestCancelledError", "RequestTimeoutError", "SampleFuture", "StepBatcher"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8  # rows per engine call where the engine sets no limit (ONNX Runtime)


class SampleFuture(Future):
    """A :class:`concurrent.futures.Future` of one request's uint8 images [count, H, W, C], with the request
    and the sampler settings it samples with (defaults resolved), known from submission on."""

    def __init__(self, request: SampleRequest, settings: SamplerSettings, trajectory: Trajectory, pipeline: Pipeline):
        super().__init__()
        self.request = request
        self.settings = settings
        self.trajectory = trajectory
        self._pipeline = pipeline

    def sample_result(self, timeout: float | None = None) -> SampleResult:
        """The images with their request and settings (waits like :meth:`result`)."""
        return self._pipeline.result(self.request, self.result(timeout), self.settings)


@dataclass
class _Job:
    trajectory: Trajectory
    future: SampleFuture
    deadline: float | None


@dataclass
class BatcherStats:
    engine_calls: int = 0
    rows: int = 0  # rows run, summed over engine calls
    completed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0

    @property
    def mean_batch(self) -> float:
        return self.rows / self.engine_calls if self.engine_calls else 0.0


class StepBatcher:
    """Shares each engine call among all requests in flight.

    >>> with StepBatcher(pipe, max_batch=8) as batcher:            # doctest: +SKIP
    ...     fut = batcher.submit(scheduler="ddim", steps=50, seed=3)
    ...     images = fut.result()                                   # uint8 [1, H, W, C]

    ``max_batch``: rows per engine call (default: the engine profile's max for a TensorRT plan, else
    8); a request's rows (its ``count``, twice that when guided) may not exceed it. ``max_queue``: requests waiting for admission
    before ``submit`` refuses with :class:`QueueFullError`. A request's ``timeout_s`` (seconds from
    submission): past it the request fails with :class:`RequestTimeoutError`. ``on_call(rows, seconds)``
    is called from the loop thread after every engine call and its steps (for metrics; keep it quick).
    """

    def __init__(self, pipeline: Pipeline, max_batch: int | None = None, max_queue: int = 64,
                 on_call: Callable[[int, float], None] | None = None):
        profile = pipeline.runner.profile
        limit = profile.max if profile is not None else None
        if max_batch is None:
            max_batch = limit or DEFAULT_MAX_BATCH
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise InputError(f"max_batch must be a whole number of at least 1, got {max_batch!r}")
        if limit is not None and max_batch > limit:
            raise InputError(f"max_batch {max_batch} exceeds the engine profile's max batch {limit}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0:
            raise InputError(f"max_queue must be a whole number >= 0, got {max_queue!r}")
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_call = on_call
        self.stats = BatcherStats()
        self._waiting: collections.deque[_Job] = collections.deque()
        self._active: list[_Job] = []
        self._cond = threading.Condition()
        self._closing = False
        self._drain = True
        self._noise_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher-noise")
        self._thread = threading.Thread(target=self._loop, name="step-batcher", daemon=True)
        self._thread.start()

    # public ------------------------------------------------------------------------------------
    def submit(self, request: SampleRequest | None = None, /, progress: ProgressFn | None = None,
               preview_every: int = 0, **fields: Any) -> SampleFuture:
        """Queues one request (a :class:`SampleRequest`, or its fields as keywords, as :meth:`Pipeline.denoise`
        takes them; ``timeout`` is ``timeout_s``'s alias) and returns a Future of its uint8 images
        [count, H, W, C]. Bad requests raise :class:`InputError` here, before anything is queued.
        ``preview_every``: keep the predicted x0 every this many steps in the trajectory's ``preview``
        (for ``progress`` to read)."""
        request = SampleRequest.create(request, **fields)
        trajectory = self.pipeline.trajectory(request, progress)
        trajectory.preview_every = preview_every
        if trajectory.rows > self.max_batch:
            guided = " (guidance takes two rows per image)" if trajectory.guidance.active else ""
            raise InputError(
                f"the request needs {trajectory.rows} rows of a UNet call{guided}, more than this batcher's max_batch "
                f"{self.max_batch}; split the request"
            )
        future = SampleFuture(request, self.pipeline.settings(request), trajectory, self.pipeline)
        job = _Job(trajectory, future, None if request.timeout_s is None else time.monotonic() + request.timeout_s)
        with self._cond:
            if self._closing:
                raise RequestCancelledError("the batcher is closed; create a new one")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the queue is full ({self.max_queue} requests waiting); retry later")
            self._waiting.append(job)
            self._cond.notify()
        return job.future

    def cancel(self, future: Future) -> bool:
        """Cancels a request: a waiting one at once, a running one at the next step boundary (its rows
        leave the batch; no other request is affected). False if it had already finished."""
        if future.done():
            return False
        if future.cancel():  # still waiting: the loop drops it on sight
            with self._cond:
                self._cond.notify()
            return True
        if not isinstance(future, SampleFuture):
            return False
        future.trajectory.cancelled = True
        return True

    @property
    def queue_length(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def alive(self) -> bool:
        """Whether the loop thread runs (False after close, or if it died)."""
        return self._thread.is_alive()

    @property
    def in_flight(self) -> int:
        with self._cond:
            return len(self._active)

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stops taking requests. ``drain``: finish every queued and running one first; otherwise they fail
        with :class:`RequestCancelledError` at the next step boundary."""
        with self._cond:
            self._closing = True
            self._drain = self._drain and drain
            self._cond.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._noise_pool.shutdown(wait=True)

    def __enter__(self) -> StepBatcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close(drain=exc[0] is None)

    # the loop ----------------------------------------------------------------------------------
    def _finish(self, job: _Job, error: BaseException | None = None) -> None:
        if error is None:
            try:
                job.future.set_result(job.trajectory.uint8_images())
                self.stats.completed += 1
            except Exception as exc:  # pragma: no cover - conversion of a finite sample cannot fail
                job.future.set_exception(exc)
            return
        if isinstance(error, RequestCancelledError):
            self.stats.cancelled += 1
        elif isinstance(error, RequestTimeoutError):
            self.stats.timed_out += 1
        else:
            self.stats.failed += 1
        if not job.future.done():
            job.future.set_exception(error)

    def _schedule(self) -> list[_Job] | None:
        """Under the lock: retire, expire, admit; the jobs to advance now, or None to stop."""
        while True:
            now = time.monotonic()
            stop_all = self._closing and not self._drain
            kept: list[_Job] = []
            for job in self._active:
                if job.trajectory.cancelled or stop_all:
                    self._finish(job, RequestCancelledError("the request was cancelled"))
                elif job.deadline is not None and now >= job.deadline:
                    self._finish(job, RequestTimeoutError(
                        f"the request did not finish within its timeout ({job.trajectory.steps_done}/"
                        f"{job.trajectory.num_steps} steps done)"))
                else:
                    kept.append(job)
            self._active = kept
            rows = sum(j.trajectory.rows for j in self._active)
            while self._waiting:
                job = self._waiting[0]
                if stop_all:
                    self._waiting.popleft()
                    if job.future.set_running_or_notify_cancel():
                        self._finish(job, RequestCancelledError("the batcher was closed before the request ran"))
                    continue
                if job.future.cancelled():
                    self._waiting.popleft()
                    self.stats.cancelled += 1
                    continue
                if job.deadline is not None and now >= job.deadline:
                    self._waiting.popleft()
                    if job.future.set_running_or_notify_cancel():
                        self._finish(job, RequestTimeoutError("the request timed out while queued; the service is busy"))
                    continue
                if rows + job.trajectory.rows > self.max_batch:
                    break  # oldest first: a younger request does not overtake a waiting one
                self._waiting.popleft()
                if not job.future.set_running_or_notify_cancel():
                    self.stats.cancelled += 1
                    continue
                self._active.append(job)
                rows += job.trajectory.rows
            if self._active:
                return list(self._active)
            if self._closing:
                return None
            deadlines = [j.deadline for j in self._waiting if j.deadline is not None]
            wait = max(0.0, min(deadlines) - now) if deadlines else None
            self._cond.wait(wait)

    def _loop(self) -> None:
        while True:
            with self._cond:
                jobs = self._schedule()
            if jobs is None:
                return
            trajectories = [j.trajectory for j in jobs]
            calls = len(self.pipeline.denoiser.groups(trajectories))
            started = time.perf_counter()
            try:
                failed = advance(self.pipeline.denoiser, trajectories, self._noise_pool)
            except Exception as exc:  # the engine call failed: every row in it fails
                log.warning("engine call failed for %d request(s): %s", len(jobs), exc)
                failed = [(t, exc) for t in trajectories]
            rows = sum(t.rows for t in trajectories)
            self.stats.engine_calls += calls
            self.stats.rows += rows
            if self.on_call is not None:
                try:
                    self.on_call(rows, time.perf_counter() - started)
                except Exception as exc:  # metrics never stop sampling
                    log.warning("on_call callback failed: %s", exc)
            errors = {id(t): e for t, e in failed}
            with self._cond:
                for job in jobs:
                    error = errors.get(id(job.trajectory))
                    if error is not None or job.trajectory.done:
                        self._active.remove(job)
                        self._finish(job, error)
