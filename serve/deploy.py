"""Deployment files written from a service config: a Ray Serve config file, the environment Ray's nodes need,
and a KubeRay ``RayService`` with a ``NetworkPolicy`` that leaves nothing but the ingress reachable.

    python -m serve config [--config serve.json] [--engine engines/unet.onnx] --out deploy/
        deploy/serve_config.yaml         serve run / serve deploy (import_path serve.application:build + args)
        deploy/serve.env                 the node environment (the proxies' body-limit hook, usage stats off)
        deploy/kubernetes/rayservice.yaml  a RayService (KubeRay v1.7) and a NetworkPolicy; the API keys from a Secret

Nothing here runs a cluster; ``tests/serve/test_deploy.py`` checks the files against KubeRay's CRD schema and
Kubernetes' own NetworkPolicy schema, and ``serve run`` of the config file on loopback.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from runtime.atomic import atomic_write_bytes

from .application import APP_NAME, Prepared, proxy_env, serve_config
from .config import API_KEYS_ENV

RAY_VERSION = "2.60.0"
INGRESS_PORT = 8000  # in the cluster: Serve's HTTP proxy on every pod, behind the RayService's serve Service
DASHBOARD_PORT = 8265  # the head's API, through which the KubeRay operator deploys the Serve config
ENGINE_MOUNT = "/engines"
PART_OF = "app.kubernetes.io/instance"


def node_env(prepared: Prepared) -> dict[str, str]:
    """What every Ray node's environment needs before Ray starts (``ray start``, ``serve run``, a pod's env)."""
    return {**proxy_env(prepared), "RAY_USAGE_STATS_ENABLED": "0"}


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people and linters: no anchors for repeated values, multi-line strings as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False):  # lists indented under their key
        return super().increase_indent(flow, False)


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def serve_config_yaml(prepared: Prepared) -> str:
    return "# ddpm-deploy: written by `python -m serve config`; Ray's nodes need serve.env in their environment\n" + dump(
        serve_config(prepared))


def env_file(prepared: Prepared) -> str:
    return "".join(f"{k}={v}\n" for k, v in node_env(prepared).items())


def _container(name: str, image: str, prepared: Prepared, resources: dict[str, Any], keys_secret: str | None,
               ports: list[tuple[str, int]]) -> dict[str, Any]:
    env = [{"name": k, "value": v} for k, v in node_env(prepared).items()]
    if keys_secret:
        env.append({"name": API_KEYS_ENV, "valueFrom": {"secretKeyRef": {"name": keys_secret, "key": "keys"}}})
    probe = {"httpGet": {"path": "/healthz", "port": INGRESS_PORT}, "periodSeconds": 10, "timeoutSeconds": 12}
    return {
        "name": name, "image": image, "env": env, "resources": resources,
        "ports": [{"name": port_name, "containerPort": port} for port_name, port in ports],
        "volumeMounts": [{"name": "engines", "mountPath": ENGINE_MOUNT, "readOnly": True}],
        # /healthz answers once an engine replica does (never needs a key); a new pod gets minutes to load
        "readinessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 120, "failureThreshold": 12},
    }


def _resources(cpus: float, gpus: float, memory: str) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": str(max(1, math.ceil(cpus))), "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(math.ceil(gpus))
    return {"requests": dict(limits), "limits": limits}


def rayservice(prepared: Prepared, name: str = APP_NAME, image: str = "ddpm-deploy:0.1.0",
               engines_claim: str = "ddpm-engines", keys_secret: str | None = "ddpm-api-keys",
               worker_memory: str = "4Gi") -> dict[str, Any]:
    """A KubeRay ``RayService``: a head (Serve's controller and a proxy, no engine) and an engine worker group,
    the engines folder from a PersistentVolumeClaim on every pod, Ray's token authentication on."""
    config = prepared.config
    # the engines folder is the volume: the engine is its file of the same name there (or the folder itself)
    engine = PurePosixPath(ENGINE_MOUNT) if Path(config.engine).is_dir() else PurePosixPath(ENGINE_MOUNT) / Path(config.engine).name
    in_cluster = type(config)(**{**config.to_dict(), "engine": str(engine), "host": "0.0.0.0", "port": INGRESS_PORT,
                                 "api_keys_file": None})
    cluster_prepared = Prepared(in_cluster, prepared.key_digests, prepared.body_limit)
    labels = {"app.kubernetes.io/name": "ddpm-deploy", PART_OF: name}
    volumes = [{"name": "engines", "persistentVolumeClaim": {"claimName": engines_claim, "readOnly": True}}]
    auto = config.autoscaling or {}  # a worker pod per engine replica
    low = int(auto.get("min_replicas", 1)) if auto else config.num_replicas
    high = int(auto.get("max_replicas", low)) if auto else config.num_replicas
    head = _container("ray-head", image, cluster_prepared, _resources(1, 0, "2Gi"), keys_secret,
                      [("gcs", 6379), ("dashboard", DASHBOARD_PORT), ("serve", INGRESS_PORT)])
    worker = _container("ray-worker", image, cluster_prepared,
                        _resources(config.cpus_per_replica, config.gpus_per_replica, worker_memory), keys_secret,
                        [("serve", INGRESS_PORT)])
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name, "labels": labels},
        "spec": {
            "serveConfigV2": dump(serve_config(cluster_prepared, name)),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},  # Ray's token authentication: its gRPC servers refuse calls without it
                "headGroupSpec": {
                    # num-cpus 0: no engine replica on the head; the dashboard host is the operator's way in
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [head], "volumes": volumes}},
                },
                "workerGroupSpecs": [{
                    "groupName": "engine", "replicas": low, "minReplicas": low, "maxReplicas": max(low, high),
                    "rayStartParams": {},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [worker], "volumes": volumes}},
                }],
            },
        },
    }


