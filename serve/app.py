"""The Ray Serve application: engine replicas (each a runtime.host.Host: a loaded pipeline + a StepBatcher, so
requests from many HTTP calls share every UNet call) behind a FastAPI ingress.

    POST /v1/images   a runtime.requests.SampleRequest as JSON (its schema: docs/request.schema.json, and
                      /openapi.json) and "format"
                      → image/png (one image; "format": "json" for JSON) or JSON with base64 PNGs, each
                        PNG with the metadata `runtime.sample` writes; header X-Replica names the replica,
                        X-Engine-Sha256 the engine that answered (on every answer an engine replica gave)
    POST /v1/jobs     the same request (+ "preview_every") as a job (serve/jobs.py) → 202 {"id", "state", ...}
    GET  /v1/jobs/ID  state, steps done/total, ETA;  .../events: server-sent events (progress, previews, done);
                      .../result: the images as JSON (409 while it runs);  DELETE /v1/jobs/ID cancels it
    GET  /healthz     → "ok" once an engine replica answers (never needs a key)
    GET  /v1/models   → the engine: file, sha256, kind, precision, batch profile, image shape, samplers
    GET  /metrics     → Prometheus text from this node's Ray metrics port (ddpm_* series)
    GET  /openapi.json → the API schema (the request body: runtime.requests.SampleRequest.json_schema())

With API keys configured (serve.config.load_api_keys) /v1/images, and by default /v1/models and /metrics,
need ``Authorization: Bearer KEY``. Errors are one line of text: 400 (bad JSON, unknown field, wrong type,
out-of-range value, nesting too deep), 401 (no valid key; no body is read, no engine work done), 413 (a
body above the limit, cut off while reading), 429 with Retry-After (the key's requests in flight, counted
per ingress replica), 503 with Retry-After (queue full, or shutting down), 504 (past the request's
deadline), 500 (the engine failed). A client that
disconnects cancels its request: its rows leave the batch at the next step. A request whose replica dies
runs again on another replica (deterministic sampling: the same images), up to twice within its deadline.
"""

# no `from __future__ import annotations` here: Ray Serve's FastAPI class views need real annotations (else 422 "self")

import asyncio
import base64
import dataclasses
import hmac
import logging
import time
import urllib.request
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
import ray
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.util import metrics

from runtime import __version__
from runtime.errors import DeployError, InputError, brief, first_line
from runtime.host import Host
from runtime.images import encode_png
from runtime.requests import SampleRequest
from runtime.schedulers import SAMPLERS

from . import jobs, limits
from .config import ServiceConfig, key_digest
from .jobs import Job

log = logging.getLogger("ddpm_deploy.serve")
RETRY_AFTER_S = 1
PROGRESS_INTERVAL_S = 0.25  # a job's progress events, at most this often (previews and the last step always)
REPLICA_RETRIES = 2  # a request whose replica dies runs again on another one, at most this many times
EXTRA_FIELDS = {"format": str}  # how to answer; the rest of the body is a runtime.requests.SampleRequest
JOB_FIELDS = {"preview_every": int}  # a job's own field
SSE_KEEPALIVE_S = 15


AT_CAPACITY = "the service is at capacity; retry later"


def replica_lost(exc: BaseException, attempt: int, started: float, timeout_s: float, during: str = "") -> str | None:
    """An engine replica died mid-request (Serve replaces it): logged. Sampling is deterministic, so running the
    request again on another replica gives the very images it would have given; returns None to do so, or the
    one-line answer once the retries are spent or the request is past its deadline."""
    log.warning("engine replica lost%s (%s); attempt %d of %d", during, type(exc).__name__, attempt + 1, 1 + REPLICA_RETRIES)
    if attempt == REPLICA_RETRIES or time.perf_counter() - started >= timeout_s:
        return f"the engine replica failed ({type(exc).__name__}); retry"
    return None


