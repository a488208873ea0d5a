"""libddpm_runtime (embed/include/ddpm_runtime.h) driven from C++ (tests/embed/c_abi_check.cpp): images equal
to the Python API's, concurrent callers sharing UNet calls, bad inputs answered with a code and one line,
flat memory over many calls. The trained demo model's engine with its feature-reuse graphs (tests/conftest.py) is the engine."""

import json
import subprocess

import numpy as np
import pytest

from runtime import Pipeline

CODES = {"ok": 0, "invalid": 1, "buffer": 2, "engine": 3, "busy": 5}
# Requests as C callers send them, with the Python API's keyword arguments for the same images.
REQUESTS = [
    ({"seed": 3, "count": 2, "steps": 12, "scheduler": "ddpm"}, dict(batch=2, seed=3, steps=12, scheduler="ddpm")),
    ({"seed": 5, "steps": 10, "scheduler": "ddim", "eta": 0.5, "noise": "torch"},
     dict(seed=5, steps=10, scheduler="ddim", eta=0.5, noise="torch")),
    ({"seed": 7, "count": 3, "steps": 8, "scheduler": "dpmpp-2m", "per_image_seeds": True},
     dict(batch=3, seeds=[7, 8, 9], steps=8, scheduler="dpmpp-2m")),
    ({"seed": 4, "steps": 9, "scheduler": "dpmpp-2m", "cache_interval": 3},  # feature reuse (the engine has its graphs)
     dict(seed=4, steps=9, scheduler="dpmpp-2m", cache_interval=3)),
    ({}, dict()),  # every default: the config's own sampler (DDPM) with all its 1000 steps
]
SCHEDULERS = ("ddpm", "ddim", "dpmpp-2m", "unipc-3m")

pytestmark = pytest.mark.build


