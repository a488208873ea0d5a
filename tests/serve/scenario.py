"""Service scenarios, run by tests/serve/test_service.py inside a loopback-only network namespace
(serve.netns): each starts Ray and the service, acts as the clients, and prints one JSON object.

    python -m tests.serve.scenario NAME ENGINE OUT_DIR
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from serve.__main__ import start
from serve.config import ServiceConfig
from tests.localnet import free_port, listening


def snapshot(*folders: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for folder in folders for p in sorted(folder.rglob("*"))}


async def post_all(url: str, bodies: list, timeout: float = 300, headers: dict | None = None) -> list[dict]:
    async with httpx.AsyncClient(timeout=timeout) as client:
        async def one(body):
            content = body if isinstance(body, (str, bytes)) else json.dumps(body)
            try:
                r = await client.post(f"{url}/v1/images", content=content, headers=headers)
            except httpx.TransportError as exc:  # e.g. a body past the limit: refused, the connection closed under us
                return {"status": None, "error": type(exc).__name__, "type": "", "replica": None, "attempts": 0,
                        "retry_after": None, "content": b"", "engine": None}
            return {"status": r.status_code, "type": r.headers.get("content-type", ""), "replica": r.headers.get("x-replica"),
                    "engine": r.headers.get("x-engine-sha256"),
                    "attempts": int(r.headers.get("x-attempts", "0")),
                    "retry_after": r.headers.get("retry-after"), "content": r.content}
        return await asyncio.gather(*(one(b) for b in bodies))


def save_images(response: dict, out: Path, prefix: str) -> list[str]:
    if response["type"].startswith("image/png"):
        pngs = [response["content"]]
    else:
        pngs = [base64.b64decode(item["png_base64"]) for item in json.loads(response["content"])["images"]]
    paths = []
    for j, png in enumerate(pngs):
        path = out / f"{prefix}_{j}.png"
        path.write_bytes(png)
        paths.append(str(path))
    return paths


def png_base64(pixels: np.ndarray) -> str:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# The demo model's image inputs (16x16 grayscale): a ring to start from, a mask keeping the top half
_yy, _xx = np.mgrid[:16, :16]
RING = png_base64(np.where(np.abs(np.hypot(_yy - 7.5, _xx - 7.5) - 5) < 1.5, 255, 0).astype(np.uint8))
TOP_HALF = png_base64(np.where(_yy < 8, 255, 0).astype(np.uint8))
SMALL = png_base64(np.zeros((8, 8), np.uint8))
MIXED = [
    {"seed": 1, "steps": 10, "scheduler": "ddim"},
    {"seed": 2, "steps": 12, "scheduler": "dpmpp-2m", "count": 2},
    {"seed": 3, "steps": 15, "scheduler": "ddpm", "noise": "torch"},
    {"seed": 4, "steps": 8, "scheduler": "ddim", "eta": 0.5, "count": 3, "per_image_seeds": True},
    {"seed": 5, "steps": 9, "scheduler": "dpmpp-2m", "format": "json"},
    {"seed": 6, "steps": 11, "scheduler": "ddim", "noise": "torch", "count": 2},
    {"seed": 7, "steps": 6, "scheduler": "unipc-3m", "count": 2},
    {"seed": 8, "steps": 7, "scheduler": "dpmpp-3m", "format": "json"},
    {"seed": 9, "steps": 10, "scheduler": "dpmpp-2m", "cache_interval": 3},  # feature reuse: the engine has its graphs
    {"seed": 10, "steps": 8, "scheduler": "unipc-3m", "count": 2, "cache_full_steps": [0, 1, 4], "format": "json"},
    {"seed": 11, "steps": 10, "scheduler": "ddim", "image": RING, "strength": 0.6},  # image-to-image
    {"seed": 12, "steps": 6, "image": RING, "mask_image": TOP_HALF, "jump_length": 2, "jump_n_sample": 2, "count": 2,
     "format": "json"},  # inpainting
]
BAD = [
    ("not json", "{seed: 1"),
    ("not an object", "[1, 2]"),
    ("unknown field", {"seed": 1, "sed": 2}),
    ("wrong type", {"steps": "ten"}),
    ("unknown scheduler", {"scheduler": "euler"}),
    ("steps 0", {"steps": 0}),
    ("steps above the limit", {"steps": 5000}),
    ("count above the limit", {"count": 4}),
    ("png for two images", {"count": 2, "format": "png"}),
    ("negative eta", {"eta": -1, "scheduler": "ddim"}),
    ("unknown noise", {"noise": "gauss"}),
    ("timeout above the limit", {"timeout_s": 1e9}),
    ("image of another size", {"image": SMALL, "strength": 0.5}),
    ("mask of another size", {"image": RING, "mask_image": SMALL}),
    ("strength 0", {"image": RING, "strength": 0}),
    ("strength without image", {"strength": 0.5}),
    ("image for a sampler without image-to-image", {"image": RING, "scheduler": "pndm", "steps": 10}),
]


def basic(engine: str, out: Path) -> dict:
    # max_queue holds every MIXED request (on a fast machine all arrive before the first is admitted), and the
    # flood below still overflows it
    config = ServiceConfig(engine=engine, max_batch=4, max_queue=len(MIXED), max_count=3, timeout_s=60, port=free_port(),
                           metrics_port=free_port())
    started = time.perf_counter()
    url = start(config, num_cpus=2)
    report: dict = {"startup_s": round(time.perf_counter() - started, 2), "url": url, "listeners": listening(),
                    "ingress_port": config.port}
    with httpx.Client(timeout=60) as client:
        report["healthz"] = [client.get(f"{url}/healthz").status_code]
        report["models"] = client.get(f"{url}/v1/models").json()
    # bit-equality: concurrent mixed requests
    responses = asyncio.run(post_all(url, MIXED))
    report["mixed"] = [{"status": r["status"], "type": r["type"], "files": save_images(r, out, f"mixed{i}") if r["status"] == 200 else [],
                        "body": r["content"][:300].decode("utf-8", "replace") if r["status"] != 200 else ""}
                       for i, r in enumerate(responses)]
    # bad requests: status, one line, nothing written
    engine_dir = Path(engine).parent
    cache = Path(os.environ["DDPM_DEPLOY_CACHE_DIR"])
    before = snapshot(engine_dir, cache, Path.cwd() / "serve")
    bad = asyncio.run(post_all(url, [body for _, body in BAD]))
    report["bad"] = {name: {"status": r["status"], "body": r["content"].decode()} for (name, _), r in zip(BAD, bad)}
    report["nothing_written"] = snapshot(engine_dir, cache, Path.cwd() / "serve") == before
    # 504: a deadline shorter than the work
    report["deadline"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in
                          asyncio.run(post_all(url, [{"steps": 1000, "timeout_s": 0.5}]))[0].items()}
    # 503: more requests at once than a full batch plus the queues hold
    flood = asyncio.run(post_all(url, [{"seed": k, "steps": 40, "count": 3} for k in range(20)]))
    report["flood"] = [{"status": r["status"], "retry_after": r["retry_after"],
                        "body": r["content"].decode() if r["status"] != 200 else ""} for r in flood]
    # a client that disconnects: its request is cancelled at the next step
    with httpx.Client(timeout=60) as client:
        r = client.get(f"{url}/v1/models")
        assert r.status_code == 200, (r.status_code, r.text)
        cancelled_before = r.json()["models"][0]["stats"]["cancelled"]
        try:  # 3 images x 1000 steps: over a second even on a fast CPU (1 image took under 1 s on a Zen 5)
            r = client.post(f"{url}/v1/images", content=json.dumps({"steps": 1000, "count": 3}), timeout=0.5)
            report["disconnect"] = f"the request was answered within 0.5 s: {r.status_code} {r.text[:200]}"
        except httpx.TimeoutException:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = client.get(f"{url}/v1/models").json()["models"][0]["stats"]
                if stats["cancelled"] > cancelled_before and stats["in_flight"] == 0:
                    break
                time.sleep(0.2)
            report["disconnect"] = {"cancelled": stats["cancelled"] - cancelled_before, "in_flight": stats["in_flight"],
                                    "completed": stats["completed"]}
        time.sleep(6)  # Ray exports metrics every few seconds
        report["metrics"] = client.get(f"{url}/metrics").text
    return report


def expected_images(engine: str, requests: list[dict]) -> list:
    """What runtime.sample gives for each request (the Python API, in this process)."""
    from runtime import Pipeline
    from runtime.requests import SampleRequest

    with Pipeline.load(engine, device="cpu") as pipe:
        return [pipe.sample(SampleRequest(**r)) for r in requests]


def decode(response: dict):
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(response["content"])) as im:
        pixels = np.asarray(im)
    return pixels[None, ..., None] if pixels.ndim == 2 else pixels[None]


def engine_replicas() -> list[dict]:
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA") and "ddpm-engine" in a["name"]]


def cluster(engine: str, out: Path) -> dict:
    """Two nodes (ray.cluster_utils.Cluster, one CPU each), two engine replicas: both serve; one is killed
    mid-load; every request completes correctly or gets a one-line 5xx; the service recovers."""
    import numpy as np
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    ray.init(address=cluster.address, log_to_driver=False)
    config = ServiceConfig(engine=engine, num_replicas=2, cpus_per_replica=1, threads=1, max_batch=4, max_queue=32,
                           max_count=1, timeout_s=120, port=free_port(), metrics_port=free_port())
    url = start(config)
    report: dict = {"nodes": len(ray.nodes())}
    warm = [{"seed": k, "steps": 6, "scheduler": "ddim"} for k in range(16)]
    responses = asyncio.run(post_all(url, warm))
    report["warm_statuses"] = [r["status"] for r in responses]
    report["warm_replicas"] = sorted({r["replica"] for r in responses if r["replica"]})

    load = [{"seed": 100 + k, "steps": 500, "scheduler": ("ddim", "dpmpp-2m", "ddpm")[k % 3]} for k in range(24)]
    expected = expected_images(engine, load)

    async def load_and_kill():
        task = asyncio.create_task(post_all(url, load, timeout=120))
        await asyncio.sleep(1.5)
        victim = engine_replicas()[0]
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        killed_at = time.perf_counter() - started
        return victim["name"], killed_at, await task

    started = time.perf_counter()
    victim, killed_at, responses = asyncio.run(load_and_kill())
    report["killed"] = victim
    report["killed_at_s"] = round(killed_at, 2)
    report["load_seconds"] = round(time.perf_counter() - started, 2)
    outcomes = []
    for request, response, want in zip(load, responses, expected):
        if response["status"] == 200:
            outcomes.append({"status": 200, "correct": bool(np.array_equal(decode(response), want)), "replica": response["replica"],
                             "attempts": response["attempts"]})
        else:
            outcomes.append({"status": response["status"], "body": response["content"].decode()})
    report["load"] = outcomes
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ray Serve replaces the replica: a new one, running
        names = [a["name"] for a in engine_replicas()]
        replicas = serve.status().applications["ddpm"].deployments["ddpm-engine"].replica_states
        if len(names) == 2 and victim not in names and replicas.get("RUNNING", 0) == 2:
            break
        time.sleep(0.5)
    report["recovered_replicas"] = dict(replicas)
    report["replicas_after"] = names
    report["recovery_s"] = round(time.perf_counter() - started - killed_at, 2)
    after = asyncio.run(post_all(url, [{"seed": k, "steps": 40} for k in range(16)]))
    report["after_statuses"] = [r["status"] for r in after]
    report["after_replicas"] = sorted({r["replica"] for r in after if r["replica"]})
    return report


def replica_rss_kb() -> int:
    """Summed resident memory of the engine replica processes (Ray names them ray::ServeReplica:...)."""
    return process_rss_kb(b"ServeReplica:ddpm:ddpm-engine")


def load(engine: str, out: Path) -> dict:
    """N concurrent clients, closed loop, for a bounded time; statuses and the replica's memory over the run."""
    config = ServiceConfig(engine=engine, max_batch=8, max_queue=64, max_count=2, timeout_s=120, port=free_port(),
                           metrics_port=free_port())
    url = start(config, num_cpus=2)
    clients, seconds = 6, 45.0
    kinds = [("ddim", 10), ("dpmpp-2m", 15), ("ddpm", 20), ("ddim", 25)]
    samples: list[tuple[float, int]] = []
    statuses: dict[str, int] = {}

    async def client(c: int) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            k = 0
            while time.perf_counter() - started < seconds:
                scheduler, steps = kinds[(c + k) % len(kinds)]
                r = await http.post(f"{url}/v1/images", content=json.dumps(
                    {"seed": 1000 * c + k, "steps": steps, "scheduler": scheduler, "count": 1 + (k % 2)}))
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                k += 1

    async def sampler() -> None:
        while time.perf_counter() - started < seconds:
            samples.append((round(time.perf_counter() - started, 1), replica_rss_kb()))
            await asyncio.sleep(1.0)

    async def main():
        await asyncio.gather(sampler(), *(client(c) for c in range(clients)))

    started = time.perf_counter()
    asyncio.run(main())
    with httpx.Client(timeout=30) as http:
        stats = http.get(f"{url}/v1/models").json()["models"][0]["stats"]
    return {"clients": clients, "seconds": seconds, "statuses": statuses, "rss_kb": samples, "stats": stats,
            "elapsed": round(time.perf_counter() - started, 1)}