def json_images(result: dict[str, Any]) -> dict[str, Any]:
    """An engine's answer as the JSON body: base64 PNGs with their metadata, and the replica."""
    return {"images": [{"png_base64": base64.b64encode(encode_png(image, meta)).decode("ascii"), "metadata": meta}
                       for image, meta in zip(result["images"], result["metadata"])], "replica": result["replica"]}


class Engine:
    """One replica: the engine's host, loaded once, for every request routed here."""

    def __init__(self, config: dict[str, Any]):
        self.config = ServiceConfig(**config)
        # the ingress admits each request against its own deadline ceiling (timeout_s, or job_timeout_s for a job)
        options = dataclasses.replace(self.config.host_options(), timeout_s=max(self.config.timeout_s, self.config.job_timeout_s))
        self.host = Host(self.config.engine, options, on_call=self._on_call)
        self.pipeline, self.batcher = self.host.pipeline, self.host.batcher
        self.engine_name = self.pipeline.runner.path.name  # an engines folder's: the engine chosen
        self.engine_sha256 = str(self.pipeline.engine_sha256)
        context = serve.get_replica_context()
        node = ray.get_runtime_context().get_node_id()[:12]
        self.replica = f"{context.replica_id.unique_id}@{context.deployment}@node-{node}"
        tags = {"replica": self.replica}
        self.m_requests = metrics.Counter("ddpm_requests", "requests answered, by HTTP status", tag_keys=("replica", "status"))
        self.m_queue = metrics.Gauge("ddpm_queue_length", "requests waiting for admission", tag_keys=("replica",))
        self.m_rows = metrics.Histogram("ddpm_batch_rows", "image rows per UNet call", boundaries=[1, 2, 4, 8, 16, 32],
                                        tag_keys=("replica",))
        self.m_step = metrics.Histogram("ddpm_step_seconds", "seconds per UNet call and its sampler steps",
                                        boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], tag_keys=("replica",))
        for metric in (self.m_requests, self.m_queue, self.m_rows, self.m_step):
            metric.set_default_tags(tags)

    def _on_call(self, rows: int, seconds: float) -> None:
        self.m_rows.observe(rows)
        self.m_step.observe(seconds)
        self.m_queue.set(self.batcher.queue_length)

    async def generate(self, request: SampleRequest, progress=None, preview_every: int = 0,
                       submitted: list | None = None) -> dict[str, Any]:
        """{"status": 200, "images": uint8 [count, H, W, C], "metadata": [...]} or {"status": 4xx/5xx, "message"}
        (with "replica" and "engine_sha256"). ``progress``, ``preview_every``: runtime.host.Host.submit's; the
        request's trajectory is appended to ``submitted``."""
        try:
            future = self.host.submit(request, progress, preview_every)
            if submitted is not None:
                submitted.append(future.trajectory)
            self.m_queue.set(self.batcher.queue_length)
            try:
                await asyncio.wrap_future(future)
            except asyncio.CancelledError:  # the client went away: free its rows at the next step
                self.batcher.cancel(future)
                self.m_requests.inc(tags={"status": "499"})
                raise
            result = future.sample_result()
        except DeployError as exc:
            status = exc.http_status
            self.m_requests.inc(tags={"status": str(status)})
            return {"status": status, "message": first_line(exc), "replica": self.replica, "engine_sha256": self.engine_sha256}
        self.m_requests.inc(tags={"status": "200"})
        metadata = [result.png_metadata(i) for i in range(len(result.images))]
        return {"status": 200, "images": result.images, "metadata": metadata, "replica": self.replica,
                "engine_sha256": self.engine_sha256}

    async def stream(self, request: SampleRequest, preview_every: int = 0):
        """A job's run (serve/jobs.py): yields {"type": "progress", "steps_done", "steps_total", "preview"} as the
        request advances (at most every PROGRESS_INTERVAL_S, and at each preview, uint8 images or None), then
        {"type": "result", ...generate's answer}. Cancelling the stream cancels the request."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        submitted: list = []
        last = [0.0]

        def progress(done: int, total: int) -> None:  # in the batcher's thread
            preview = None
            if submitted and submitted[0].preview is not None:
                preview, submitted[0].preview = submitted[0].preview, None
            now = time.monotonic()
            if preview is None and done < total and now - last[0] < PROGRESS_INTERVAL_S:
                return
            last[0] = now
            loop.call_soon_threadsafe(events.put_nowait, {"type": "progress", "steps_done": done, "steps_total": total,
                                                          "preview": preview})

        task = asyncio.ensure_future(self.generate(request, progress, preview_every, submitted))
        try:
            while True:
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()
                while not events.empty():
                    yield events.get_nowait()
                yield {"type": "result", **task.result()}
                return
        finally:
            if not task.done():  # the job was cancelled (or its ingress went away): free its rows
                task.cancel()

    def info(self) -> dict[str, Any]:
        runner = self.pipeline.runner
        entry = runner.entry
        profile = runner.profile
        return {
            "engine": self.engine_name,
            "sha256": self.pipeline.engine_sha256,
            "kind": entry.kind if entry else None,
            "precision": entry.precision if entry else None,
            "profile": None if profile is None else {"min": profile.min, "opt": profile.opt, "max": profile.max},
            "image": list(self.pipeline.image_shape),
            "conditioning": self.pipeline.conditioning.describe(runner.io) if runner.io.conditioning_inputs else None,
            "default_scheduler": self.pipeline.default_scheduler,
            "schedulers": list(SAMPLERS),
            "max_batch": self.batcher.max_batch,
            "max_count": self.config.max_count,
            "max_steps": self.config.max_steps,
            "replica": self.replica,
            "stats": self.host.stats(),
        }

    def check_health(self) -> None:
        """Ray Serve calls this periodically; a dead batcher thread restarts the replica."""
        if not self.batcher.alive:
            raise RuntimeError("the step batcher's loop thread has stopped")

    def __del__(self):
        host = getattr(self, "host", None)
        if host is not None:
            host.close(drain=False)


app = FastAPI(title="ddpm-deploy", version=__version__, docs_url=None, redoc_url=None, openapi_url="/openapi.json",
              description="Images from a diffusers UNet2DModel, sampled by ddpm-deploy's runtime. With API keys "
                          "configured, send `Authorization: Bearer KEY`.")
TEXT_ERROR = {"content": {"text/plain": {"schema": {"type": "string"}}}}


def error(status: int, message: str, **headers: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def one_line_http_error(request: Request, exc: StarletteHTTPException) -> PlainTextResponse:
    """FastAPI's own refusals (404 unknown path, 405 wrong method) as one line of text, like ours."""
    return error(exc.status_code, first_line(Exception(exc.detail)), **dict(exc.headers or {}))


