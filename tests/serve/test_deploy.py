"""The deployment files (serve/deploy.py): the Serve config file, the node environment, the KubeRay RayService
and its NetworkPolicy. Checked against KubeRay v1.7.0's RayService CRD schema (read from
../shared/reference/kuberay-v1.7.0/, not copied), Ray Serve's own config schema, Kubernetes' NetworkPolicy
schema (kubernetes-validate bundles it) and yamllint. Nothing here runs a cluster."""

import copy
from pathlib import Path

import pytest

from tests.conftest import ROOT

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
CRD_PATH = Path("shared") / "reference" / "kuberay-v1.7.0" / "ray.io_rayservices.yaml"
# beside the checkout (../shared), or the workplace's shared folder when the checkout is a clone elsewhere (CI)
CRD = next((base / CRD_PATH for base in (ROOT.parent, Path("/work")) if (base / CRD_PATH).exists()), ROOT.parent / CRD_PATH)
YAMLLINT = "{extends: default, rules: {line-length: {max: 160}, document-start: disable}}"
KEYS_ENV = "DDPM_DEPLOY_API_KEYS"


@pytest.fixture(scope="module")
def written(demo_engine, tmp_path_factory):
    from serve import deploy
    from serve.application import prepare
    from serve.config import ServiceConfig

    config = ServiceConfig(engine=str(demo_engine), num_replicas=3, cpus_per_replica=2, max_batch=8)
    out = tmp_path_factory.mktemp("deploy")
    paths = deploy.write(prepare(config), out, name="digits", image="registry.example/ddpm-deploy:0.1.0")
    return {p.name: p for p in paths}, prepare(config)


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def crd_schema() -> dict:
    if not CRD.exists():
        pytest.skip(f"{CRD} is not here (KubeRay's CRD is read from the shared reference, not vendored)")
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def rayservice_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(crd_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_every_file_passes_yamllint(written):
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    paths, _ = written
    config = YamlLintConfig(YAMLLINT)
    for name in ("serve_config.yaml", "rayservice.yaml"):
        problems = [str(p) for p in linter.run(paths[name].read_text(), config)]
        assert problems == [], (name, problems)


def test_rayservice_matches_kuberay_crd_and_a_broken_one_does_not(written):
    paths, _ = written
    service, _policy = documents(paths["rayservice.yaml"])
    assert service["apiVersion"] == "ray.io/v1" and service["kind"] == "RayService"
    assert rayservice_errors(service) == []
    broken = copy.deepcopy(service)  # the validator can fail: a worker group without its name, replicas as text
    del broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "three"
    errors = rayservice_errors(broken)
    assert any("groupName" in e for e in errors) and any("replicas" in e for e in errors), errors


def test_rayservice_carries_the_service(written):
    paths, prepared = written
    service, _ = documents(paths["rayservice.yaml"])
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"} and cluster["rayVersion"] == "2.60.0"
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3
    pods = [cluster["headGroupSpec"]["template"]["spec"], workers["template"]["spec"]]
    for pod in pods:
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]["value"] == "serve.limits:proxy_middlewares"
        assert env["DDPM_DEPLOY_MAX_BODY_BYTES"]["value"] == str(prepared.body_limit)
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        assert env[KEYS_ENV]["valueFrom"] == {"secretKeyRef": {"name": "ddpm-api-keys", "key": "keys"}}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": 8000}
        assert container["volumeMounts"] == [{"name": "engines", "mountPath": "/engines", "readOnly": True}]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "ddpm-engines"
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "2"


def test_serve_config_v2_is_a_valid_serve_config_for_the_mounted_engine(written):
    from ray.serve.schema import ServeDeploySchema

    paths, prepared = written
    service, _ = documents(paths["rayservice.yaml"])
    for text, engine, host in ((service["spec"]["serveConfigV2"], f"/engines/{Path(prepared.config.engine).name}", "0.0.0.0"),
                               (paths["serve_config.yaml"].read_text(), prepared.config.engine, "127.0.0.1")):
        config = yaml.safe_load(text)
        ServeDeploySchema.model_validate(config) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(config)
        (app,) = config["applications"]
        assert app["import_path"] == "serve.application:build" and app["args"]["config"]["engine"] == engine
        assert config["http_options"]["host"] == host


def test_network_policy_is_valid_and_opens_only_the_ingress(written):
    import kubernetes_validate

    paths, _ = written
    _, policy = documents(paths["rayservice.yaml"])
    kubernetes_validate.validate(policy, "1.30", strict=True)
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][2]["ports"][0]["port"] = {"number": 8000}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)
    open_to_all = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert open_to_all == [{"ports": [{"protocol": "TCP", "port": 8000}]}]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    service, _ = documents(paths["rayservice.yaml"])
    cluster = service["spec"]["rayClusterConfig"]
    for template in (cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]):
        assert selector.items() <= template["metadata"]["labels"].items()  # the policy covers every pod


def test_env_file_and_the_cli(written, demo_engine, tmp_path):
    import subprocess
    import sys

    paths, prepared = written
    env = dict(line.split("=", 1) for line in paths["serve.env"].read_text().splitlines())
    assert env == {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve.limits:proxy_middlewares",
                   "DDPM_DEPLOY_MAX_BODY_BYTES": str(prepared.body_limit), "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "serve", "config", "--engine", str(demo_engine), "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "serve run" in r.stdout, r.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["rayservice.yaml", "serve.env", "serve_config.yaml"]
    r = subprocess.run([sys.executable, "-m", "serve", "config", "--engine", str(tmp_path / "none.onnx"), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "does not exist" in r.stderr, r.stderr
    assert not (tmp_path / "x").exists()