def rss_by_pid(marker: bytes) -> dict[int, int]:
    """Resident memory (kB) of each process whose command line holds ``marker`` (Ray names its workers
    ray::ServeReplica:APP:DEPLOYMENT, ray::ProxyActor), by PID."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                out[int(proc.name)] = int(next(l for l in (proc / "status").read_text().splitlines()
                                               if l.startswith("VmRSS:")).split()[1])
        except (OSError, StopIteration):
            continue
    return out


def process_rss_kb(marker: bytes) -> int:
    return sum(rss_by_pid(marker).values())


# Hostile request bodies: each must get a 4xx with one line over HTTP (and an error code with one line from the
# C ABI, tests/embed/test_c_abi_fuzz.py).
ADVERSARIAL = [
    ("negative steps", b'{"steps": -5}'), ("huge steps", b'{"steps": 10000000000000000000000}'),
    ("negative count", b'{"count": -1}'), ("huge count", b'{"count": 4294967297}'),
    ("seed past 2^64", b'{"seed": 18446744073709551616}'), ("seed NaN", b'{"seed": NaN}'),
    ("eta Infinity", b'{"eta": Infinity, "scheduler": "ddim"}'), ("eta NaN", b'{"eta": NaN, "scheduler": "ddim"}'),
    ("steps as string", b'{"steps": "10"}'), ("count as float", b'{"count": 1.5}'), ("seeds not a list", b'{"seeds": 5}'),
    ("seeds of strings", b'{"seeds": ["a"]}'), ("seeds wrong length", b'{"count": 2, "seeds": [1]}'),
    ("unknown field", b'{"prompt": "a cat"}'), ("path-like scheduler", b'{"scheduler": "../../etc/passwd"}'),
    ("null byte in scheduler", b'{"scheduler": "ddim\\u0000"}'), ("invalid UTF-8", b'{"noise": "\xff\xfe"}'),
    ("top-level array", b"[1, 2, 3]"), ("top-level string", b'"hello"'), ("truncated", b'{"steps": 5'),
    ("100000 nested arrays", b"[" * 100_000), ("100000 nested objects", b'{"a":' * 100_000),
    ("20 MB string", b'{"scheduler": "' + b"x" * (20 << 20) + b'"}'),
    ("image not base64", b'{"image": "<svg onload=alert(1)>", "strength": 0.5}'),
    ("image not a PNG", b'{"image": "R0lGODlhAQABAAAAACw=", "strength": 0.5}'),
    ("image a truncated PNG", json.dumps({"image": RING[:40], "strength": 0.5}).encode()),
    ("image a decompression bomb", json.dumps({"image": base64.b64encode(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xea`\x00\x00\xea`\x08\x02\x00\x00\x00").decode(),
        "strength": 0.5}).encode()),
    ("image list of numbers", b'{"image": [1, 2, 3], "strength": 0.5}'), ("timeout negative", b'{"timeout_s": -1}'),
    ("batch and count", b'{"batch": 1, "count": 1}'), ("per_image_seeds as int", b'{"per_image_seeds": 1}'),
]
KEYS = ["k" * 20 + "-first-client", "k" * 20 + "-second-client"]
BODY_LIMIT = 4 << 20  # large enough that a replica holding it would show in its resident memory


RSS_MARKERS = {"ingress replica": b"ServeReplica:ddpm:ddpm-api", "HTTP proxy": b"ProxyActor"}


def hostile(engine: str, out: Path) -> dict:
    """API keys, per-key limits, body and depth limits, the published schema: statuses and one-line bodies."""
    os.environ["DDPM_DEPLOY_API_KEYS"] = ",".join(KEYS)
    config = ServiceConfig(engine=engine, max_batch=4, max_queue=8, max_count=3, timeout_s=60, port=free_port(),
                           metrics_port=free_port(), max_in_flight_per_key=2, max_body_bytes=BODY_LIMIT)
    url = start(config, num_cpus=2)
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    report: dict = {}

    def answer(r: httpx.Response) -> dict:
        return {"status": r.status_code, "body": r.text if r.status_code != 200 else "", "retry_after": r.headers.get("retry-after"),
                "www_authenticate": r.headers.get("www-authenticate")}

    with httpx.Client(timeout=60) as client:
        calls_before = client.get(f"{url}/v1/models", headers=auth).json()["models"][0]["stats"]["engine_calls"]
        report["auth"] = {
            "no key": answer(client.post(f"{url}/v1/images", content='{"steps": 2}')),
            "wrong key": answer(client.post(f"{url}/v1/images", content='{"steps": 2}', headers={"Authorization": "Bearer " + "x" * 33})),
            "basic scheme": answer(client.post(f"{url}/v1/images", content='{"steps": 2}', headers={"Authorization": f"Basic {KEYS[0]}"})),
            "models without key": answer(client.get(f"{url}/v1/models")),
            "metrics without key": answer(client.get(f"{url}/metrics")),
            "healthz without key": answer(client.get(f"{url}/healthz")),
            "good key": answer(client.post(f"{url}/v1/images", content='{"steps": 2}', headers=auth)),
            "second key": answer(client.post(f"{url}/v1/images", content='{"steps": 2}',
                                             headers={"Authorization": f"Bearer {KEYS[1]}"})),
        }
        report["engine_calls_for_refused"] = (client.get(f"{url}/v1/models", headers=auth).json()["models"][0]["stats"]
                                              ["engine_calls"] - calls_before - 2 * 2)  # minus the two good requests
        schema = client.get(f"{url}/openapi.json")
        report["openapi"] = {"status": schema.status_code,
                             "images_body": schema.json()["paths"]["/v1/images"]["post"]["requestBody"]["content"]
                             ["application/json"]["schema"] if schema.status_code == 200 else None}
        limit = int(client.get(f"{url}/v1/models", headers=auth).json()["models"][0].get("max_body_bytes", 0))
        report["body_limit"] = limit
        report["declared_too_large"] = answer(client.post(f"{url}/v1/images", content=b" " * (limit + 1), headers=auth))
        report["deep"] = answer(client.post(f"{url}/v1/images", content="[" * 100_000 + "]" * 100_000, headers=auth))
        report["deep_object"] = answer(client.post(f"{url}/v1/images", content='{"seeds": ' + "[" * 40 + "]" * 40 + "}",
                                                   headers=auth))

    bodies = [asyncio.run(post_all(url, [body], headers=auth))[0] for _, body in ADVERSARIAL]  # one at a time: 2 per key
    report["adversarial"] = {name: {"status": r["status"], "body": r["content"][:300].decode("utf-8", "replace"),
                                    "error": r.get("error")}
                             for (name, _), r in zip(ADVERSARIAL, bodies)}

    # a client streaming ten times the limit without a length: cut off; the ingress replica's memory
    rss_before = {name: process_rss_kb(marker) for name, marker in RSS_MARKERS.items()}
    sent = {"bytes": 0}

    def stream():
        chunk = b" " * (64 << 10)
        while sent["bytes"] < 10 * limit:
            sent["bytes"] += len(chunk)
            yield chunk

    try:
        with httpx.Client(timeout=60) as client:
            r = client.post(f"{url}/v1/images", content=stream(), headers=auth)
            report["streamed"] = {**answer(r), "sent_bytes": sent["bytes"]}
    except httpx.HTTPError as exc:  # the server may close the connection while the client still sends
        report["streamed"] = {"status": None, "error": type(exc).__name__, "sent_bytes": sent["bytes"]}
    report["rss_growth_kb"] = {name: process_rss_kb(marker) - rss_before[name] for name, marker in RSS_MARKERS.items()}

    # per-key requests in flight: 4 at once with one key (limit 2), 1 with the other
    bodies = [{"seed": k, "steps": 300} for k in range(4)]

    async def flood():
        async with httpx.AsyncClient(timeout=120) as client:
            async def one(body, key):
                r = await client.post(f"{url}/v1/images", content=json.dumps(body), headers={"Authorization": f"Bearer {key}"})
                return answer(r)
            return await asyncio.gather(*(one(b, KEYS[0]) for b in bodies), one({"steps": 5}, KEYS[1]))

    results = asyncio.run(flood())
    report["per_key"] = {"first_key": results[:4], "second_key": results[4]}
    return report


def serve_run(engine: str, out: Path) -> dict:
    """Ray's own `serve run` of the files `python -m serve config` writes (serve_config.yaml, serve.env), no
    python -m serve: the MIXED requests (to compare with the CLI), the ADVERSARIAL bodies and the API keys."""
    import signal
    import subprocess

    from serve import deploy
    from serve.application import prepare

    os.environ["DDPM_DEPLOY_API_KEYS"] = ",".join(KEYS)  # the node environment the builder reads them from
    config = ServiceConfig(engine=engine, max_batch=4, max_queue=len(MIXED), max_count=3, timeout_s=60, port=free_port(),
                           metrics_port=free_port(), max_in_flight_per_key=len(MIXED))
    files = {p.name: p for p in deploy.write(prepare(config), out / "deploy")}
    node_env = dict(line.split("=", 1) for line in files["serve.env"].read_text().splitlines())
    env = {**os.environ, **node_env, "PYTHONPATH": str(Path.cwd())}
    serve_cli = str(Path(sys.executable).parent / "serve")
    # --address local: a Ray of its own, never the one /tmp/ray/ray_current_cluster names (an earlier `ray start`, or
    # a test's ray.cluster_utils.Cluster, leaves it behind; serve run would try to join that, dead or not)
    proc = subprocess.Popen([serve_cli, "run", "--address", "local", str(files["serve_config.yaml"])], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{config.port}"
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    started = time.perf_counter()
    report: dict = {"node_env": node_env}
    try:
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.perf_counter() - started > 120:  # ready in ~10 s when all is well
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                    raise AssertionError(f"serve run exited {proc.poll()} or was not ready in 120 s: "
                                         f"{proc.communicate(timeout=30)[0][-3000:]}")
                time.sleep(0.5)
            report["startup_s"] = round(time.perf_counter() - started, 1)
            report["models"] = client.get(f"{url}/v1/models", headers=auth).json()
            report["no_key"] = client.post(f"{url}/v1/images", content='{"steps": 2}').status_code
        responses = asyncio.run(post_all(url, MIXED, headers=auth))
        report["mixed"] = [{"status": r["status"], "type": r["type"], "engine": r["engine"],
                            "files": save_images(r, out, f"mixed{i}") if r["status"] == 200 else [],
                            "body": r["content"][:300].decode("utf-8", "replace") if r["status"] != 200 else ""}
                           for i, r in enumerate(responses)]
        bodies = [asyncio.run(post_all(url, [body], headers=auth))[0] for _, body in ADVERSARIAL]
        report["adversarial"] = {name: {"status": r["status"], "body": r["content"][:300].decode("utf-8", "replace"),
                                        "error": r.get("error")} for (name, _), r in zip(ADVERSARIAL, bodies)}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            report["exit_code"] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            report["exit_code"] = None
    return report


JOB_REQUEST = {"seed": 21, "steps": 40, "scheduler": "ddim", "count": 2, "preview_every": 10}
LONG_JOB = {"seed": 22, "steps": 1000, "count": 3, "preview_every": 100}  # several seconds: cancelled mid-way


def read_events(client: httpx.Client, url: str, headers: dict) -> list[dict]:
    """A job's server-sent events until the stream ends: [{"id", "event", "data"}]."""
    events, current = [], {}
    with client.stream("GET", url, headers=headers, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), (r.status_code, r.read())
        for line in r.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                continue
            else:
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else int(value) if name == "id" else value
    return events