class BodyTooLarge(Exception):
    pass


async def read_body(http: Request, limit: int) -> bytes:
    """The request body, read no further than ``limit`` bytes: a declared or streamed larger one raises
    BodyTooLarge before more than the limit is held."""
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def errors_openapi(*codes: int) -> dict[str, Any]:
    texts = {400: "a bad request: one line saying what", 401: "no valid API key (when keys are configured)",
             404: "no such job for this key (or it expired)", 409: "the job has not succeeded (yet)",
             413: "the body is larger than the service accepts", 429: "too many requests in flight, or jobs, for this key",
             503: "at capacity or shutting down; retry (Retry-After)", 504: "past the request's deadline",
             500: "the engine failed"}
    return {str(code): {"description": texts[code], **TEXT_ERROR} for code in codes}


def images_openapi() -> dict[str, Any]:
    """/v1/images in the OpenAPI schema: the request body is the request type's JSON schema plus ``format``."""
    body = SampleRequest.json_schema()
    body["properties"]["format"] = {"type": "string", "enum": ["png", "json"],
                                    "description": "png (one image; the default for count 1) or json (base64 PNGs)"}
    return {
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": "the images, each PNG with the metadata runtime.sample writes",
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                "application/json": {"schema": {"type": "object"}}}},
            **errors_openapi(400, 401, 413, 429, 503, 504, 500),
        },
    }


