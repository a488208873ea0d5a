"""The service as a Ray Serve application like any other: ``import_path`` + ``args`` in a Serve config file.

    python -m serve config --engine engines/unet.onnx --out deploy/   # writes serve_config.yaml and serve.env
    env $(cat deploy/serve.env) serve run --address local deploy/serve_config.yaml   # or: ray start ... then serve deploy
    serve build serve.application:app -o serve_config.yaml             # Ray's own generator ($DDPM_DEPLOY_SERVE_CONFIG)

``build`` is the application builder (Ray Serve calls it with the config file's ``args``: ``{"config": {...}}``, a
service config as ``serve/config.py`` reads it); ``app`` is the application built at import from the JSON config
named by ``$DDPM_DEPLOY_SERVE_CONFIG`` (or the defaults), for ``serve build`` and ``serve run serve.application:app``.

The builder runs where Ray builds applications (the head node): the engine file must be there, and API keys come
from that node's environment (``$DDPM_DEPLOY_API_KEYS``; on Kubernetes, from a Secret) or ``api_keys_file``. The
body limit of Ray's HTTP proxies and the proxy hook are read from each node's environment when Ray starts
(``serve.limits``): ``serve.env`` holds them, to pass to ``serve run`` or ``ray start``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from runtime.errors import DeployError, InputError

from . import limits
from .config import ServiceConfig, load_api_keys

log = logging.getLogger("ddpm_deploy.serve")
CONFIG_ENV = "DDPM_DEPLOY_SERVE_CONFIG"
APP_NAME = "ddpm"


@dataclass(frozen=True)
class Prepared:
    """What the deployments take besides the config: the API keys' digests and the request-body limit."""

    config: ServiceConfig
    key_digests: list[bytes]
    body_limit: int


def prepare(config: ServiceConfig) -> Prepared:
    """Checks the engine is there and reads the API keys and the body limit its largest request needs."""
    from pathlib import Path

    from runtime.manifest import artifact_entry
    from runtime.selection import resolve_engine

    if not Path(config.engine).exists():
        raise DeployError(f"engine {config.engine} does not exist; build one (`make engine` or `make demo`) or pass --engine")
    body_limit = config.body_limit(artifact_entry(resolve_engine(config.engine, config.precision))[0].io)
    return Prepared(config, load_api_keys(config), body_limit)


def proxy_env(prepared: Prepared) -> dict[str, str]:
    """The environment Ray's HTTP proxies need (on every node, before Ray starts): the body-limit hook."""
    return {limits.CALLBACK_ENV: limits.CALLBACK, limits.LIMIT_ENV: str(prepared.body_limit)}


def build(args: dict[str, Any]):
    """Ray Serve's application builder: ``args`` = ``{"config": {service config fields}}`` (or a path to a JSON one)."""
    from .app import build_app

    unknown = sorted(set(args) - {"config"})
    if unknown:
        raise InputError(f"the application's args have unknown field(s) {', '.join(unknown)}; known: config")
    config = args.get("config") or {}
    if isinstance(config, str):
        config = ServiceConfig.load(config)
    elif isinstance(config, dict):
        config = ServiceConfig.load(None, text=json.dumps(config))
    else:
        raise InputError(f"args.config must be a service config object or a path, got {type(config).__name__}")
    prepared = prepare(config)
    warn_if_proxies_unlimited(prepared)
    return build_app(prepared)


def warn_if_proxies_unlimited(prepared: Prepared) -> None:
    for name, value in proxy_env(prepared).items():
        if os.environ.get(name) != value:
            log.warning("%s is %r here, not %r: Ray's HTTP proxies read the whole of any request body before the ingress "
                        "refuses it; set the variables of `python -m serve config`'s serve.env where Ray starts",
                        name, os.environ.get(name), value)


def serve_config(prepared: Prepared, name: str = APP_NAME) -> dict[str, Any]:
    """The Serve config file (``serve run`` / ``serve deploy`` / a RayService's ``serveConfigV2``) for ``prepared``."""
    config = prepared.config
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.host, "port": config.port},
        "logging_config": {"log_level": "WARNING"},
        "applications": [{"name": name, "route_prefix": "/", "import_path": "serve.application:build",
                          "args": {"config": config.to_dict()}}],
    }


def __getattr__(name: str):  # ``app`` is built on first use, not when the builder is imported
    if name == "app":
        path = os.environ.get(CONFIG_ENV)
        return build({"config": path} if path else {})
    raise AttributeError(name)