def jobs(engine: str, out: Path) -> dict:
    """/v1/jobs: a job with previews followed to its end over server-sent events, its result; ownership per key;
    cancellation; the per-key bound; a job whose only engine replica is killed runs again."""
    import ray

    os.environ["DDPM_DEPLOY_API_KEYS"] = ",".join(KEYS)
    config = ServiceConfig(engine=engine, max_batch=4, max_queue=8, max_count=3, timeout_s=60, port=free_port(),
                           metrics_port=free_port(), max_jobs_per_key=3, job_timeout_s=600)
    url = start(config, num_cpus=2)
    auth, other = ({"Authorization": f"Bearer {k}"} for k in KEYS)
    report: dict = {}
    with httpx.Client(timeout=60) as client:
        created = client.post(f"{url}/v1/jobs", content=json.dumps(JOB_REQUEST), headers=auth)
        report["created"] = {"status": created.status_code, "body": created.json(), "location": created.headers.get("location")}
        job_id = created.json()["id"]
        report["other_key"] = client.get(f"{url}/v1/jobs/{job_id}", headers=other).status_code
        report["no_key"] = client.get(f"{url}/v1/jobs/{job_id}").status_code
        report["events"] = read_events(client, f"{url}/v1/jobs/{job_id}/events", auth)
        report["state"] = client.get(f"{url}/v1/jobs/{job_id}", headers=auth).json()
        result = client.get(f"{url}/v1/jobs/{job_id}/result", headers=auth)
        report["result"] = {"status": result.status_code, "engine": result.headers.get("x-engine-sha256")}
        report["result"]["files"] = save_images({"type": "application/json", "content": result.content}, out, "job")
        previews = [e for e in report["events"] if e["event"] == "preview"]
        for e in previews:
            (out / f"preview_{e['data']['steps_done']}.png").write_bytes(base64.b64decode(e["data"]["png_base64"]))
        report["resumed"] = read_events(client, f"{url}/v1/jobs/{job_id}/events", {**auth, "Last-Event-ID": "3"})[:1]

        # cancel a long job mid-way: its rows leave the batch
        stats = lambda: client.get(f"{url}/v1/models", headers=auth).json()["models"][0]["stats"]  # noqa: E731
        cancelled_before = stats()["cancelled"]
        long_id = client.post(f"{url}/v1/jobs", content=json.dumps(LONG_JOB), headers=auth).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"{url}/v1/jobs/{long_id}", headers=auth).json()["steps_done"] < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        running = client.get(f"{url}/v1/jobs/{long_id}", headers=auth).json()
        early = client.get(f"{url}/v1/jobs/{long_id}/result", headers=auth)
        deleted = client.delete(f"{url}/v1/jobs/{long_id}", headers=auth)
        time.sleep(1)
        report["cancel"] = {"running": running, "early_result": [early.status_code, early.text], "deleted": deleted.json(),
                            "after": client.get(f"{url}/v1/jobs/{long_id}", headers=auth).status_code,
                            "cancelled": stats()["cancelled"] - cancelled_before, "in_flight": stats()["in_flight"]}

        # the per-key bound: the first job is kept (finished); two more fit, a fourth is refused
        more = [client.post(f"{url}/v1/jobs", content=json.dumps({"seed": k, "steps": 5}), headers=auth) for k in range(3)]
        report["bound"] = [(r.status_code, r.text if r.status_code != 202 else "") for r in more]
        fits = client.post(f"{url}/v1/jobs", content='{"steps": 5}', headers=other)
        report["other_key_still_fits"] = fits.status_code
        client.delete(f"{url}/v1/jobs/{fits.json()['id']}", headers=other)
        report["bad_preview"] = [client.post(f"{url}/v1/jobs", content=body, headers=other).text
                                 for body in ('{"preview_every": 0}', '{"preview_every": "x"}')]
        for r in more:
            if r.status_code == 202:
                client.delete(f"{url}/v1/jobs/{r.json()['id']}", headers=auth)

        # the only engine replica killed mid-job: Serve replaces it, the job runs again, the same images
        job = client.post(f"{url}/v1/jobs", content=json.dumps(LONG_JOB | {"seed": 23, "steps": 400}), headers=auth).json()
        deadline = time.monotonic() + 60
        while client.get(f"{url}/v1/jobs/{job['id']}", headers=auth).json()["steps_done"] < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        (victim,) = engine_replicas()
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
        events = read_events(client, f"{url}/v1/jobs/{job['id']}/events", auth)
        state = client.get(f"{url}/v1/jobs/{job['id']}", headers=auth).json()
        result = client.get(f"{url}/v1/jobs/{job['id']}/result", headers=auth)
        report["replica_killed_events"] = len(events)
        report["replica_killed"] = {"state": state, "restarted": [e for e in events if e["event"] == "restarted"],
                                    "status": result.status_code,
                                    "files": save_images({"type": "application/json", "content": result.content}, out, "killed")
                                    if result.status_code == 200 else result.text}
    # bench.load drives jobs: a bounded Poisson stream, each followed to its result
    from bench.load import run_stream, schedule

    load = asyncio.run(run_stream(url, "jobs", schedule(2.0, 8, 0), [("ddim", 10), ("dpmpp-2m", 12)], 30, 0, timeout=60,
                                  jobs=True, api_key=KEYS[1]))
    report["bench_load"] = load.summary()
    return report


