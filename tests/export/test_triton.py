"""export.triton's model repository served by a real NVIDIA Triton Inference Server (2.51, the binary in the
nvidia-pytriton wheel, CPU only), loopback only, in its own virtual environment (build/triton-venv:
`make triton-deps`; pytriton pins numpy<2). Requests go over gRPC streaming (HTTP does not serve
decoupled models) from tests/export/triton_client.py run in that environment."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from tests.conftest import ROOT, sample_offline
from tests.localnet import free_port, listening

VENV = ROOT / "build" / "triton-venv"
SERVER = VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "pytriton" / "tritonserver"
MODEL = "ddpm"
CONDITIONAL = "ddpm_xattn"  # the cross-attention test model, served beside the demo model
LATENT = "ddpm_ldm"  # the latent-diffusion test model (UNet + decoder), served beside them too
MAX_BATCH = 6

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def server(demo_cache_engine, xattn_engine, ldm_engine, tmp_path_factory):
    if not (SERVER / "bin" / "tritonserver").is_file():
        pytest.skip(f"no Triton server in {VENV} (`make triton-deps` installs nvidia-pytriton there)")
    work = tmp_path_factory.mktemp("triton")
    repo = work / "model_repository"
    for engine, name in ((demo_cache_engine, MODEL), (xattn_engine, CONDITIONAL), (ldm_engine, LATENT)):
        r = subprocess.run([sys.executable, "-m", "export.triton", "--engines", str(engine.parent), "--out", str(work / name),
                            "--name", name, "--max-batch", str(MAX_BATCH)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        repo.mkdir(exist_ok=True)
        (work / name / name).rename(repo / name)
    # The Python backend wants its stub beside it, symlinked (a copy cannot find its libraries), for our Python.
    backends = work / "backends" / "python"
    backends.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (backends / name).symlink_to(SERVER / "backends" / "python" / name)
    stub = SERVER / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    (backends / "triton_python_backend_stub").symlink_to(stub)
    import sysconfig

    ports = {name: free_port() for name in ("http", "grpc", "metrics")}
    env = {
        **os.environ,
        "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}",  # the stub imports from the first python3 on PATH
        # the stub links libpython3.X; the one our environments are built on must come before the system's
        "LD_LIBRARY_PATH": f"{sysconfig.get_config_var('LIBDIR')}:{SERVER.parent.parent / 'nvidia_pytriton.libs'}",
    }
    log = open(work / "server.log", "w")
    proc = subprocess.Popen(
        [str(SERVER / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends.parent}",
         "--http-address=127.0.0.1", f"--http-port={ports['http']}", "--grpc-address=127.0.0.1", f"--grpc-port={ports['grpc']}",
         "--metrics-address=127.0.0.1", f"--metrics-port={ports['metrics']}", "--exit-on-error=true"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            ready = []
            for name in (MODEL, CONDITIONAL, LATENT):
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/v2/models/{name}/ready", timeout=2) as resp:
                    ready.append(resp.status == 200)
            if all(ready):
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"tritonserver did not become ready:\n{(work / 'server.log').read_text()[-4000:]}")
        time.sleep(0.5)
    yield {"proc": proc, "ports": ports, "work": work, "log": work / "server.log"}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def client(server, requests, out, sequential=False, model=MODEL):
    out.mkdir(exist_ok=True)
    r = subprocess.run([str(VENV / "bin" / "python"), str(ROOT / "tests" / "export" / "triton_client.py"),
                        f"127.0.0.1:{server['ports']['grpc']}", model, json.dumps(requests), str(out),
                        *(["sequential"] if sequential else [])], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def test_listens_on_loopback_only(server):
    addresses = listening(server["proc"].pid)
    assert len(addresses) == 3, addresses  # HTTP, gRPC, metrics (all models)
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "::ffff:127.0.0.1") for a in addresses), addresses


def test_concurrent_requests_are_batched_and_equal_the_offline_cli(server, demo_cache_engine, tmp_path):
    """Mixed samplers, seeds, noise kinds and cache schedules (feature reuse: the repository carries the graphs)."""
    requests = [
        {"seed": k, "steps": 8 + k % 4, "scheduler": ("ddim", "dpmpp-2m", "ddpm", "unipc-3m")[k % 4], "count": 1 + k % 2,
         **({"noise": "torch"} if k % 4 == 1 else {}), **({"eta": 0.5} if k % 4 == 0 else {}),  # ddim's
         **({"per_image_seeds": True} if k % 4 == 3 else {}), **({"timeout_s": 300.0} if k % 5 == 0 else {}),
         **({"cache_interval": 3} if k % 3 == 1 else {"cache_full_steps": [0, 1, 4]} if k % 6 == 2 else {})}
        for k in range(12)
    ]
    result = client(server, requests, tmp_path / "served")
    for i, request in enumerate(requests):
        assert "file" in result["responses"][str(i)], result["responses"][str(i)]
        served = np.load(result["responses"][str(i)]["file"])
        offline = np.stack([pixels for pixels, _ in sample_offline(demo_cache_engine, request, tmp_path / f"cli{i}")])
        np.testing.assert_array_equal(served, offline, err_msg=json.dumps(request))
    with urllib.request.urlopen(f"http://127.0.0.1:{server['ports']['metrics']}/metrics", timeout=10) as resp:
        metrics = dict(re.findall(rf'^(ddpm_unet_\w+)\{{[^}}]*model="{MODEL}"[^}}]*\}} (\S+)$', resp.read().decode(), re.M))
    calls, rows = float(metrics["ddpm_unet_calls"]), float(metrics["ddpm_unet_rows"])
    steps = sum(q["steps"] for q in requests)
    stats = result["stats"]["modelStats"][0]
    print(f"\nTriton {stats['name']}: inference_count {stats.get('inferenceCount')}, execution_count "
          f"{stats.get('executionCount')}, batch_stats {stats.get('batchStats')}; ours: {rows:.0f} rows in {calls:.0f} UNet "
          f"calls ({rows / calls:.2f} per call) for {len(requests)} requests of {steps} steps, {result['seconds']:.2f} s")
    assert calls < steps and rows / calls > 1.5


BAD = [
    ({"scheduler": "euler"}, "unknown scheduler 'euler'"),
    ({"steps": 0}, "steps must be"),
    ({"count": MAX_BATCH + 1, "steps": 2}, f"more than this batcher's max_batch {MAX_BATCH}"),
    ({"noise": "gauss"}, "unknown noise kind 'gauss'"),
    ({"eta": -1.0, "scheduler": "ddim"}, "eta must be"),
    ({"timeout_s": -1.0}, "timeout_s must be"),
    ({"steps": 1000, "timeout_s": 0.05}, "did not finish within its timeout"),
    ({"steps": 5, "cache_full_steps": [0, 7]}, "names step 7, but the request has 5 steps"),
]


def test_bad_requests_get_one_line_errors_and_the_server_keeps_serving(server, tmp_path):
    result = client(server, [request for request, _ in BAD] + [{"steps": 3}], tmp_path, sequential=True)
    responses = result["responses"]
    for i, (request, fragment) in enumerate(BAD):
        message = responses[str(i)].get("error", "")
        assert fragment in message and "\n" not in message and "Traceback" not in message, (request, responses[str(i)])
    assert responses[str(len(BAD))]["shape"][0] == 1
    assert server["proc"].poll() is None


def test_image_requests_as_uint8_inputs_equal_the_python_api(server, demo_cache_engine, tmp_path):
    """input_image (UINT8 [N, H, W, C]; the output keeps the name image) and mask_image (UINT8 [N, H, W]):
    image-to-image and inpainting through Triton, equal to the Python API; a wrong size is an error line."""
    from runtime import Pipeline
    from runtime.image_input import image_array, mask_array
    from tests.serve.scenario import RING, TOP_HALF

    ring = np.round((image_array(RING)[0, 0] + 1) / 2 * 255).astype(np.uint8)
    top = (mask_array(TOP_HALF)[0, 0] * 255).astype(np.uint8)
    requests = [
        {"input_image": ring[None, :, :, None].tolist(), "strength": 0.6, "steps": 10, "scheduler": "ddim", "seed": 3},
        {"input_image": ring[None, :, :, None].tolist(), "mask_image": top[None].tolist(), "count": 2, "steps": 6,
         "jump_length": 2, "jump_n_sample": 2, "seed": 4},
    ]
    result = client(server, requests, tmp_path / "served")
    with Pipeline.load(demo_cache_engine, device="cpu") as pipe:
        np.testing.assert_array_equal(np.load(result["responses"]["0"]["file"]),
                                      pipe.sample(image=ring, strength=0.6, steps=10, scheduler="ddim", seed=3))
        np.testing.assert_array_equal(np.load(result["responses"]["1"]["file"]),
                                      pipe.sample(image=ring, mask_image=top, count=2, steps=6, jump_length=2,
                                                  jump_n_sample=2, seed=4))
    bad = client(server, [{"input_image": np.zeros((1, 8, 8, 1), np.uint8).tolist(), "strength": 0.5, "steps": 2}],
                 tmp_path / "bad", sequential=True)["responses"]
    assert "image is 8x8 with 1 channel; this model takes 16x16" in bad["0"]["error"], bad


def test_conditioned_requests_equal_the_python_api(server, xattn_engine, tmp_path):
    """class_labels (INT64 [-1]), embeddings (FP32 [-1, -1, -1]), guidance_scale and guidance_rescale as Triton inputs."""
    from runtime import Pipeline

    embeddings = np.linspace(-1, 1, 6 * 16, dtype=np.float32).reshape(1, 6, 16)
    requests = [
        {"count": 2, "class_labels": [0, 2], "guidance_scale": 3.0, "steps": 5, "scheduler": "ddim"},
        {"embeddings": embeddings.tolist(), "steps": 4, "scheduler": "dpmpp-2m", "seed": 9},
        {"class_labels": [1], "guidance_scale": 2.0, "guidance_rescale": 0.7, "steps": 6, "scheduler": "ddpm", "seed": 4},
    ]
    result = client(server, requests, tmp_path / "served", model=CONDITIONAL)
    with Pipeline.load(xattn_engine, device="cpu") as pipe:
        for i, request in enumerate(requests):
            fields = {**request, **({"embeddings": np.asarray(request["embeddings"], np.float32)} if "embeddings" in request else {})}
            np.testing.assert_array_equal(np.load(result["responses"][str(i)]["file"]), pipe.sample(**fields))
    bad = client(server, [{"class_labels": [3], "steps": 2}, {"embeddings": [[[1.0] * 16] * 5], "steps": 2}], tmp_path / "bad",
                 sequential=True, model=CONDITIONAL)["responses"]
    assert "out of range" in bad["0"]["error"] and "must be [6, 16]" in bad["1"]["error"]


def test_a_latent_model_serves_decoded_images(server, ldm_engine, tmp_path):
    """The repository carries the decoder; the output dims are the decoded image's (16x16x3, not the latents')."""
    from runtime import Pipeline

    config = (server["work"] / "model_repository" / LATENT / "config.pbtxt").read_text()
    assert "dims: [ -1, 16, 16, 3 ]" in config.replace("  ", " "), config
    requests = [{"count": 2, "steps": 5, "seed": 1}, {"steps": 4, "scheduler": "dpmpp-2m", "noise": "torch"}]
    result = client(server, requests, tmp_path / "served", model=LATENT)
    with Pipeline.load(ldm_engine, device="cpu") as pipe:
        for i, request in enumerate(requests):
            np.testing.assert_array_equal(np.load(result["responses"][str(i)]["file"]), pipe.sample(**request))