def jobs_openapi() -> dict[str, Any]:
    """POST /v1/jobs: the request type's JSON schema plus ``preview_every``."""
    body = SampleRequest.json_schema()
    body["properties"]["preview_every"] = {"type": "integer", "minimum": 1,
                                           "description": "a preview (the predicted x0, a small PNG) in the event stream "
                                                          "every this many steps"}
    return {
        "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
        "responses": {"202": {"description": "the job: id, state, steps; Location: /v1/jobs/{id}",
                              "content": {"application/json": {"schema": {"type": "object"}}},
                              # OpenAPI links: how a client (and Schemathesis' stateful phase) follows a job
                              "links": {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}}
                                        for name, op in (("state", "getJob"), ("events", "getJobEvents"),
                                                         ("result", "getJobResult"), ("cancel", "deleteJob"))}},
                      **errors_openapi(400, 401, 413, 429, 503)},
    }


JOB_OPENAPI = {"responses": errors_openapi(401, 404)}


@serve.ingress(app)
class Api:
    """The ingress: authentication, per-key limits, body limits and parsing here, before any engine work.
    Per-key counts are per ingress replica (one by default)."""

    def __init__(self, engine, config: dict[str, Any], key_digests: list[bytes], body_limit: int):
        self.engine = engine
        self.config = ServiceConfig(**config)
        self.host_options = self.config.host_options()
        self.key_digests = list(key_digests)
        self.body_limit = body_limit
        self.in_flight: dict[str, int] = {}  # per key id ("" without keys)
        self.jobs: dict[str, Job] = {}
        self.job_options = dataclasses.replace(self.host_options, timeout_s=self.config.job_timeout_s)
        self.draining = False
        self.m_http = metrics.Counter("ddpm_http_requests", "HTTP requests to /v1/images, by status", tag_keys=("status",))
        self.m_latency = metrics.Histogram("ddpm_request_seconds", "seconds from arrival to response, answered requests",
                                           boundaries=[0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300])

    def _answer(self, started: float, response: Response) -> Response:
        self.m_http.inc(tags={"status": str(response.status_code)})
        if response.status_code == 200:
            self.m_latency.observe(time.perf_counter() - started)
        return response

    def _key_id(self, http: Request) -> str | None:
        """"" when the service has no keys; the matching key's id (a digest prefix, never the key); None: no valid key.
        Every configured key is compared, in constant time, whatever matches."""
        if not self.key_digests:
            return ""
        scheme, _, token = http.headers.get("authorization", "").partition(" ")
        digest = key_digest(token.strip()) if scheme.lower() == "bearer" else b"\0" * 32
        found = None
        for known in self.key_digests:
            if hmac.compare_digest(digest, known):
                found = known.hex()[:12]
        return found

    def _unauthorized(self) -> Response:
        return error(401, "a valid API key is required: send `Authorization: Bearer KEY`", **{"WWW-Authenticate": "Bearer"})

    # called by python -m serve on SIGTERM -----------------------------------------------------------
    def drain(self) -> None:
        self.draining = True

    def requests_in_flight(self) -> int:
        return sum(self.in_flight.values()) + sum(job.state not in jobs.FINISHED for job in self.jobs.values())

    @app.post("/v1/images", openapi_extra=images_openapi())
    async def images(self, http: Request) -> Response:
        started = time.perf_counter()
        key = self._caller(http)
        if isinstance(key, Response):
            return self._answer(started, key)
        if self.key_digests and self.in_flight.get(key, 0) >= self.config.max_in_flight_per_key:
            return self._answer(started, error(429, f"this key has {self.config.max_in_flight_per_key} requests in flight, "
                                                    "the most it may; retry when one finishes",
                                               **{"Retry-After": str(RETRY_AFTER_S)}))
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        try:
            return await self._images(http, started)
        finally:
            self.in_flight[key] -= 1

    def _caller(self, http: Request) -> str | Response:
        """The caller's key id (see _key_id) for a new request, or the answer refusing it: 503 while draining, 401."""
        if self.draining:
            return error(503, "the service is shutting down; retry", **{"Retry-After": str(RETRY_AFTER_S)})
        key = self._key_id(http)
        return self._unauthorized() if key is None else key

    async def _request(self, http: Request, extra_fields: dict[str, type]) -> tuple[SampleRequest, dict] | Response:
        """The body as a request and its extra fields, or the 413/400 answer."""
        try:
            body = await read_body(http, self.body_limit)
        except BodyTooLarge:
            return error(413, limits.message(self.body_limit))
        try:
            return SampleRequest.from_json(body, "request body", extra_fields)
        except InputError as exc:
            return error(400, first_line(exc))

    async def _images(self, http: Request, started: float) -> Response:
        parsed = await self._request(http, EXTRA_FIELDS)
        if isinstance(parsed, Response):
            return self._answer(started, parsed)
        request, extra = parsed
        try:
            fmt = extra.get("format", "png" if request.count == 1 else "json")
            if fmt not in ("png", "json") or (fmt == "png" and request.count != 1):
                raise InputError(f"format must be json, or png for one image; got {brief(fmt)} for count {request.count}")
            request = self.host_options.admit(request)  # the replicas' own limits, checked before any routing
            timeout_s = request.timeout_s
        except InputError as exc:
            return self._answer(started, error(400, first_line(exc)))
        for attempt in range(1 + REPLICA_RETRIES):
            try:
                left = max(timeout_s - (time.perf_counter() - started), 1e-3)  # past it: 504 from the batcher
                result = await self.engine.generate.remote(dataclasses.replace(request, timeout_s=left))
                break
            except BackPressureError:
                return self._answer(started, error(503, AT_CAPACITY, **{"Retry-After": str(RETRY_AFTER_S)}))
            except (RayActorError, ActorUnavailableError) as exc:
                if (failed := replica_lost(exc, attempt, started, timeout_s)) is not None:
                    return self._answer(started, error(503, failed, **{"Retry-After": str(RETRY_AFTER_S)}))
        headers = {"X-Replica": result["replica"], "X-Attempts": str(attempt + 1), "X-Engine-Sha256": result["engine_sha256"]}
        if result["status"] != 200:
            if result["status"] == 503:
                headers["Retry-After"] = str(RETRY_AFTER_S)
            return self._answer(started, error(result["status"], result["message"], **headers))
        if fmt == "png":
            png = encode_png(result["images"][0], result["metadata"][0])
            return self._answer(started, Response(png, media_type="image/png", headers=headers))
        return self._answer(started, JSONResponse(json_images(result), headers=headers))

    # jobs (serve/jobs.py) -----------------------------------------------------------------------------
    @app.post("/v1/jobs", status_code=202, openapi_extra=jobs_openapi(), operation_id="createJob")
    async def create_job(self, http: Request) -> Response:
        key = self._caller(http)
        if isinstance(key, Response):
            return key
        parsed = await self._request(http, JOB_FIELDS)
        if isinstance(parsed, Response):
            return parsed
        request, extra = parsed
        preview_every = extra.get("preview_every", 0)
        try:
            if "preview_every" in extra and preview_every < 1:
                raise InputError(f"preview_every must be a whole number of steps >= 1, got {brief(preview_every)}")
            request = self.job_options.admit(request)
        except InputError as exc:
            return error(400, first_line(exc))
        self._forget_expired()
        if len(self.jobs) >= self.config.max_jobs:
            return error(503, f"the service keeps {self.config.max_jobs} jobs, the most it may; retry later",
                         **{"Retry-After": str(RETRY_AFTER_S)})
        if sum(job.key == key for job in self.jobs.values()) >= self.config.max_jobs_per_key:
            return error(429, f"this key has {self.config.max_jobs_per_key} jobs, the most it may; DELETE finished ones "
                              "(their results are kept " f"{self.config.job_ttl_s:g} s)", **{"Retry-After": str(RETRY_AFTER_S)})
        job = Job(Job.new_id(), key, request, preview_every)
        self.jobs[job.id] = job
        job.task = asyncio.get_running_loop().create_task(self._run_job(job))
        return JSONResponse(job.describe(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for job_id in [j.id for j in self.jobs.values() if j.finished is not None and now - j.finished > self.config.job_ttl_s]:
            del self.jobs[job_id]

    def _job(self, http: Request, job_id: str) -> Job | Response:
        """The caller's job, or the 401/404 answer (another key's job is not found either)."""
        key = self._key_id(http)
        if key is None:
            return self._unauthorized()
        self._forget_expired()
        job = self.jobs.get(job_id)
        if job is None or not hmac.compare_digest(job.key, key):
            return error(404, f"no job {brief(job_id)} for this key (finished jobs are kept {self.config.job_ttl_s:g} s)")
        return job

    async def _run_job(self, job: Job) -> None:
        started = time.perf_counter()
        timeout_s = job.request.timeout_s
        try:
            for attempt in range(1 + REPLICA_RETRIES):
                left = max(timeout_s - (time.perf_counter() - started), 1e-3)
                stream = self.engine.options(stream=True).stream.remote(dataclasses.replace(job.request, timeout_s=left),
                                                                       job.preview_every)
                result = None
                try:
                    async for event in stream:
                        if event["type"] == "progress":
                            job.progress(event["steps_done"], event["steps_total"], event["preview"])
                        else:
                            result = event
                    break
                except asyncio.CancelledError:
                    stream.cancel()
                    raise
                except BackPressureError:
                    return job.finish(jobs.FAILED, 503, AT_CAPACITY)
                except (RayActorError, ActorUnavailableError) as exc:
                    if (failed := replica_lost(exc, attempt, started, timeout_s, f" during job {job.id}")) is not None:
                        return job.finish(jobs.FAILED, 503, failed)
                    job.restart()
            if result is None or result["status"] != 200:
                job.engine_sha256 = result and result.get("engine_sha256")
                return job.finish(jobs.FAILED, result["status"] if result else 500,
                                  result["message"] if result else "the engine replica gave no result")
            job.finish(jobs.SUCCEEDED, 200, result={**json_images(result), "engine_sha256": result["engine_sha256"]})
        except asyncio.CancelledError:
            job.finish(jobs.CANCELLED, 410, "the job was cancelled")
        except Exception as exc:  # never leave a job running forever
            log.exception("job %s failed", job.id)
            job.finish(jobs.FAILED, 500, f"the job failed ({type(exc).__name__})")

    @app.get("/v1/jobs/{job_id}", openapi_extra=JOB_OPENAPI, operation_id="getJob")
    async def job_state(self, http: Request, job_id: str) -> Response:
        job = self._job(http, job_id)
        return job if isinstance(job, Response) else JSONResponse(job.describe())

    @app.get("/v1/jobs/{job_id}/events", openapi_extra=JOB_OPENAPI, operation_id="getJobEvents")
    async def job_events(self, http: Request, job_id: str) -> Response:
        """Server-sent events: progress (steps done, total, ETA), preview (base64 PNG), restarted, done; from the
        start (or after Last-Event-ID) until the job finishes."""
        job = self._job(http, job_id)
        if isinstance(job, Response):
            return job
        last = http.headers.get("last-event-id", "")
        after = int(last) if last.isdigit() else -1

        async def events():
            sent = after
            while True:
                changed = job.changed
                for event_id, name, data in [e for e in job.events if e[0] > sent]:
                    yield jobs.sse(event_id, name, data)
                    sent = event_id
                if job.state in jobs.FINISHED and sent >= job.next_event - 1:
                    return
                try:
                    await asyncio.wait_for(changed.wait(), timeout=SSE_KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield b": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/jobs/{job_id}/result", openapi_extra={"responses": errors_openapi(401, 404, 409, 500, 503, 504)},
             operation_id="getJobResult")
    async def job_result(self, http: Request, job_id: str) -> Response:
        job = self._job(http, job_id)
        if isinstance(job, Response):
            return job
        if job.state == jobs.SUCCEEDED:
            result = job.result
            return JSONResponse({"images": result["images"], "replica": result["replica"]},
                                headers={"X-Engine-Sha256": result["engine_sha256"], "X-Replica": result["replica"]})
        if job.state in (jobs.QUEUED, jobs.RUNNING):
            return error(409, f"job {job.id} is {job.state} ({job.steps_done}/{job.steps_total or '?'} steps); "
                              "its result is not ready", **{"Retry-After": str(RETRY_AFTER_S)})
        return error(409 if job.state == jobs.CANCELLED else job.status or 500, job.message or job.state,
                     **({"X-Engine-Sha256": job.engine_sha256} if job.engine_sha256 else {}))

    @app.delete("/v1/jobs/{job_id}", openapi_extra=JOB_OPENAPI, operation_id="deleteJob")
    async def delete_job(self, http: Request, job_id: str) -> Response:
        """Cancels the job if it runs (its rows leave the batch at the next step) and forgets it."""
        job = self._job(http, job_id)
        if isinstance(job, Response):
            return job
        if job.task is not None and not job.task.done():
            job.task.cancel()
            await asyncio.wait({job.task}, timeout=10)
        del self.jobs[job.id]
        return JSONResponse(job.describe())

    @app.get("/healthz")
    async def healthz(self) -> Response:
        try:
            await asyncio.wait_for(self.engine.info.remote(), timeout=10)
        except Exception as exc:
            return error(503, f"no engine replica answers ({type(exc).__name__})")
        return PlainTextResponse("ok\n")

    @app.get("/v1/models")
    async def models(self, http: Request) -> Response:
        if self.config.protect_info and self._key_id(http) is None:
            return self._unauthorized()
        info = await self.engine.info.remote()
        return JSONResponse({"models": [{**info, "max_body_bytes": self.body_limit, "api_keys": bool(self.key_digests)}]})

    @app.get("/metrics")
    async def metrics_text(self, http: Request) -> Response:
        if self.config.protect_info and self._key_id(http) is None:
            return self._unauthorized()
        url = f"http://127.0.0.1:{self.config.metrics_port}/metrics"
        try:
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
        except OSError as exc:
            return error(503, f"Ray's metrics endpoint {url} does not answer ({exc})")
        return PlainTextResponse("".join(line + "\n" for line in text.splitlines() if "ddpm_" in line),
                                 media_type="text/plain; version=0.0.4")


def build_app(prepared, name: str = "ddpm"):
    """The application graph for ``serve.run`` or a Serve config file (serve.application): engine replicas (as
    configured) behind one ingress. ``prepared``: serve.application.prepare (the config, the API keys' digests,
    the body limit)."""
    config = prepared.config
    # Replicas stopped by a rolling update or a scale-down finish what they hold first: up to a request's deadline.
    graceful = {"graceful_shutdown_wait_loop_s": 1.0, "graceful_shutdown_timeout_s": config.timeout_s + 10}
    options: dict[str, Any] = {
        "name": f"{name}-engine",
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        # Requests go straight to a replica: its step batcher admits (a full batch + max_queue waiting) or
        # answers 503 at once, rather than Serve holding them in a queue of its own.
        "max_ongoing_requests": 10_000,
        "health_check_period_s": 5,
        **graceful,
    }
    if config.autoscaling:
        options["autoscaling_config"] = dict(config.autoscaling)
    else:
        options["num_replicas"] = config.num_replicas
    engine = serve.deployment(Engine).options(**options).bind(config.to_dict())
    ingress = serve.deployment(Api).options(name=f"{name}-api", ray_actor_options={"num_cpus": 0},
                                            max_ongoing_requests=10_000, **graceful)
    return ingress.bind(engine, config.to_dict(), list(prepared.key_digests), prepared.body_limit)
