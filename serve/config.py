"""The service's configuration: a JSON file (``--config``), every field optional."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from runtime.errors import InputError
from runtime.requests import NUMBER, parse_object


@dataclass(frozen=True)
class ServiceConfig:
    engine: str = "engines/unet.onnx"
    num_replicas: int = 1  # engine replicas; ignored when autoscaling is given
    autoscaling: dict[str, Any] | None = None  # Ray Serve's autoscaling_config (min_replicas, max_replicas, ...)
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0  # 1 for a TensorRT plan: one replica per GPU
    device: str = "auto"
    threads: int | None = None  # ONNX Runtime threads per replica (default: the cores it may use)
    max_batch: int = 8  # rows per UNet call
    max_queue: int = 32  # requests waiting per replica beyond a full batch; more → 503
    max_count: int = 8  # images per request
    max_steps: int = 1000
    timeout_s: float = 300.0  # per request, from arrival; past it → 504
    host: str = "127.0.0.1"  # the HTTP ingress; 0.0.0.0 opens it to the network
    port: int = 8000
    metrics_port: int = 8080  # Ray's metrics export port on each node (Prometheus text)

    SCHEMA = {"engine": str, "num_replicas": int, "autoscaling": (dict, type(None)), "cpus_per_replica": NUMBER,
              "gpus_per_replica": NUMBER, "device": str, "threads": (int, type(None)), "max_batch": int, "max_queue": int,
              "max_count": int, "max_steps": int, "timeout_s": NUMBER, "host": str, "port": int, "metrics_port": int}

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> ServiceConfig:
        data: dict[str, Any] = {}
        if path is not None:
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
        if self.max_count > self.max_batch:
            raise InputError(f"max_count {self.max_count} exceeds max_batch {self.max_batch}: a request must fit one UNet call")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
