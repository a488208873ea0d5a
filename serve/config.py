"""The service's configuration: a JSON file (``--config``), every field optional."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runtime.errors import InputError
from runtime.host import HostOptions
from runtime.image_input import png_base64_bound
from runtime.io_spec import ENCODER_HIDDEN_STATES, UNetIO
from runtime.json_body import NUMBER, parse_object


HOST_FIELDS = ("device", "precision", "threads", "cache_dir", "max_batch", "max_queue", "timeout_s", "max_count", "max_steps")


@dataclass(frozen=True)
class ServiceConfig:
    engine: str = "engines/unet.onnx"
    num_replicas: int = 1  # engine replicas; ignored when autoscaling is given
    autoscaling: dict[str, Any] | None = None  # Ray Serve's autoscaling_config (min_replicas, max_replicas, ...)
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0  # 1 for a TensorRT plan: one replica per GPU
    device: str = "auto"
    precision: str = "auto"  # with an engines folder as engine: "auto" (the fastest timed on this CPU) or a precision
    threads: int | None = None  # ONNX Runtime threads per replica (default: the cores it may use)
    max_batch: int = 8  # rows per UNet call
    max_queue: int = 32  # requests waiting per replica beyond a full batch; more → 503
    max_count: int = 8  # images per request
    max_steps: int = 1000
    timeout_s: float = 300.0  # per request, from arrival; past it → 504
    host: str = "127.0.0.1"  # the HTTP ingress; 0.0.0.0 opens it to the network
    port: int = 8000
    metrics_port: int = 8080  # Ray's metrics export port on each node (Prometheus text)
    max_body_bytes: int | None = None  # request bodies above it: 413 (default: ServiceConfig.body_limit for the engine)
    api_keys_file: str | None = None  # bearer tokens, one a line (also $DDPM_DEPLOY_API_KEYS, comma-separated)
    protect_info: bool = True  # with API keys: /metrics and /v1/models need one too (/healthz never does)
    max_in_flight_per_key: int = 8  # with API keys: requests in flight per key and ingress replica; more → 429
    shutdown_grace_s: float = 30.0  # on SIGTERM: new requests get 503, those in flight get this long to finish
    cache_dir: str | None = "auto"  # each replica's engine cache (runtime.cache; null: none)
    max_jobs: int = 64  # jobs (/v1/jobs) kept by the ingress, running or finished; more → 503
    max_jobs_per_key: int = 8  # jobs kept per API key (or in all, without keys); more → 429
    job_ttl_s: float = 3600.0  # a finished job's result is kept this long
    job_timeout_s: float = 7200.0  # a job's default deadline and its ceiling (timeout_s is /v1/images')

    # the host's options (runtime.host.HostOptions) where the service requires a value, and the service's own
    SCHEMA = {**HostOptions.SCHEMA, "max_batch": int, "max_count": int, "max_steps": int, "timeout_s": NUMBER,
              "engine": str, "num_replicas": int, "autoscaling": (dict, type(None)), "cpus_per_replica": NUMBER,
              "gpus_per_replica": NUMBER, "host": str, "port": int, "metrics_port": int,
              "max_body_bytes": (int, type(None)), "api_keys_file": (str, type(None)), "protect_info": bool,
              "max_in_flight_per_key": int, "shutdown_grace_s": NUMBER, "max_jobs": int, "max_jobs_per_key": int,
              "job_ttl_s": NUMBER, "job_timeout_s": NUMBER}

    @classmethod
    def load(cls, path: str | Path | None = None, text: str | None = None, **overrides: Any) -> ServiceConfig:
        """From a JSON file (or its ``text``), then ``overrides`` (those not None); checked."""
        data: dict[str, Any] = {}
        if text is not None:
            data = parse_object(text, "service config", cls.SCHEMA)
        elif path is not None:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise InputError(f"cannot read the service config {path}: {exc.strerror}") from None
            data = parse_object(text, f"service config {path}", cls.SCHEMA)
        data.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**data)
        config.check()
        return config

    def check(self) -> None:
        for name in ("num_replicas", "max_batch", "max_count", "max_steps", "port", "metrics_port"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue < 0 or self.timeout_s <= 0:
            raise InputError("max_queue must be >= 0 and timeout_s > 0")
        if self.max_body_bytes is not None and self.max_body_bytes < 1024:
            raise InputError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.max_in_flight_per_key < 1 or self.shutdown_grace_s < 0:
            raise InputError("max_in_flight_per_key must be at least 1 and shutdown_grace_s >= 0")
        if self.max_jobs < 1 or self.max_jobs_per_key < 1 or not self.job_ttl_s > 0 or not self.job_timeout_s > 0:
            raise InputError("max_jobs and max_jobs_per_key must be at least 1, job_ttl_s and job_timeout_s > 0")
        if self.max_count > self.max_batch:
            raise InputError(f"max_count {self.max_count} exceeds max_batch {self.max_batch}: a request must fit one UNet call")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def host_options(self) -> HostOptions:
        """What each engine replica's host opens its engine with and admits (the fields of the same names)."""
        return HostOptions.from_mapping({name: getattr(self, name) for name in HOST_FIELDS})

    def body_limit(self, io: UNetIO) -> int:
        """``max_body_bytes``, or by default what the largest legitimate request to this engine can take: a
        64 KiB allowance for the scalar fields, per-image seeds and class labels, plus, for a cross-attention
        engine, max_count images' embeddings and as many negative embeddings at the longest sequence,
        written out as JSON numbers (at most 24 bytes each), plus max_count starting images and masks of the
        sample's size as the largest PNGs of that size take in base64 (image inputs)."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        shapes = io.shapes(1, "max")
        per_image = sum(2 * math.prod(shapes[spec.name]) for spec in io.conditioning_inputs if spec.name == ENCODER_HIDDEN_STATES)
        channels, height, width = shapes[io.sample.name][1:]
        images = png_base64_bound(height, width, channels) + png_base64_bound(height, width, 1)
        return BASE_BODY_BYTES + self.max_count * (per_image * JSON_NUMBER_BYTES + images)


BASE_BODY_BYTES = 64 << 10
JSON_NUMBER_BYTES = 24  # "-1.2345678901234567e-300, "
API_KEYS_ENV = "DDPM_DEPLOY_API_KEYS"
MIN_KEY_CHARS = 16


def load_api_keys(config: ServiceConfig) -> list[bytes]:
    """The sha256 digests of the configured API keys (file and environment); the keys themselves go no further
    (not into Ray's deployment config, not into logs). Empty: the service is open."""
    keys = [k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if config.api_keys_file is not None:
        try:
            text = Path(config.api_keys_file).read_text()
        except OSError as exc:
            raise InputError(f"cannot read the API keys file {config.api_keys_file}: {exc.strerror}") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise InputError(f"the API keys file {config.api_keys_file} holds no key (one a line; # starts a comment)")
    short = sum(len(k) < MIN_KEY_CHARS or any(c.isspace() for c in k) for k in keys)
    if short:
        raise InputError(f"{short} API key(s) are shorter than {MIN_KEY_CHARS} characters or contain spaces; "
                         "use long random tokens (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return [key_digest(k) for k in keys]


def key_digest(token: str) -> bytes:
    """What the service keeps of an API key, and what a presented token is compared with."""
    return hashlib.sha256(token.encode()).digest()
