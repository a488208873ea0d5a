"""``python -m bench.serving --mode quick|full``: a stream of requests through three ways of serving it.

Poisson arrivals (seeded) at two loads, each request one image with its own sampler, step count and seed, sent to
(a) one request at a time, (b) static batching (wait up to a window for rows, then run that batch to
its end), (c) the StepBatcher (step-level batching). Throughput, latency percentiles, engine calls and
rows per call, all in one run on this machine. The same stream is also sent to a *simulated* GPU
engine whose call takes ``a + b * rows`` ms (a and b fitted to diffusers/torch.compile FP16 on an
NVIDIA H200, ``docs/gpu.md``), where batching pays; those rows are labelled simulated. Writes
``docs/bench-serving-MODE.md``.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import machine
from runtime.cli import require, run

ROOT = Path(__file__).resolve().parents[1]
MIX = [  # (scheduler, steps): what a service sees from different clients
    ("ddim", 10), ("ddim", 20), ("dpmpp-2m", 10), ("dpmpp-2m", 20), ("ddpm", 30),
]
MODES = {
    "quick": {"requests": 40, "max_batch": 8, "loads": (0.9, 3.0)},
    "full": {"requests": 8, "max_batch": 4, "loads": (0.9, 3.0), "steps_scale": 0.25},
}
STATIC_WINDOW_S = 0.05


def make_stream(n: int, mean_steps_time: float, load: float, steps_scale: float, seed: int = 0):
    """(arrival offsets in s, requests): Poisson arrivals at ``load`` times one-at-a-time capacity."""
    rng = np.random.default_rng(seed)
    rate = load / mean_steps_time
    arrivals = np.cumsum(rng.exponential(1 / rate, n))
    kinds = rng.integers(0, len(MIX), n)
    requests = [
        dict(scheduler=MIX[k][0], steps=max(2, int(MIX[k][1] * steps_scale)), seed=int(i), noise="numpy")
        for i, k in enumerate(kinds)
    ]
    return arrivals - arrivals[0], requests


class Recorder:
    def __init__(self, n: int):
        self.arrived = [0.0] * n
        self.finished = [0.0] * n
        self.calls = 0
        self.rows = 0

    def summary(self) -> dict:
        lat = np.array(self.finished) - np.array(self.arrived)
        span = max(self.finished) - min(self.arrived)
        return {
            "throughput": len(lat) / span,
            "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)),
            "calls": self.calls,
            "mean_batch": self.rows / self.calls if self.calls else 0.0,
        }


def counting(pipe, rec: Recorder) -> None:
    """Counts engine calls and rows by wrapping the pipeline's runner."""
    runner = pipe.denoiser.runner
    infer = runner.infer

    def wrapped(feed):
        rec.calls += 1
        rec.rows += next(iter(feed.values())).shape[0]
        return infer(feed)

    runner.infer = wrapped


def feed_arrivals(arrivals, on_arrival: Callable[[int, float], None]) -> threading.Thread:
    def run():
        start = time.perf_counter()
        for i, offset in enumerate(arrivals):
            delay = start + offset - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            on_arrival(i, time.perf_counter())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def queued_arrivals(pipe, arrivals, count: int) -> tuple[Recorder, queue.Queue]:
    """A recorder counting the pipeline's engine calls, and a queue the requests' indices arrive in, on time."""
    rec = Recorder(count)
    counting(pipe, rec)
    q: queue.Queue = queue.Queue()

    def arrive(i, now):
        rec.arrived[i] = now
        q.put(i)

    feed_arrivals(arrivals, arrive)
    return rec, q


def serve_one_at_a_time(pipe, arrivals, requests, max_batch) -> Recorder:
    rec, q = queued_arrivals(pipe, arrivals, len(requests))
    for _ in requests:
        i = q.get()
        pipe.denoise(**requests[i])
        rec.finished[i] = time.perf_counter()
    return rec


def serve_static(pipe, arrivals, requests, max_batch) -> Recorder:
    from runtime.trajectory import advance

    rec, q = queued_arrivals(pipe, arrivals, len(requests))
    done = 0
    with ThreadPoolExecutor(1) as pool:
        while done < len(requests):
            group = [q.get()]
            deadline = time.perf_counter() + STATIC_WINDOW_S
            while len(group) < max_batch:
                try:
                    group.append(q.get(timeout=max(0.0, deadline - time.perf_counter())))
                except queue.Empty:
                    break
            active = {i: pipe.trajectory(**requests[i]) for i in group}
            while active:
                advance(pipe.denoiser, list(active.values()), pool)
                for i in [i for i, t in active.items() if t.done]:
                    rec.finished[i] = time.perf_counter()
                    del active[i]
            done += len(group)
    return rec


def serve_step_batcher(pipe, arrivals, requests, max_batch) -> Recorder:
    from runtime.batching import StepBatcher

    rec = Recorder(len(requests))
    counting(pipe, rec)
    batcher = StepBatcher(pipe, max_batch=max_batch, max_queue=len(requests))
    futures = [None] * len(requests)

    def arrive(i, now):
        rec.arrived[i] = now
        fut = batcher.submit(**requests[i])
        fut.add_done_callback(lambda f, i=i: rec.finished.__setitem__(i, time.perf_counter()))
        futures[i] = fut

    feed_arrivals(arrivals, arrive).join()
    for fut in futures:
        fut.result()
    batcher.close()
    return rec


