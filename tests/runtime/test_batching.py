"""StepBatcher: requests of mixed samplers, step counts, seeds and noise kinds share engine calls, and each
image is bit-equal to the same request sampled alone (ONNX Runtime on CPU is batch-invariant)."""

import threading
import time

import numpy as np
import pytest

from runtime import Pipeline
from runtime.batching import QueueFullError, RequestCancelledError, RequestTimeoutError, StepBatcher
from runtime.errors import InputError

REQUESTS = [
    dict(scheduler="ddpm", steps=12, seed=1, noise="numpy"),
    dict(scheduler="ddim", steps=10, seed=2, noise="torch"),
    dict(scheduler="ddim", steps=7, eta=0.5, seeds=[3, 4], batch=2, noise="numpy"),
    dict(scheduler="dpmpp-2m", steps=9, seed=5, noise="torch"),
    dict(scheduler="dpmpp-2m", steps=5, seed=6, batch=3, noise="numpy"),
    dict(scheduler="ddpm", steps=20, seeds=[8], batch=1, noise="torch"),
    dict(scheduler="ddim", steps=4, eta=1.0, seed=9, noise="torch"),
    dict(scheduler="unipc-3m", steps=6, seed=10, batch=2, noise="numpy"),
    dict(scheduler="dpmpp-3m", steps=7, seed=12, noise="torch"),
    dict(scheduler="unipc-2m", steps=5, seed=13, noise="numpy"),
]


@pytest.fixture(scope="module")
def pipe(tiny_engine):
    with Pipeline.load(tiny_engine, device="cpu") as p:
        yield p


def test_batched_images_equal_requests_alone(pipe):
    alone = [pipe(**r) for r in REQUESTS]
    victim = dict(scheduler="ddpm", steps=30, seed=11, noise="numpy")
    started = threading.Event()
    with StepBatcher(pipe, max_batch=6) as batcher:
        first = [batcher.submit(**r) for r in REQUESTS[:3]]
        doomed = batcher.submit(**victim, progress=lambda done, total: done == 3 and started.set())
        assert started.wait(30)  # the first requests are mid-way: the rest arrive at other steps
        later = [batcher.submit(**r) for r in REQUESTS[3:]]
        assert batcher.cancel(doomed)
        results = [f.result(timeout=60) for f in first + later]
        with pytest.raises(RequestCancelledError):
            doomed.result(timeout=60)
        stats = batcher.stats
    for i, (a, b) in enumerate(zip(alone, results)):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape
        np.testing.assert_array_equal(a, b, err_msg=f"request {i}: {REQUESTS[i]}")
    assert stats.completed == len(REQUESTS) and stats.cancelled == 1
    total_steps = sum(r["steps"] for r in REQUESTS)
    assert stats.engine_calls < total_steps  # requests shared calls
    assert stats.mean_batch > 1


def test_bad_requests_are_refused_at_submit(pipe):
    with StepBatcher(pipe, max_batch=2) as batcher:
        with pytest.raises(InputError, match="max_batch 2"):
            batcher.submit(batch=3, steps=2)
        with pytest.raises(InputError, match="steps"):
            batcher.submit(steps=0)
        with pytest.raises(InputError, match="unknown scheduler"):
            batcher.submit(scheduler="euler", steps=2)
        with pytest.raises(InputError, match="timeout"):
            batcher.submit(steps=2, timeout=-1)
        assert batcher.submit(steps=2).result(timeout=30).shape == (1, 16, 16, 3)


def test_full_queue_refuses_and_cancel_waiting(pipe):
    gate, entered = threading.Event(), threading.Event()
    with StepBatcher(pipe, max_batch=1, max_queue=2) as batcher:
        running = batcher.submit(steps=3, progress=lambda d, t: entered.set() or gate.wait(30))
        assert entered.wait(30)  # admitted: the queue is empty again
        waiting = [batcher.submit(steps=2, seed=s) for s in (1, 2)]
        with pytest.raises(QueueFullError, match="queue is full"):
            batcher.submit(steps=2)
        assert batcher.cancel(waiting[0]) and waiting[0].cancelled()
        gate.set()
        assert running.result(timeout=30).shape == (1, 16, 16, 3)
        assert waiting[1].result(timeout=30).shape == (1, 16, 16, 3)