def rollout(engine: str, out: Path) -> dict:
    """A new engine version (the FP16 engine of the same model: a new config, as `serve deploy` of an edited file
    gives) rolled out while four clients send requests: every answer, which engine gave it, and whether its image
    equals that engine's offline image."""
    import shutil
    import subprocess
    import threading

    folder = out / "engines"
    shutil.copytree(Path(engine).parent, folder)
    subprocess.run([sys.executable, "-m", "export.fp16", "--engines", str(folder)], check=True, capture_output=True)
    engines = {str(folder / "unet.onnx"): None, str(folder / "unet.fp16.onnx"): None}
    manifest = json.loads((folder / "manifest.json").read_text())["artifacts"]
    shas = {manifest[Path(path).name]["sha256"]: path for path in engines}
    base = dict(max_batch=4, max_queue=16, max_count=1, timeout_s=60, port=free_port(), metrics_port=free_port())
    old, new = list(engines)
    url = start(ServiceConfig(engine=old, **base), num_cpus=2)
    answers: list[dict] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    async def client(c: int) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            k = 0
            while not stop.is_set():
                body = {"seed": 1000 * c + k, "steps": 8, "scheduler": "ddim"}
                sent = time.perf_counter() - t0
                try:
                    r = await http.post(f"{url}/v1/images", content=json.dumps(body))
                    answers.append({"body": body, "sent_s": sent, "status": r.status_code, "engine": r.headers.get("x-engine-sha256"),
                                    "content": r.content, "latency_s": time.perf_counter() - t0 - sent})
                except httpx.TransportError as exc:
                    answers.append({"body": body, "sent_s": sent, "status": None, "error": type(exc).__name__})
                k += 1

    async def clients() -> None:
        await asyncio.gather(*(client(c) for c in range(4)))

    thread = threading.Thread(target=lambda: asyncio.run(clients()))
    thread.start()
    time.sleep(4)
    report: dict = {"rollout_started_s": round(time.perf_counter() - t0, 2)}
    start(ServiceConfig(engine=new, **base))  # serve.run of the new version: new replicas up, then the old drained
    report["rollout_done_s"] = round(time.perf_counter() - t0, 2)
    time.sleep(4)
    stop.set()
    thread.join(timeout=120)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    from runtime import Pipeline
    from runtime.requests import SampleRequest

    pipes = {sha: Pipeline.load(path, device="cpu") for sha, path in shas.items()}
    outcomes = []
    for a in answers:
        outcome = {"sent_s": round(a["sent_s"], 2), "latency_s": round(a.get("latency_s", -1), 3), "status": a["status"], "engine": Path(shas.get(a["engine"], "?")).name
                   if a["status"] == 200 else a.get("error") or a["content"][:200].decode("utf-8", "replace")}
        if a["status"] == 200 and a["engine"] in pipes:
            outcome["correct"] = bool(np.array_equal(decode(a), pipes[a["engine"]].sample(SampleRequest(**a["body"]))))
        outcomes.append(outcome)
    report["outcomes"] = outcomes
    return report