def network_policy(name: str = APP_NAME, operator_namespace: str = "ray-system") -> dict[str, Any]:
    """Ingress to the service's pods: from each other (Ray's own traffic: GCS, object transfer, the replicas'
    gRPC servers), from the KubeRay operator to the head's dashboard port, and from anywhere to the HTTP
    ingress only. Every other Ray port is fenced off."""
    own = {"podSelector": {"matchLabels": {PART_OF: name}}}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-only-ingress", "labels": {"app.kubernetes.io/name": "ddpm-deploy", PART_OF: name}},
        "spec": {
            "podSelector": {"matchLabels": {PART_OF: name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [own]},
                {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}}],
                 "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
                {"ports": [{"protocol": "TCP", "port": INGRESS_PORT}]},
            ],
        },
    }


def kubernetes_yaml(prepared: Prepared, **options: Any) -> str:
    name = options.get("name", APP_NAME)
    operator_namespace = options.pop("operator_namespace", "ray-system")
    head = ("# ddpm-deploy: written by `python -m serve config`. Nothing here ran on a real cluster; checked against\n"
            "# KubeRay v1.7.0's RayService CRD schema and Kubernetes' NetworkPolicy schema (tests/serve/test_deploy.py).\n"
            "# API keys: kubectl create secret generic ddpm-api-keys --from-literal=keys=KEY1,KEY2\n")
    return head + dump(rayservice(prepared, **options)) + "---\n" + dump(network_policy(name, operator_namespace))


def write(prepared: Prepared, out: str | Path, **options: Any) -> list[Path]:
    """Writes serve_config.yaml, serve.env and kubernetes/rayservice.yaml under ``out`` (each atomically)."""
    out = Path(out)
    files = {out / "serve_config.yaml": serve_config_yaml(prepared), out / "serve.env": env_file(prepared),
             out / "kubernetes" / "rayservice.yaml": kubernetes_yaml(prepared, **options)}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, text.encode())
    return list(files)
