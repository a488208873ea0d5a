"""The ddpm-deploy model for NVIDIA Triton Inference Server's Python backend (decoupled).

Written into a model repository by ``python -m export.triton`` as ``<name>/1/model.py``. Each request
(its inputs are the Triton fields of :class:`runtime.requests.SampleRequest`, all optional) becomes a trajectory in one
:class:`runtime.host.Host` per model instance, so requests in flight share every UNet
call; each response is sent from the batcher's completion callback as soon as its images are ready
(output ``image``: uint8 [count, H, W, C]). Bad requests get an error response with one line. The
model's parameters (config.pbtxt) name the engine (beside this file) and the host's options
(:class:`runtime.host.HostOptions`: device, max_batch, max_queue, ...). Custom metrics: ddpm_unet_calls, ddpm_unet_rows (their ratio: rows per UNet call).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from runtime.errors import DeployError, InputError, first_line
from runtime.host import Host, HostOptions
from runtime.requests import SampleRequest

log = logging.getLogger("ddpm_deploy.triton")
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


SCALARS = {name for name, _, dims in SampleRequest.triton_inputs() if dims == (1,)}


def _value(request, name: str):
    """The scalar of a [1] input, the array of the others (class_labels, embeddings); None when absent."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy()
    if name not in SCALARS:
        return values
    values = values.reshape(-1)
    if values.size != 1:
        raise InputError(f"input {name!r} must hold one value, got {values.size}")
    return values[0]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        engine = Path(args["model_repository"]) / args["model_version"] / params.pop("engine")
        self.host = Host(engine, HostOptions.from_strings(params))
        labels = {"model": args["model_name"], "instance": args["model_instance_name"]}
        # The families must outlive their metrics (the backend refuses to set a metric of a deleted family).
        self.families = [
            pb_utils.MetricFamily(name=name, description=text, kind=pb_utils.MetricFamily.GAUGE)
            for name, text in (("ddpm_unet_calls", "UNet calls made by the step batcher"),
                               ("ddpm_unet_rows", "image rows run, summed over UNet calls"))
        ]
        self.metrics = [family.Metric(labels=labels) for family in self.families]
        log.info("ddpm-deploy: %s loaded, max_batch %d", engine, self.host.batcher.max_batch)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                future = self.host.submit(SampleRequest.from_triton(partial(_value, request)))
            except DeployError as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(first_line(exc))), flags=FINAL)
                continue
            except Exception as exc:  # a bug: answer, log, keep serving
                log.exception("ddpm-deploy: unexpected error")
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {first_line(exc)}")), flags=FINAL)
                continue
            future.add_done_callback(partial(self._respond, sender))
        return None  # decoupled: responses go out from _respond

    def _respond(self, sender, future):
        try:
            images = np.ascontiguousarray(future.result())
            response = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", images)])
        except DeployError as exc:
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(first_line(exc)))
        except Exception as exc:
            log.exception("ddpm-deploy: unexpected error")
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {first_line(exc)}"))
        sender.send(response, flags=FINAL)
        stats = self.host.batcher.stats
        try:
            for metric, value in zip(self.metrics, (stats.engine_calls, stats.rows)):
                metric.set(value)
        except Exception as exc:  # metrics are best effort; the response is out
            log.warning("ddpm-deploy: cannot update metrics: %s", first_line(exc))

    def finalize(self):
        self.host.close(drain=True)