def replica_grpc_call(port: int, token: str | None) -> str:
    """A handle call (Serve's inter-deployment gRPC method) to a replica's port, with or without a bearer token:
    the gRPC status name it gets."""
    import grpc

    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        try:
            call(b"", timeout=10, metadata=metadata)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def listeners(engine: str, out: Path) -> dict:
    """Every listening socket here: with `python -m serve` as it starts by default (Ray in a namespace of its own,
    the ingress forwarded), then with Ray in this namespace (--expose-ray, or the in-process start), where a handle
    call to each replica's gRPC port without Ray's token is tried."""
    import signal

    from serve.listeners import table

    report: dict = {}
    proc, url = start_service_process(engine, out, {"max_batch": 4, "max_count": 4})
    port = int(url.rsplit(":", 1)[1])
    report["ingress_port"] = port
    report["isolated"] = table(port)
    with httpx.Client(timeout=60) as client:
        report["isolated_image"] = client.post(f"{url}/v1/images", content='{"steps": 4}').status_code
    proc.send_signal(signal.SIGTERM)
    report["isolated_exit"] = proc.wait(timeout=120)
    report["isolated_after_exit"] = table()

    config = ServiceConfig(engine=engine, max_batch=4, port=free_port(), metrics_port=free_port())
    start(config, num_cpus=2)
    report["exposed"] = table(config.port, os.getpid())
    replicas = sorted({r["port"] for r in report["exposed"] if r["carries"].startswith("Serve replica")})
    report["replica_grpc"] = {port: {"no token": replica_grpc_call(port, None), "wrong token": replica_grpc_call(port, "x" * 32)}
                              for port in replicas}
    return report