def test_timeout_fails_only_that_request(pipe):
    with StepBatcher(pipe, max_batch=4) as batcher:
        slow = batcher.submit(steps=200, timeout=0.05, progress=lambda d, t: time.sleep(0.001))
        fine = batcher.submit(steps=3, seed=4)
        with pytest.raises(RequestTimeoutError, match="timeout"):
            slow.result(timeout=30)
        np.testing.assert_array_equal(fine.result(timeout=30), pipe(steps=3, seed=4))


def test_close_without_drain_cancels_and_refuses(pipe):
    batcher = StepBatcher(pipe, max_batch=1)
    jobs = [batcher.submit(steps=50, seed=s) for s in range(3)]
    batcher.close(drain=False)
    for job in jobs:
        assert job.done()
        if not job.cancelled():
            with pytest.raises(RequestCancelledError):
                job.result()
    with pytest.raises(RequestCancelledError, match="closed"):
        batcher.submit(steps=2)


def test_close_with_drain_finishes_everything(pipe):
    batcher = StepBatcher(pipe, max_batch=2)
    jobs = [batcher.submit(steps=3, seed=s) for s in range(5)]
    batcher.close(drain=True)
    for s, job in enumerate(jobs):
        np.testing.assert_array_equal(job.result(timeout=0), pipe(steps=3, seed=s))


def test_engine_failure_fails_the_rows_in_that_call_and_the_batcher_goes_on(pipe, monkeypatch):
    with StepBatcher(pipe, max_batch=4) as batcher:
        real = pipe.denoiser.runner.infer
        calls = {"n": 0}

        def flaky(feed):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("device lost")
            return real(feed)

        monkeypatch.setattr(pipe.denoiser.runner, "infer", flaky)
        with pytest.raises(RuntimeError, match="device lost"):
            batcher.submit(steps=2).result(timeout=30)
        np.testing.assert_array_equal(batcher.submit(steps=2, seed=1).result(timeout=30), pipe(steps=2, seed=1))


# Guided and unguided requests, at several scales (one rescaled) and samplers, share calls; each image equals the
# request alone.
CONDITIONED = [
    dict(scheduler="ddim", steps=8, seed=1, class_labels=[0], guidance_scale=3.0),
    dict(scheduler="dpmpp-2m", steps=6, seed=2, class_labels=[1, 2], count=2),  # unguided
    dict(scheduler="ddpm", steps=10, seed=3, class_labels=[2], guidance_scale=7.5, guidance_rescale=0.7, noise="torch"),
    dict(scheduler="ddim", steps=5, seed=4, count=2),  # no condition: the null embedding, unguided
    dict(scheduler="ddim", steps=7, seed=5, embeddings=np.full((6, 16), 0.3, np.float32), guidance_scale=1.5),
    dict(scheduler="dpmpp-2m", steps=9, seed=6, class_labels=[1], guidance_scale=2.0, per_image_seeds=True),
]


def test_guided_and_unguided_requests_share_calls_bit_for_bit(xattn_engine):
    with Pipeline.load(xattn_engine, device="cpu") as pipe:
        alone = [pipe(**r) for r in CONDITIONED]
        calls = []
        with StepBatcher(pipe, max_batch=8, on_call=lambda rows, s: calls.append(rows)) as batcher:
            futures = [batcher.submit(**r) for r in CONDITIONED]
            results = [f.result(timeout=120) for f in futures]
            stats = batcher.stats
    for i, (a, b) in enumerate(zip(alone, results)):
        np.testing.assert_array_equal(a, b, err_msg=f"request {i}: {CONDITIONED[i]}")
    rows = sum(r.get("count", 1) * (2 if r.get("guidance_scale", 1) > 1 else 1) * r["steps"] for r in CONDITIONED)
    assert stats.rows == rows and stats.engine_calls == len(calls) < sum(r["steps"] for r in CONDITIONED)
    print(f"\n{len(CONDITIONED)} requests ({sum(r['steps'] for r in CONDITIONED)} request-steps, {rows} rows): "
          f"{stats.engine_calls} engine calls, rows per call {calls}, mean {stats.mean_batch:.2f}")


def test_a_guided_request_counts_two_rows_per_image(xattn_engine):
    with Pipeline.load(xattn_engine, device="cpu") as pipe, StepBatcher(pipe, max_batch=4) as batcher:
        with pytest.raises(InputError, match="needs 6 rows.*guidance takes two rows per image"):
            batcher.submit(count=3, class_labels=[0], guidance_scale=2, steps=2)
        assert batcher.submit(count=2, class_labels=[0], guidance_scale=2, steps=2).result(timeout=30).shape == (2, 8, 8, 4)
