"""The Ray Serve image service (serve/), end to end. Every run happens inside a network namespace with only
loopback (serve.netns): Ray listens on all interfaces whatever it is told. The scenario (one Ray start)
acts as the clients there and reports; the checks are here."""

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from serve import netns
from tests.conftest import ROOT, read_png, sample_offline
from tests.serve.scenario import BAD, BAD_CONDITIONS, CONDITIONED, LATENT_REQUESTS, MIXED

pytestmark = [pytest.mark.service, pytest.mark.skipif(netns.available() is not None, reason=str(netns.available()))]
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'ddpm-deploy[serve]')")


def run_scenario(name, engine, out, tmp_path, timeout=600):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "DDPM_DEPLOY_CACHE_DIR": str(tmp_path / "cache")}
    (tmp_path / "cache").mkdir(exist_ok=True)
    r = subprocess.run(netns.wrap([sys.executable, "-m", "tests.serve.scenario", name, str(engine), str(out)]), cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("SCENARIO-RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(lines[-1][len("SCENARIO-RESULT "):])


@pytest.fixture(scope="module")
def basic(demo_cache_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_basic")
    return run_scenario("basic", demo_cache_engine, tmp / "out", tmp), tmp


def test_images_equal_runtime_sample_offline(basic, demo_cache_engine, tmp_path):
    report, _ = basic
    assert_mixed_equal_offline(report["mixed"], demo_cache_engine, tmp_path)


def assert_mixed_equal_offline(mixed, engine, tmp_path):
    """Each served MIXED request: 200, its images and PNG metadata equal to runtime.sample's offline."""
    for i, (request, served) in enumerate(zip(MIXED, mixed, strict=True)):
        assert served["status"] == 200, (request, served)
        assert served["type"].startswith("image/png" if request.get("count", 1) == 1 and request.get("format") != "json"
                                         else "application/json")
        expected = sample_offline(engine, request, tmp_path / f"cli{i}")
        got = [read_png(p) for p in served["files"]]
        assert len(got) == len(expected)
        for (pixels, text), (want_pixels, want_text) in zip(got, expected):
            np.testing.assert_array_equal(pixels, want_pixels, err_msg=json.dumps(request))
            assert text == want_text, (request, text, want_text)


def test_only_the_ingress_is_reachable_and_a_replica_port_refuses_calls_without_the_token(demo_engine, tmp_path):
    """`python -m serve` (the default start): the one listener in its network namespace is the forwarded ingress.
    Ray in this namespace (--expose-ray, or an in-process start): every listener is one of Ray's known kinds, the
    replicas' inter-deployment gRPC servers listen on every interface and refuse a handle call without the token."""
    from serve.listeners import FORWARDED, INTER_DEPLOYMENT, markdown

    report = run_scenario("listeners", demo_engine, tmp_path / "out", tmp_path)
    print(f"\npython -m serve (default):\n{markdown(report['isolated'])}\nRay in this namespace:\n{markdown(report['exposed'])}"
          f"\nhandle calls to the replicas' gRPC ports: {report['replica_grpc']}")
    assert [(r["address"], r["port"], r["carries"]) for r in report["isolated"]] == [("127.0.0.1", report["ingress_port"], FORWARDED)]
    assert report["isolated_image"] == 200 and report["isolated_exit"] == 0 and report["isolated_after_exit"] == []
    assert [r for r in report["exposed"] if r["carries"] == "unknown"] == []
    inter = [r for r in report["exposed"] if r["carries"] == INTER_DEPLOYMENT]
    assert len(inter) == 2 and {r["address"] for r in inter} <= {"::", "0.0.0.0"}  # the ingress and the engine replica
    for row in inter:
        assert report["replica_grpc"][str(row["port"])] == {"no token": "UNAUTHENTICATED", "wrong token": "UNAUTHENTICATED"}


def test_ingress_listens_on_loopback(basic):
    report, _ = basic
    ingress = [a for a in report["listeners"] if a.endswith(f":{report['ingress_port']}")]
    assert ingress == [f"127.0.0.1:{report['ingress_port']}"], report["listeners"]


EXPECTED_BAD = {
    "not json": "request body is not valid JSON", "not an object": "must be a JSON object",
    "unknown field": "unknown field(s) sed", "wrong type": "'steps' has the wrong type",
    "unknown scheduler": "unknown scheduler 'euler'", "steps 0": "steps must be", "steps above the limit": "steps must be at most",
    "count above the limit": "count must be at most 3", "png for two images": "format must be json",
    "negative eta": "eta must be", "unknown noise": "unknown noise kind 'gauss'", "timeout above the limit": "timeout_s must be in",
    "image of another size": "image is 8x8 with 1 channel; this model takes 16x16 with 1 channel",
    "mask of another size": "mask_image is 8x8 and image 16x16", "strength 0": "strength must be a number in (0, 1]",
    "strength without image": "give image too", "image for a sampler without image-to-image": "image-to-image runs with",
}


def test_bad_requests_get_400_with_one_line_and_write_nothing(basic):
    report, _ = basic
    assert set(report["bad"]) == {name for name, _ in BAD} == set(EXPECTED_BAD)
    for name, answer in report["bad"].items():
        assert answer["status"] == 400 and EXPECTED_BAD[name] in answer["body"], (name, answer)
        assert answer["body"].count("\n") == 1 and "Traceback" not in answer["body"]
    assert report["nothing_written"]


def test_deadline_is_504_full_queue_is_503_with_retry_after(basic):
    report, _ = basic
    assert report["deadline"]["status"] == 504 and "did not finish within its timeout" in report["deadline"]["content"]
    statuses = [r["status"] for r in report["flood"]]
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}, statuses
    for r in report["flood"]:
        if r["status"] == 503:
            assert r["retry_after"] == "1" and "retry later" in r["body"] and r["body"].count("\n") == 1


def test_a_client_that_disconnects_is_cancelled(basic):
    report, _ = basic
    assert report["disconnect"]["cancelled"] == 1 and report["disconnect"]["in_flight"] == 0, report["disconnect"]


def test_health_models_and_metrics(basic, demo_cache_engine):
    report, _ = basic
    assert report["healthz"] == [200]
    model = report["models"]["models"][0]
    manifest = json.loads((demo_cache_engine.parent / "manifest.json").read_text())
    assert model["sha256"] == manifest["artifacts"]["unet.onnx"]["sha256"] and model["image"] == [16, 16, 1]
    for series in ("ray_ddpm_batch_rows_bucket", "ray_ddpm_step_seconds_bucket", "ray_ddpm_queue_length",
                   "ray_ddpm_requests_total", "ray_ddpm_http_requests_total"):
        assert series in report["metrics"], series


@pytest.mark.slow
def test_two_nodes_two_replicas_survive_a_killed_replica(demo_engine, tmp_path):
    report = run_scenario("cluster", demo_engine, tmp_path / "out", tmp_path, timeout=900)
    print(f"\ncluster: {json.dumps({k: v for k, v in report.items() if k != 'load'})}")
    print("under load, one replica killed: (status, attempts) " + json.dumps([(o["status"], o.get("attempts")) for o in report["load"]]))
    assert report["nodes"] == 2
    assert len(report["warm_replicas"]) == 2 and len({r.split("@node-")[1] for r in report["warm_replicas"]}) == 2
    for outcome in report["load"]:
        if outcome["status"] == 200:
            assert outcome["correct"], outcome
        else:
            assert outcome["status"] in (500, 503, 504) and outcome["body"].count("\n") == 1, outcome
    statuses = [o["status"] for o in report["load"]]
    assert report["killed_at_s"] < report["load_seconds"] and statuses.count(200) >= 1  # the kill landed mid-load
    assert any(o.get("attempts", 1) > 1 for o in report["load"])  # requests of the killed replica ran again elsewhere
    assert report["recovered_replicas"].get("RUNNING") == 2 and report["killed"] not in report["replicas_after"]
    assert report["after_statuses"] == [200] * 16 and len(report["after_replicas"]) == 2


LOAD_RSS_GROWTH_KB = 64 * 1024  # after the first 10 s; a replica holds ~250 MB; 64 MB is no leak at this rate


@pytest.mark.slow
def test_load_many_clients_no_errors_flat_memory(demo_engine, tmp_path):
    report = run_scenario("load", demo_engine, tmp_path / "out", tmp_path, timeout=900)
    rss = [kb for t, kb in report["rss_kb"] if t >= 10]
    print(f"\nload: {report['clients']} clients x {report['seconds']} s: {report['statuses']}, stats {report['stats']}; "
          f"replica RSS {rss[0]} → {rss[-1]} kB (max {max(rss)})")
    assert set(report["statuses"]) == {"200"} and report["statuses"]["200"] > 20
    assert max(rss) - rss[0] < LOAD_RSS_GROWTH_KB


@pytest.fixture(scope="module")
def hostile(demo_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_hostile")
    return run_scenario("hostile", demo_engine, tmp / "out", tmp)


def one_line(answer):
    return answer["body"].count("\n") == 1 and "Traceback" not in answer["body"]


def test_api_keys_gate_everything_but_health_and_cost_no_engine_work(hostile):
    auth = hostile["auth"]
    for name in ("no key", "wrong key", "basic scheme", "models without key", "metrics without key"):
        answer = auth[name]
        assert answer["status"] == 401 and answer["www_authenticate"] == "Bearer", (name, answer)
        assert "API key" in answer["body"] and one_line(answer)
    assert auth["healthz without key"]["status"] == 200
    assert auth["good key"]["status"] == 200 and auth["second key"]["status"] == 200
    assert hostile["engine_calls_for_refused"] == 0


def test_published_schema_is_the_request_type(hostile):
    from runtime.requests import SampleRequest

    assert hostile["openapi"]["status"] == 200
    body = hostile["openapi"]["images_body"]
    assert body["additionalProperties"] is False and set(body["properties"]) == set(SampleRequest.json_schema()["properties"]) | {"format"}
    assert body["properties"]["count"] == SampleRequest.json_schema()["properties"]["count"]


def test_bodies_past_the_limit_are_413_and_cut_off_while_reading(hostile):
    from tests.serve.scenario import BODY_LIMIT

    assert hostile["body_limit"] == BODY_LIMIT
    assert hostile["declared_too_large"]["status"] == 413 and one_line(hostile["declared_too_large"])
    streamed = hostile["streamed"]
    assert streamed["status"] in (413, None), streamed  # an answer, or the connection closed under the sender
    for name, growth in hostile["rss_growth_kb"].items():  # ten times the limit was offered
        assert growth * 1024 < BODY_LIMIT, (name, growth, streamed)


def test_adversarial_bodies_get_4xx_with_one_line(hostile):
    assert_adversarial_refused(hostile["adversarial"], hostile["body_limit"])


def assert_adversarial_refused(answers, body_limit):
    from tests.serve.scenario import ADVERSARIAL

    assert list(answers) == [name for name, _ in ADVERSARIAL]
    print("\n" + "\n".join(f"  {name}: {a['status'] or a['error']} {a['body'].strip()[:150]}" for name, a in answers.items()))
    for (name, body), answer in zip(ADVERSARIAL, answers.values()):
        if len(body) > body_limit:  # past the limit: 413 before the body is read, or the connection closed under the sender
            assert answer["status"] == 413 and one_line(answer) or answer["status"] is None, answer
        else:
            assert answer["status"] == 400 and one_line(answer), (name, answer)


def test_serve_run_of_the_generated_config_passes_the_service_scenarios(demo_cache_engine, tmp_path):
    """Ray's `serve run` of what `python -m serve config` writes (serve_config.yaml with serve.env in its environment):
    images equal to the CLI's, adversarial bodies refused, API keys from the node environment, the proxies' limit."""
    report = run_scenario("serve_run", demo_cache_engine, tmp_path / "out", tmp_path)
    print(f"\nserve run: ready in {report['startup_s']} s, {len(report['mixed'])} mixed requests, exit {report['exit_code']}")
    assert report["no_key"] == 401
    model = report["models"]["models"][0]
    assert model["api_keys"] and str(model["max_body_bytes"]) == report["node_env"]["DDPM_DEPLOY_MAX_BODY_BYTES"]
    assert_mixed_equal_offline(report["mixed"], demo_cache_engine, tmp_path)
    assert {m["engine"] for m in report["mixed"]} == {model["sha256"]}  # X-Engine-Sha256 on every answer
    assert_adversarial_refused(report["adversarial"], model["max_body_bytes"])
    assert report["exit_code"] == 0


@pytest.fixture(scope="module")
def jobs(demo_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_jobs")
    return run_scenario("jobs", demo_engine, tmp / "out", tmp)


def test_a_job_streams_progress_and_previews_and_its_result_equals_the_cli(jobs, demo_engine, tmp_path):
    from tests.serve.scenario import JOB_REQUEST

    created = jobs["created"]
    assert created["status"] == 202 and created["location"] == f"/v1/jobs/{created['body']['id']}"
    assert created["body"]["state"] in ("queued", "running")
    events = jobs["events"]
    print("\njob events: " + "; ".join(f"{e['id']} {e['event']} " + json.dumps({k: (v[:16] + "..." if k == "png_base64" else v)
                                                                              for k, v in e["data"].items()}) for e in events))
    assert [e["id"] for e in events] == list(range(len(events)))
    progress = [e["data"] for e in events if e["event"] == "progress"]
    assert [p["steps_done"] for p in progress] == sorted(p["steps_done"] for p in progress) and progress[-1]["steps_done"] == 40
    assert all(p["steps_total"] == 40 for p in progress) and progress[-1]["eta_s"] == 0
    previews = [e["data"] for e in events if e["event"] == "preview"]
    assert [p["steps_done"] for p in previews] == [10, 20, 30, 40]
    assert events[-1] == {"id": len(events) - 1, "event": "done", "data": {"state": "succeeded", "status": 200}}
    assert jobs["resumed"][0]["id"] == 4  # Last-Event-ID: 3 resumes after it
    state = jobs["state"]
    assert state["state"] == "succeeded" and state["steps_done"] == state["steps_total"] == 40 and state["attempts"] == 1
    result = jobs["result"]
    assert result["status"] == 200 and result["engine"] == state["engine_sha256"]
    request = {k: v for k, v in JOB_REQUEST.items() if k != "preview_every"}
    expected = sample_offline(demo_engine, request, tmp_path / "cli")
    got = [read_png(p) for p in result["files"]]
    assert len(got) == 2
    for (pixels, text), (want_pixels, want_text) in zip(got, expected):
        np.testing.assert_array_equal(pixels, want_pixels)
        assert text == want_text
    # the last preview is the predicted x0 at the last step: DDIM's image itself, side by side at 16x16
    last = read_png_bytes(base64.b64decode(previews[-1]["png_base64"]))
    np.testing.assert_array_equal(last, np.concatenate([g[0] for g in got], axis=1)[..., 0])


def read_png_bytes(data):
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def test_jobs_belong_to_their_key_are_bounded_and_cancellable(jobs):
    assert jobs["other_key"] == 404 and jobs["no_key"] == 401
    cancel = jobs["cancel"]
    assert cancel["running"]["state"] == "running" and 0 < cancel["running"]["steps_done"] < 1000
    assert cancel["running"]["eta_s"] > 0
    assert cancel["early_result"][0] == 409 and "is running" in cancel["early_result"][1]
    assert cancel["deleted"]["state"] == "cancelled" and cancel["after"] == 404
    assert cancel["cancelled"] == 1 and cancel["in_flight"] == 0  # its rows left the batch
    assert [status for status, _ in jobs["bound"]] == [202, 202, 429] and "3 jobs" in jobs["bound"][2][1]
    assert jobs["other_key_still_fits"] == 202
    assert "preview_every must be" in jobs["bad_preview"][0] and "wrong type" in jobs["bad_preview"][1]
    load = jobs["bench_load"]  # bench.load --jobs: every job followed to its result, none left behind
    assert load["sent"] == 8 and load["statuses"] == {"200": 8}, load


def test_a_job_whose_replica_dies_runs_again_with_the_same_images(jobs, demo_engine, tmp_path):
    from tests.serve.scenario import LONG_JOB

    killed = jobs["replica_killed"]
    assert killed["state"]["state"] == "succeeded" and killed["state"]["attempts"] == 2, killed["state"]
    assert len(killed["restarted"]) == 1 and killed["status"] == 200
    request = {k: v for k, v in (LONG_JOB | {"seed": 23, "steps": 400}).items() if k != "preview_every"}
    expected = sample_offline(demo_engine, request, tmp_path / "cli")
    for path, (want, _) in zip(killed["files"], expected, strict=True):
        np.testing.assert_array_equal(read_png(path)[0], want)


def test_a_new_engine_rolls_out_under_load_with_no_failed_request(demo_engine, tmp_path):
    report = run_scenario("rollout", demo_engine, tmp_path / "out", tmp_path)
    outcomes = report["outcomes"]
    by_engine = {name: sum(o["engine"] == name for o in outcomes) for name in ("unet.onnx", "unet.fp16.onnx")}
    during = [o for o in outcomes if report["rollout_started_s"] <= o["sent_s"] <= report["rollout_done_s"]]
    print(f"\nrollout: {len(outcomes)} requests in {report['seconds']} s, update {report['rollout_started_s']}-"
          f"{report['rollout_done_s']} s; answered by {by_engine}; {len(during)} sent during the update, their slowest "
          f"{max((o['latency_s'] for o in during), default=0)} s; failed {[o for o in outcomes if o['status'] != 200][:3]}")
    assert all(o["status"] == 200 for o in outcomes), [o for o in outcomes if o["status"] != 200][:5]
    assert all(o["correct"] for o in outcomes)  # each image equal to its engine's own, bit for bit
    assert by_engine["unet.onnx"] > 0 and by_engine["unet.fp16.onnx"] > 0 and sum(by_engine.values()) == len(outcomes)
    after = [o["engine"] for o in outcomes if o["sent_s"] > report["rollout_done_s"] + 1]
    assert after and set(after) == {"unet.fp16.onnx"}  # the old replicas are gone


def test_json_nested_too_deep_is_400(hostile):
    for name in ("deep", "deep_object"):
        answer = hostile[name]
        assert answer["status"] == 400 and "deeper than" in answer["body"] and one_line(answer), answer


def test_per_key_requests_in_flight_are_limited_with_429(hostile):
    first = [r["status"] for r in hostile["per_key"]["first_key"]]
    assert sorted(first) == [200, 200, 429, 429], hostile["per_key"]
    for answer in hostile["per_key"]["first_key"]:
        if answer["status"] == 429:
            assert answer["retry_after"] == "1" and one_line(answer)
    assert hostile["per_key"]["second_key"]["status"] == 200  # another key is not held back


def fuzz_and_check(demo_engine, tmp_path, monkeypatch, seconds):
    monkeypatch.setenv("DDPM_DEPLOY_FUZZ_SECONDS", str(seconds))
    report = run_scenario("fuzz", demo_engine, tmp_path / "out", tmp_path, timeout=seconds + 600)
    print(f"\nschemathesis ({report['seconds']} s): {report['stdout_tail'][-1500:]}")
    assert report["returncode"] == 0, report["stdout_tail"] + report["stderr_tail"]
    return report


def test_schemathesis_finds_no_server_error(demo_engine, tmp_path, monkeypatch):
    """30 s of fuzzing (294 cases on a 2-core Zen 5); make test-full fuzzes 300 s (test_schemathesis_longer_run)."""
    fuzz_and_check(demo_engine, tmp_path, monkeypatch, 30)


@pytest.mark.slow
def test_schemathesis_longer_run(demo_engine, tmp_path, monkeypatch):
    fuzz_and_check(demo_engine, tmp_path, monkeypatch, 300)


def test_sigterm_finishes_requests_in_flight_and_refuses_new_ones(demo_engine, tmp_path):
    report = run_scenario("sigterm", demo_engine, tmp_path / "out", tmp_path)
    print(f"\nSIGTERM: in flight {[r['status'] for r in report['in_flight']]}, new requests {report['new_requests']['503']} x 503 "
          f"+ {report['new_requests']['refused']} refused, exit {report['exit_code']} after {report['stopped_after_s']} s; "
          f"{report['stopping_line']}")
    assert all(r["status"] == 200 and r["correct"] for r in report["in_flight"]), report["in_flight"]
    assert report["new_requests"]["other"] == [] and report["new_requests"]["503"] + report["new_requests"]["refused"] >= 1
    assert all("shutting down" in body for body in report["new_requests"]["bodies_503"]), report["new_requests"]
    assert report["exit_code"] == 0 and report["stopping_line"] == ["stopping: no request in flight"]


@pytest.mark.slow  # three Ray starts: about 90 s
def test_make_serve_starts_and_stops_repeatedly_and_reports_a_failed_start(demo_engine, tmp_path):
    report = run_scenario("make_serve", demo_engine, tmp_path / "out", tmp_path, timeout=900)
    for run in report["runs"]:
        assert run["start"] == 0 and "serving at http://127.0.0.1:" in run["start_out"] and run["healthz"] == 200, run
        assert run["stop"] == 0 and "stopped" in run["stop_out"], run
    bad = report["bad_port"]
    assert bad["code"] != 0 and "exited with status 2 before serving" in bad["out"] and "port must be at least 1" in bad["out"], bad


def test_an_engine_replaced_under_the_service_is_refused_by_a_new_replica(demo_engine, tmp_path):
    report = run_scenario("replaced", demo_engine, tmp_path / "out", tmp_path)
    assert report["before"] == 200 and report["served_by_the_loaded_replica"] == 200
    replica = report["replacement_replica"]
    assert "does not match its manifest" in replica["message"] and replica["running"] == 0, replica


SOAK_RSS_GROWTH_KB = 64 * 1024  # per replica, after its first minute


@pytest.mark.slow
def test_soak_two_replicas_disconnects_and_a_restart(demo_engine, tmp_path):
    seconds = int(os.environ.get("DDPM_DEPLOY_SOAK_SECONDS", "600"))
    report = run_scenario("soak", demo_engine, tmp_path / "out", tmp_path, timeout=seconds + 900)
    growth = {}
    for pid, series in report["rss_kb"].items():
        first_t = series[0][0]
        settled = [kb for t, kb in series if t >= first_t + 60]
        if len(settled) >= 2:
            growth[pid] = {"after_1_min_kb": settled[0], "max_kb": max(settled), "last_kb": settled[-1], "samples": len(series)}
    print(f"\nsoak {report['seconds']} s: {report['requests']} requests, outcomes "
          f"{ {k: (v if k != 'failed' else len(v)) for k, v in report['outcomes'].items()} }, latency {report['latency_s']}, "
          f"events {report['events']}, replica RSS {growth}")
    outcomes = report["outcomes"]
    assert outcomes["wrong"] == 0 and outcomes["failed"] == [], outcomes["failed"][:5]
    assert outcomes["ok"] > 100 and outcomes["disconnected"] > 5 and report["events"].get("killed")
    assert growth and all(g["max_kb"] - g["after_1_min_kb"] <= SOAK_RSS_GROWTH_KB for g in growth.values()), growth


def test_conditioned_requests_and_their_refusals(xattn_engine, tmp_path):
    """class_labels, embeddings and guidance over HTTP equal the Python API; bad conditions are 400 with one line."""
    from runtime import Pipeline
    from runtime.requests import SampleRequest

    report = run_scenario("conditioned", xattn_engine, tmp_path / "out", tmp_path)
    described = report["models"]["models"][0]["conditioning"]
    assert described == {"inputs": ["encoder_hidden_states"], "class_labels": ["a", "b", "c"],
                         "embeddings": "[6, 16] float32 per image (or one for all)", "guidance": True}
    with Pipeline.load(xattn_engine, device="cpu") as pipe:
        for request, served in zip(CONDITIONED, report["served"]):
            assert served["status"] == 200, (request, served)
            fields = {k: v for k, v in request.items() if k != "format"}
            expected = pipe.sample(SampleRequest(**fields))
            got = np.stack([read_png(p)[0] for p in served["files"]])
            np.testing.assert_array_equal(got, expected, err_msg=json.dumps(request))
    for name, _ in BAD_CONDITIONS:
        answer = report["bad"][name]
        assert answer["status"] == 400 and "\n" not in answer["body"].strip() and "Traceback" not in answer["body"], (name, answer)
    print("\n" + "\n".join(f"{name}: {report['bad'][name]['status']} {report['bad'][name]['body'].strip()}" for name, _ in BAD_CONDITIONS))


def test_a_latent_model_is_described_and_served_decoded(ldm_engine, tmp_path):
    """/v1/models gives the decoded image's shape; the images equal the Python API's (the decoder after the loop)."""
    from runtime import Pipeline
    from runtime.requests import SampleRequest

    report = run_scenario("latent", ldm_engine, tmp_path / "out", tmp_path)
    assert report["models"]["models"][0]["image"] == [16, 16, 3]
    with Pipeline.load(ldm_engine, device="cpu") as pipe:
        for request, served in zip(LATENT_REQUESTS, report["served"]):
            assert served["status"] == 200, (request, served)
            expected = pipe.sample(SampleRequest(**{k: v for k, v in request.items() if k != "format"}))
            np.testing.assert_array_equal(np.stack([read_png(p)[0] for p in served["files"]]), expected)