def fuzz(engine: str, out: Path) -> dict:
    """Schemathesis against the published schema, time-bounded: no server error, every refusal one line
    (tests/serve/schemathesis_hooks.py). One worker: with two, Hypothesis' ast.parse in both threads hits
    CPython 3.11.7's "AST constructor recursion depth mismatch" (a thread race, fixed in 3.11.8, gh-106905)."""
    import subprocess

    seconds = float(os.environ.get("DDPM_DEPLOY_FUZZ_SECONDS", "45"))
    # finished jobs forgotten after 2 s: the fuzzer's jobs free their slots, and its stateful phase follows some
    config = ServiceConfig(engine=engine, max_batch=8, max_queue=32, max_count=3, max_steps=20, timeout_s=30,
                           port=free_port(), metrics_port=free_port(), job_ttl_s=2, max_jobs_per_key=32)
    url = start(config, num_cpus=2)
    report_path = out / "schemathesis.json"
    started = time.perf_counter()
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.serve.schemathesis_hooks"}  # the check: service_contract
    r = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json", "--checks", "service_contract",
                        "--max-time", str(int(seconds)), "--seed", "0", "--workers", "1", "--request-timeout", "60",
                        "--generation-database", "none", "--no-color", "--report", "json", "--report-json-path", str(report_path)],
                       capture_output=True, text=True, timeout=seconds + 300, env=env)
    return {"returncode": r.returncode, "seconds": round(time.perf_counter() - started, 1), "stdout_tail": r.stdout[-4000:],
            "stderr_tail": r.stderr[-2000:], "report": json.loads(report_path.read_text()) if report_path.exists() else None}