POLICIES = {
    "one at a time": serve_one_at_a_time,
    "static batching": serve_static,
    "StepBatcher": serve_step_batcher,
}


def simulated_pipeline(like, a_ms: float, b_ms: float):
    """A Pipeline over a runner that sleeps a + b * rows ms and returns seeded noise (a simulated GPU)."""
    from runtime.pipeline import Pipeline
    from runtime.runners.base import Runner

    class SimulatedRunner(Runner):
        name = "simulated"

        def _activate(self):
            pass

        def _deactivate(self):
            pass

        def _infer(self, feed):
            x = feed["sample"]
            time.sleep((a_ms + b_ms * x.shape[0]) / 1e3)
            return {"noise_pred": np.tanh(x) * np.float32(0.5)}

    runner = SimulatedRunner("simulated", like.runner.io).activate()
    return Pipeline(runner, like.scheduler_config)


def run_all(make_pipe, arrivals, requests, max_batch) -> dict:
    out = {}
    for name, policy in POLICIES.items():
        pipe = make_pipe()
        try:
            out[name] = policy(pipe, arrivals, requests, max_batch).summary()
        finally:
            pipe.close()
        print(f"  {name:16s} {json.dumps({k: round(v, 4) for k, v in out[name].items()})}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench.serving", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=MODES, default="quick")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args(argv)
    require("bench.serving", {"torch": "export", "diffusers": "export", "onnx": "export"})
    cfg = MODES[args.mode]
    from bench.__main__ import prepare
    from runtime.pipeline import Pipeline

    _, engine = prepare(args.mode)
    gpu = json.loads((ROOT / "docs" / "gpu.json").read_text())
    fit = gpu["fit_ms"]["torch.compile fp16"]
    with Pipeline.load(engine, device="cpu") as pipe:  # one-step time at batch 1 sets the offered load
        pipe.denoise(steps=2)
        t0 = time.perf_counter()
        pipe.denoise(steps=10)
        step_s = (time.perf_counter() - t0) / 10
    steps_scale = cfg.get("steps_scale", 1.0)
    mean_steps = np.mean([max(2, int(s * steps_scale)) for _, s in MIX])
    sim_step = (fit["a"] + fit["b"]) / 1e3
    measured, simulated = {}, {}
    n_measured, n_simulated = cfg["requests"], cfg["requests"] * 2
    for load in cfg["loads"]:
        arrivals, requests = make_stream(n_measured, mean_steps * step_s, load, steps_scale)
        print(f"measured ({engine}), load {load}: {len(requests)} requests, batch-1 step {step_s * 1e3:.1f} ms", flush=True)
        measured[load] = run_all(lambda: Pipeline.load(engine, device="cpu"), arrivals, requests, cfg["max_batch"])
        arrivals, requests = make_stream(n_simulated, mean_steps * sim_step, load, steps_scale, seed=1)
        print(f"simulated GPU engine, load {load}: {fit['a']:.2f} + {fit['b']:.2f}*rows ms per call", flush=True)
        with Pipeline.load(engine, device="cpu") as like:
            simulated[load] = run_all(lambda: simulated_pipeline(like, fit["a"], fit["b"]), arrivals, requests, 16)

    def rows(by_load, label):
        out = []
        for load, results in by_load.items():
            base = results["one at a time"]
            out += [
                f"| {label} | {load:.1f} | {name} | {r['throughput']:.3f} ({r['throughput'] / base['throughput']:.2f}x) | "
                f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['calls']} | {r['mean_batch']:.2f} |"
                for name, r in results.items()
            ]
        return out

    lines = [
        f"# Serving benchmark ({args.mode})",
        "",
        f"Machine: {machine.describe()}",
        "",
        "Stream: Poisson arrivals at a load of 0.9 and 3.0 times one-at-a-time capacity (at 3.0 the queue grows, so "
        "requests/s is each policy's capacity), one image per request, mix "
        + ", ".join(f"{s} {max(2, int(k * steps_scale))}" for s, k in MIX)
        + f" steps (uniform), seeded. Static batching waits up to {STATIC_WINDOW_S * 1e3:.0f} ms for rows. "
        f"Measured: {n_measured} requests per load, ONNX Runtime on this CPU, max batch {cfg['max_batch']}, "
        f"batch-1 step {step_s * 1e3:.1f} ms. **Simulated**: {n_simulated} requests per load to an engine that sleeps "
        f"{fit['a']:.2f} + {fit['b']:.2f}·rows ms per call (least-squares fit to diffusers + torch.compile FP16 "
        f"on an {gpu['gpu']}, batch 1/8/16, docs/gpu.md), max batch 16, the samplers' host work real.",
        "",
        "| engine | load | policy | requests/s (vs one at a time) | p50 s | p95 s | p99 s | engine calls | rows per call |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows(measured, "measured, CPU"),
        *rows(simulated, "**simulated GPU**"),
    ]
    out = Path(args.out) / f"bench-serving-{args.mode}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "bench.serving"))
