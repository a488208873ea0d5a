"""A sampling request as services receive it: a JSON object with the meaning of ``python -m runtime.sample``'s
options. Shared by the C ABI (embed/host.py) and the HTTP service (serve/)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from .errors import InputError

NUMBER = (int, float)


def parse_object(text: str | bytes, what: str, schema: dict[str, type | tuple]) -> dict[str, Any]:
    """A JSON object whose fields are all in ``schema`` (name → accepted types; bool only where listed).
    Empty text is an empty object. Raises InputError with one line."""
    try:
        data = json.loads(text) if text.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InputError(f"{what} is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(schema))
    if unknown:
        raise InputError(f"{what} has unknown field(s) {', '.join(unknown)}; known: {', '.join(schema)}")
    for key, value in data.items():
        kinds = schema[key] if isinstance(schema[key], tuple) else (schema[key],)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise InputError(f"{what} field {key!r} has the wrong type ({json.dumps(value)})")
    return data


@dataclass(frozen=True)
class SampleRequest:
    seed: int = 0
    count: int = 1
    steps: int | None = None  # None: the sampler's default
    scheduler: str | None = None  # None: the scheduler config's own
    eta: float = 0.0
    noise: str = "numpy"
    per_image_seeds: bool = False  # seeds seed, seed + 1, ...: each image depends on its own seed only

    SCHEMA = {"seed": int, "count": int, "steps": (int, type(None)), "scheduler": (str, type(None)), "eta": NUMBER,
              "noise": str, "per_image_seeds": bool}

    @classmethod
    def from_json(cls, text: str | bytes, what: str = "request", extra: dict[str, type | tuple] | None = None):
        """(request, the ``extra`` fields given) from JSON text; range checks are the pipeline's (at submit)."""
        data = parse_object(text, what, {**cls.SCHEMA, **(extra or {})})
        own = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in own}), {k: v for k, v in data.items() if k not in own}

    @property
    def seeds(self) -> list[int] | None:
        return [self.seed + i for i in range(self.count)] if self.per_image_seeds and self.count >= 1 else None

    def submit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of Pipeline.denoise / StepBatcher.submit."""
        return dict(batch=self.count, steps=self.steps, seed=self.seed, seeds=self.seeds, noise=self.noise,
                    scheduler=self.scheduler, eta=self.eta)