def start_service_process(engine: str, out: Path, config: dict) -> tuple:
    """``python -m serve`` as its own process (as `make serve` starts it); (process, url) once it is ready."""
    import subprocess

    config_path, ready = out / "service.json", out / "ready"
    config_path.write_text(json.dumps({"metrics_port": free_port(), **config}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--engine", engine, "--port", str(port), "--config", str(config_path),
                             "--num-cpus", "2", "--ready-file", str(ready)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 240
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), proc.communicate(timeout=30)[0][-3000:] if proc.poll() is not None else "not ready in time"
    return proc, ready.read_text().strip()


def sigterm(engine: str, out: Path) -> dict:
    """SIGTERM while requests are in flight: they finish (within the grace time); new ones get 503 until the
    proxy stops, then connections are refused. Counts of each."""
    import signal

    proc, url = start_service_process(engine, out, {"shutdown_grace_s": 180, "max_batch": 8, "max_count": 1, "timeout_s": 240})
    in_flight = [{"seed": k, "steps": 150, "scheduler": "ddpm"} for k in range(6)]
    expected = expected_images(engine, in_flight)
    report: dict = {}

    async def scenario():
        async with httpx.AsyncClient(timeout=120) as client:
            async def post(body):
                try:
                    r = await client.post(f"{url}/v1/images", content=json.dumps(body))
                    return {"status": r.status_code, "content": r.content, "body": r.text if r.status_code != 200 else ""}
                except httpx.TransportError as exc:
                    return {"status": None, "error": type(exc).__name__}

            running = [asyncio.create_task(post(body)) for body in in_flight]
            await asyncio.sleep(1.5)  # admitted and stepping
            proc.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            late = []
            while proc.poll() is None and len(late) < 40:  # while draining, and a few once the proxy is gone
                late.append(await post({"seed": 99, "steps": 2}))
                await asyncio.sleep(0.25)
            done = await asyncio.gather(*running)
            return done, late, signalled

    done, late, signalled = asyncio.run(scenario())
    output = proc.communicate(timeout=120)[0]
    report["exit_code"] = proc.returncode
    report["stopped_after_s"] = round(time.perf_counter() - signalled, 1)
    report["in_flight"] = [{"status": r["status"], "correct": r["status"] == 200 and bool(np.array_equal(decode(r), want))}
                           for r, want in zip(done, expected)]
    # The first may still be admitted (sent before the drain took effect): it then finishes like the others.
    report["new_requests"] = {"admitted": sum(r["status"] == 200 for r in late[:2]), "503": sum(r["status"] == 503 for r in late),
                              "refused": sum(r["status"] is None for r in late),
                              "other": [{k: v for k, v in r.items() if k != "content"} for r in late[2:] if r["status"] not in (503, None)]
                                       + [r for r in late[:2] if r["status"] not in (200, 503, None)],
                              "bodies_503": sorted({r["body"] for r in late if r["status"] == 503})}
    report["stopping_line"] = [line for line in output.splitlines() if line.startswith("stopping:")]
    return report


def make_serve(engine: str, out: Path) -> dict:
    """`make serve` / `make serve-stop` three times in a row, then a start that fails (a bad port)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    port = free_port()
    common = [f"ENGINE={engine}", f"SERVE_PID={out}/serve.pid", f"SERVE_READY={out}/serve.ready", f"SERVE_LOG={out}/serve.log"]
    runs = []
    for _ in range(3):
        started = subprocess.run(["make", "-s", "serve", f"SERVE_PORT={port}", *common], cwd=root, capture_output=True, text=True,
                                 timeout=300)
        with httpx.Client(timeout=30) as client:
            health = client.get(f"http://127.0.0.1:{port}/healthz").status_code if started.returncode == 0 else None
        stopped = subprocess.run(["make", "-s", "serve-stop", *common], cwd=root, capture_output=True, text=True, timeout=300)
        runs.append({"start": started.returncode, "start_out": started.stdout[-500:] + started.stderr[-500:], "healthz": health,
                     "stop": stopped.returncode, "stop_out": stopped.stdout[-300:]})
    bad = subprocess.run(["make", "-s", "serve", "SERVE_PORT=0", *common], cwd=root, capture_output=True, text=True, timeout=300)
    return {"runs": runs, "bad_port": {"code": bad.returncode, "out": bad.stdout[-800:] + bad.stderr[-800:]}}


def replaced(engine: str, out: Path) -> dict:
    """The engine file replaced under a running service (same size, mtime restored), then its replica killed:
    the new replica must refuse the file, not serve it as verified."""
    import shutil

    import ray
    from ray import serve

    folder = out / "engines"
    folder.mkdir()
    for name in ("unet.onnx", "manifest.json"):
        shutil.copy2(Path(engine).parent / name, folder / name)
    engine = str(folder / "unet.onnx")
    config = ServiceConfig(engine=engine, max_batch=4, timeout_s=30, port=free_port(), metrics_port=free_port())
    url = start(config, num_cpus=2)
    report: dict = {"before": asyncio.run(post_all(url, [{"steps": 3}]))[0]["status"]}
    before = os.stat(engine)
    raw = bytearray(Path(engine).read_bytes())
    raw[-1] ^= 1
    (folder / "new.onnx").write_bytes(bytes(raw))
    os.replace(folder / "new.onnx", engine)
    os.utime(engine, ns=(before.st_atime_ns, before.st_mtime_ns))
    report["served_by_the_loaded_replica"] = asyncio.run(post_all(url, [{"steps": 3}]))[0]["status"]  # verified at load
    victim = engine_replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    deadline, message = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        deployment = serve.status().applications["ddpm"].deployments["ddpm-engine"]
        message = deployment.message or ""
        if "does not match its manifest" in message:
            break
        time.sleep(0.5)
    report["replacement_replica"] = {"status": str(deployment.status), "message": message[-600:],
                                     "running": deployment.replica_states.get("RUNNING", 0)}
    return report


def soak(engine: str, out: Path) -> dict:
    """A bounded soak: two engine replicas, closed-loop clients with mixed requests, some clients that give up
    (disconnect), one replica killed a third of the way in. Every image is checked against the runtime's."""
    import ray

    seconds = float(os.environ.get("DDPM_DEPLOY_SOAK_SECONDS", "600"))
    config = ServiceConfig(engine=engine, num_replicas=2, cpus_per_replica=1, threads=1, max_batch=8, max_queue=64, max_count=2,
                           timeout_s=120, port=free_port(), metrics_port=free_port())
    url = start(config, num_cpus=2)
    kinds = [("ddim", 8), ("dpmpp-2m", 12), ("ddpm", 20), ("ddim", 30), ("dpmpp-2m", 6), ("ddpm", 10)]
    pool = [{"seed": 500 + i, "steps": kinds[i % 6][1], "scheduler": kinds[i % 6][0], "count": 1 + i % 2,
             **({"noise": "torch"} if i % 5 == 0 else {}), **({"per_image_seeds": True} if i % 7 == 3 else {})} for i in range(24)]
    expected = expected_images(engine, pool)
    latencies: list[float] = []
    outcomes = {"ok": 0, "wrong": 0, "failed": [], "disconnected": 0, "retried": 0}
    rss: dict[int, list[tuple[float, int]]] = {}
    events: dict = {}

    def check(i: int, content: bytes, kind: str) -> bool:
        import base64

        if kind.startswith("image/png"):
            pngs = [content]
        else:
            pngs = [base64.b64decode(item["png_base64"]) for item in json.loads(content)["images"]]
        got = np.concatenate([decode({"content": png}) for png in pngs])
        return bool(np.array_equal(got, expected[i]))

    async def client(c: int) -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            k = 0
            while time.perf_counter() - started < seconds:
                i = (7 * c + k) % len(pool)
                k += 1
                if k % 10 == 0:  # this client gives up almost at once: its request is cancelled
                    try:
                        await http.post(f"{url}/v1/images", content=json.dumps(pool[i]), timeout=0.05)
                    except httpx.TimeoutException:
                        outcomes["disconnected"] += 1
                    continue
                t0 = time.perf_counter()
                r = await http.post(f"{url}/v1/images", content=json.dumps(pool[i]))
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                    outcomes["ok" if check(i, r.content, r.headers.get("content-type", "")) else "wrong"] += 1
                    outcomes["retried"] += int(r.headers.get("x-attempts", "1")) > 1
                else:
                    outcomes["failed"].append({"status": r.status_code, "body": r.text[:200], "at_s": round(t0 - started, 1)})

    async def monitor() -> None:
        killed = False
        while time.perf_counter() - started < seconds:
            now = round(time.perf_counter() - started, 1)
            for pid, kb in rss_by_pid(b"ServeReplica:ddpm:ddpm-engine").items():
                rss.setdefault(pid, []).append((now, kb))
            if not killed and now >= seconds / 3:
                victim = engine_replicas()[0]
                ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
                events["killed"] = {"replica": victim["name"], "at_s": now}
                killed = True
            await asyncio.sleep(5)

    async def main():
        await asyncio.gather(monitor(), *(client(c) for c in range(4)))

    started = time.perf_counter()
    asyncio.run(main())
    q = np.percentile(latencies, [50, 95, 99]) if latencies else [None] * 3
    with httpx.Client(timeout=30) as http:
        stats = http.get(f"{url}/v1/models").json()["models"][0]["stats"]
    return {"seconds": seconds, "outcomes": outcomes, "requests": outcomes["ok"] + outcomes["wrong"] + len(outcomes["failed"])
            + outcomes["disconnected"], "latency_s": {"p50": q[0], "p95": q[1], "p99": q[2]}, "rss_kb": {str(k): v for k, v in rss.items()},
            "events": events, "last_replica_stats": stats}


# The cross-attention test model (tests/conftest.py xattn_engine): 6 tokens of 16, labels 0..2, a null embedding.
CONDITIONED = [
    {"seed": 1, "steps": 6, "scheduler": "ddim", "class_labels": [2], "guidance_scale": 3, "guidance_rescale": 0.7},
    {"seed": 2, "steps": 5, "scheduler": "dpmpp-2m", "count": 2, "class_labels": [0, 1], "format": "json"},
    {"seed": 3, "steps": 7, "scheduler": "ddpm", "embeddings": [[0.25] * 16] * 6, "negative_embeddings": [[0.0] * 16] * 6,
     "guidance_scale": 2.5},
    {"seed": 4, "steps": 4, "scheduler": "ddim"},  # no condition: the null embedding
]
BAD_CONDITIONS = [
    ("label out of range", {"class_labels": [3]}),
    ("labels for another count", {"class_labels": [0, 1], "count": 3}),
    ("embedding of the wrong shape", {"embeddings": [[1.0] * 16] * 5}),
    ("ragged embedding", {"embeddings": [[1.0] * 16, [1.0]]}),
    ("text in an embedding", {"embeddings": [["a"] * 16] * 6}),
    ("embedding beyond float32", {"embeddings": [[1e39] * 16] * 6}),
    ("guidance below 1", {"class_labels": [0], "guidance_scale": 0.5}),
    ("guidance without a condition", {"guidance_scale": 2}),
    ("rescale without guidance", {"class_labels": [0], "guidance_rescale": 0.5}),
    ("rescale above 1", {"class_labels": [0], "guidance_scale": 2, "guidance_rescale": 1.5}),
    ("negative without guidance", {"class_labels": [0], "negative_embeddings": [[0.0] * 16] * 6}),
    ("labels as text", {"class_labels": "1"}),
    ("a label as a float", {"class_labels": [1.5]}),
    ("guidance over max_batch", {"count": 3, "class_labels": [0], "guidance_scale": 2}),
]


def start_described(engine: str) -> tuple[str, dict]:
    """A small service for one model: (its URL, a report holding its /v1/models answer)."""
    # max_queue holds every MIXED request (on a fast machine all arrive before the first is admitted), and the
    # flood below still overflows it
    config = ServiceConfig(engine=engine, max_batch=4, max_queue=len(MIXED), max_count=3, timeout_s=60, port=free_port(),
                           metrics_port=free_port())
    url = start(config, num_cpus=2)
    with httpx.Client(timeout=60) as client:
        return url, {"models": client.get(f"{url}/v1/models").json()}


def conditioned(engine: str, out: Path) -> dict:
    """Conditioned requests (labels, embeddings, guidance) over HTTP: images, refusals, the model description."""
    url, report = start_described(engine)
    responses = asyncio.run(post_all(url, CONDITIONED))
    report["served"] = [{"status": r["status"], "files": save_images(r, out, f"cond{i}") if r["status"] == 200 else [],
                         "body": r["content"][:300].decode("utf-8", "replace") if r["status"] != 200 else ""}
                        for i, r in enumerate(responses)]
    bad = asyncio.run(post_all(url, [{**body, "steps": 2} for _, body in BAD_CONDITIONS]))
    report["bad"] = {name: {"status": r["status"], "body": r["content"].decode()} for (name, _), r in zip(BAD_CONDITIONS, bad)}
    return report


LATENT_REQUESTS = [{"seed": 1, "steps": 5, "count": 2, "format": "json"}, {"seed": 2, "steps": 4, "scheduler": "dpmpp-2m"}]


def latent(engine: str, out: Path) -> dict:
    """A latent-diffusion engine (UNet + decoder) over HTTP: the model description's image shape, decoded images."""
    url, report = start_described(engine)
    responses = asyncio.run(post_all(url, LATENT_REQUESTS))
    report["served"] = [{"status": r["status"], "files": save_images(r, out, f"latent{i}") if r["status"] == 200 else []}
                        for i, r in enumerate(responses)]
    return report


SCENARIOS = {"listeners": listeners, "rollout": rollout, "jobs": jobs, "serve_run": serve_run, "soak": soak, "conditioned": conditioned, "latent": latent, "basic": basic, "cluster": cluster, "load": load, "hostile": hostile, "fuzz": fuzz, "sigterm": sigterm,
             "make_serve": make_serve, "replaced": replaced}

if __name__ == "__main__":
    name, engine, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    print("SCENARIO-RESULT " + json.dumps(SCENARIOS[name](engine, out), default=str), flush=True)
    os._exit(0)  # do not wait for Ray's shutdown hooks