def driver(build, engine, *args, timeout=600):
    r = subprocess.run([str(build / "c_abi_check"), str(engine), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return r, lines


def images_from(path, count, shape):
    return np.fromfile(path, dtype=np.uint8)[: count * int(np.prod(shape))].reshape(count, *shape)


@pytest.fixture(scope="module")
def pipe(demo_cache_engine):
    with Pipeline.load(demo_cache_engine, device="cpu") as p:
        yield p


def test_images_equal_the_python_api(embed_build, demo_cache_engine, pipe, tmp_path):
    r, lines = driver(embed_build, demo_cache_engine, "images", tmp_path, *(json.dumps(req) for req, _ in REQUESTS))
    assert r.returncode == 0, r.stderr
    shape = (pipe.height, pipe.width, pipe.channels)
    for i, (request, kwargs) in enumerate(REQUESTS):
        expected = pipe.sample(**kwargs)
        got = images_from(tmp_path / f"{i}.bin", len(expected), shape)
        np.testing.assert_array_equal(got, expected, err_msg=json.dumps(request))


def test_eight_threads_share_unet_calls_and_equal_serial(embed_build, demo_cache_engine, pipe, tmp_path):
    requests = [{"seed": k, "steps": 6 + k % 5, "scheduler": SCHEDULERS[k % len(SCHEDULERS)], "count": 1 + k % 2} for k in range(32)]
    r, lines = driver(embed_build, demo_cache_engine, "threads", tmp_path, 8, *(json.dumps(q) for q in requests))
    assert r.returncode == 0, r.stderr
    shape = (pipe.height, pipe.width, pipe.channels)
    for k, q in enumerate(requests):
        expected = pipe.sample(batch=q["count"], seed=q["seed"], steps=q["steps"], scheduler=q["scheduler"])
        np.testing.assert_array_equal(images_from(tmp_path / f"{k}.bin", q["count"], shape), expected, err_msg=json.dumps(q))
    stats = next(line["stats"] for line in lines if line.get("case") == "stats")
    steps = sum(q["steps"] for q in requests)
    print(f"\n8 threads x 4 requests: {stats}; {steps} request-steps in {stats['engine_calls']} UNet calls")
    assert stats["completed"] == 32 and stats["failed"] == 0
    assert stats["engine_calls"] < steps and stats["mean_batch"] > 1.5


def test_bad_inputs_give_a_code_and_one_line(embed_build, demo_cache_engine):
    r, lines = driver(embed_build, demo_cache_engine, "errors")
    assert r.returncode == 0, r.stderr
    got = {line["case"]: (line["code"], line["message"]) for line in lines}
    expected = {
        "open: engine missing": ("engine", "does not exist"),
        "open: NULL handle pointer": ("invalid", "handle is NULL"),
        "open: NULL engine path": ("invalid", "engine_path is NULL"),
        "open: options not JSON": ("invalid", "options is not valid JSON"),
        "open: unknown option": ("invalid", "unknown field(s) max_bach"),
        "open: max_batch 0": ("invalid", "max_batch must be"),
        "sample: request not JSON": ("invalid", "request is not valid JSON"),
        "sample: request not an object": ("invalid", "must be a JSON object"),
        "sample: unknown field": ("invalid", "unknown field(s) sed"),
        "sample: wrong type": ("invalid", "'steps' has the wrong type"),
        "sample: unknown scheduler": ("invalid", "unknown scheduler 'euler'"),
        "sample: steps 0": ("invalid", "steps must be"),
        "sample: negative seed": ("invalid", "seed must be"),
        "sample: buffer too small": ("buffer", "need 512"),
        "sample: count above max_batch": ("invalid", "more than this batcher's max_batch 4"),
        "sample: NULL out": ("invalid", "out is NULL"),
        "sample: made-up handle": ("invalid", "not from ddpm_open"),
        "sample: after close": ("invalid", "closed"),
        "shape: after close": ("invalid", "closed"),
        "close: twice": ("invalid", "closed"),
    }
    for case, (code, fragment) in expected.items():
        assert got[case][0] == CODES[code] and fragment in got[case][1], (case, got[case])
        assert "\n" not in got[case][1] and "Traceback" not in got[case][1]
    for case in ("open", "sample: good", "close", "close: NULL", "reopen", "sample: after reopen"):
        assert got[case] == (0, ""), (case, got[case])


CALLS = 200
RSS_GROWTH_LIMIT_KB = 4096  # after warm-up; one call's images are 256 bytes, its trajectory a few kB


def test_resident_memory_stays_flat_over_200_calls(embed_build, demo_cache_engine):
    r, lines = driver(embed_build, demo_cache_engine, "memory", CALLS, json.dumps({"steps": 5, "count": 2, "scheduler": "ddim"}))
    assert r.returncode == 0, r.stderr
    rss = [line["rss_kb"] for line in lines if "rss_kb" in line]
    assert len(rss) == CALLS and all(line["code"] == 0 for line in lines if "rss_kb" in line)
    growth = max(rss[20:]) - rss[19]
    print(f"\nRSS after call 20: {rss[19]} kB, max over calls 21-{CALLS}: {max(rss[20:])} kB (+{growth} kB)")
    assert growth < RSS_GROWTH_LIMIT_KB


def test_conditioned_requests_through_the_c_abi(embed_build, xattn_engine, tmp_path):
    """class_labels, embeddings, guidance_scale and guidance_rescale in the request JSON: the Python API's images; bad conditions
    get the invalid-input code and one line."""
    embeddings = np.linspace(-1, 1, 6 * 16, dtype=np.float32).reshape(6, 16)
    good = [
        ({"count": 2, "class_labels": [0, 2], "guidance_scale": 3, "guidance_rescale": 0.7, "steps": 5, "scheduler": "ddim"},
         dict(count=2, class_labels=[0, 2], guidance_scale=3.0, guidance_rescale=0.7, steps=5, scheduler="ddim")),
        ({"embeddings": embeddings.tolist(), "steps": 4, "scheduler": "dpmpp-2m", "seed": 9},
         dict(embeddings=embeddings, steps=4, scheduler="dpmpp-2m", seed=9)),
    ]
    bad = [
        ({"class_labels": [3], "steps": 2}, "out of range"),
        ({"embeddings": [[1.0] * 16] * 5, "steps": 2}, "must be [6, 16]"),
        ({"embeddings": [[1.0, "x"]], "steps": 2}, "hold numbers"),
        ({"class_labels": [1], "guidance_scale": 0.5, "steps": 2}, "guidance_scale must be"),
        ({"class_labels": [1], "guidance_rescale": 0.5, "steps": 2}, "guided requests only"),
        ({"class_labels": [1], "negative_embeddings": [[0.0] * 16] * 6, "steps": 2}, "guidance only"),
    ]
    r, lines = driver(embed_build, xattn_engine, "images", tmp_path, *(json.dumps(q) for q, _ in good + bad))
    results = [line for line in lines if line.get("case", "").startswith("{")]
    with Pipeline.load(xattn_engine, device="cpu") as pipe:
        shape = (pipe.height, pipe.width, pipe.channels)
        for i, (request, kwargs) in enumerate(good):
            assert results[i]["code"] == CODES["ok"], results[i]
            expected = pipe.sample(**kwargs)
            np.testing.assert_array_equal(images_from(tmp_path / f"{i}.bin", len(expected), shape), expected)
    for line, (request, message) in zip(results[len(good):], bad):
        assert line["code"] == CODES["invalid"] and message in line["message"] and "\n" not in line["message"], line


def test_a_latent_model_through_the_c_abi(embed_build, ldm_engine, tmp_path):
    """ddpm_image_shape gives the decoded image's shape (16x16x3, not the 8x8 latents), and the images equal the
    Python API's (the decoder runs after the loop)."""
    requests = [({"count": 2, "steps": 5, "seed": 1}, dict(count=2, steps=5, seed=1)),
                ({"steps": 4, "scheduler": "dpmpp-2m", "noise": "torch"}, dict(steps=4, scheduler="dpmpp-2m", noise="torch"))]
    r, lines = driver(embed_build, ldm_engine, "images", tmp_path, *(json.dumps(q) for q, _ in requests))
    assert r.returncode == 0, r.stderr
    with Pipeline.load(ldm_engine, device="cpu") as pipe:
        assert pipe.image_shape == (16, 16, 3)
        for i, (request, kwargs) in enumerate(requests):
            expected = pipe.sample(**kwargs)
            np.testing.assert_array_equal(images_from(tmp_path / f"{i}.bin", len(expected), pipe.image_shape), expected)
