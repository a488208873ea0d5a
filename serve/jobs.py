"""Jobs: long requests that run without a client holding a connection (``/v1/jobs``).

A job is a request the ingress runs on an engine replica as a stream of events (progress, previews, the result);
it belongs to the API key that made it, answers its state, steps and ETA, an event stream (server-sent events),
and its result, and can be cancelled. The ingress keeps at most ``max_jobs`` (``max_jobs_per_key`` per key) and a
finished one for ``job_ttl_s``. Jobs live in the ingress replica's memory: a lost engine replica runs the job
again elsewhere (the same images: sampling is deterministic), a lost ingress loses its jobs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
MAX_EVENTS = 256  # kept per job for its event stream; older ones are dropped (a late reader starts later)
PREVIEW_PIXELS = 64  # a preview's longer side, at most


@dataclass
class Job:
    id: str
    key: str  # the owner's key id ("" without keys)
    request: Any  # runtime.requests.SampleRequest
    preview_every: int
    created: float = field(default_factory=time.time)
    state: str = QUEUED
    steps_done: int = 0
    steps_total: int | None = None
    started: float | None = None  # monotonic, at the first progress of the current attempt
    started_at_step: int = 0  # the steps done then
    finished: float | None = None  # monotonic
    attempts: int = 0
    status: int | None = None  # the result's HTTP status
    message: str | None = None  # an error's one line
    result: dict | None = None  # {"images": [...], "replica": ..., "engine_sha256": ...}
    engine_sha256: str | None = None
    events: list[tuple[int, str, dict]] = field(default_factory=list)  # (id, event name, data)
    next_event: int = 0
    task: asyncio.Task | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def new_id() -> str:
        return "job-" + secrets.token_hex(12)

    def emit(self, name: str, data: dict) -> None:
        self.events.append((self.next_event, name, data))
        self.next_event += 1
        del self.events[:-MAX_EVENTS]
        self.changed.set()
        self.changed = asyncio.Event()

    def progress(self, done: int, total: int, preview: np.ndarray | None) -> None:
        now = time.monotonic()
        if self.state == QUEUED or self.started is None:
            self.state, self.started, self.started_at_step = RUNNING, now, done
        self.steps_done, self.steps_total = done, total
        self.emit("progress", {"steps_done": done, "steps_total": total, "eta_s": self.eta_s()})
        if preview is not None:
            self.emit("preview", {"steps_done": done, "png_base64": base64.b64encode(preview_png(preview)).decode("ascii")})

    def restart(self) -> None:
        """Another attempt (its engine replica died): progress starts again."""
        self.attempts += 1
        self.state, self.started, self.steps_done = QUEUED, None, 0
        self.emit("restarted", {"attempt": self.attempts + 1})

    def finish(self, state: str, status: int, message: str | None = None, result: dict | None = None) -> None:
        self.state, self.status, self.message, self.result = state, status, message, result
        self.finished = time.monotonic()
        if result is not None:
            self.engine_sha256 = result.get("engine_sha256")
        self.emit("done", {"state": state, "status": status, **({"message": message} if message else {})})

    def eta_s(self) -> float | None:
        if self.state in FINISHED:
            return 0.0
        timed = self.steps_done - self.started_at_step  # the steps since the first progress (whose start is unknown)
        if self.started is None or timed < 1 or not self.steps_total:
            return None
        elapsed = time.monotonic() - self.started
        return round(elapsed / timed * (self.steps_total - self.steps_done), 2)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "steps_done": self.steps_done, "steps_total": self.steps_total,
                "eta_s": self.eta_s(), "created": round(self.created, 3), "attempts": self.attempts + 1,
                "engine_sha256": self.engine_sha256, **({"status": self.status, "message": self.message} if self.message else {})}


def sse(event_id: int, name: str, data: dict) -> bytes:
    """One server-sent event (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def preview_png(images: np.ndarray) -> bytes:
    """uint8 [n, H, W, C] → one small PNG: the images side by side, each at most PREVIEW_PIXELS a side."""
    from PIL import Image

    strip = np.concatenate(list(images), axis=1)
    image = Image.fromarray(strip[..., 0] if strip.shape[-1] == 1 else strip)
    scale = PREVIEW_PIXELS / max(images.shape[1], images.shape[2])
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
