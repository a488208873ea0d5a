"""Runs in the Triton virtual environment (tritonclient, numpy<2), not the suite's: sends requests to a
decoupled model over one gRPC stream, all at once, and reports every response.

    python triton_client.py GRPC_URL MODEL REQUESTS_JSON OUT_DIR [sequential]

REQUESTS_JSON: a list of objects with any of the request type's Triton fields
(runtime.requests.SampleRequest.triton_inputs(): count, seed, per_image_seeds, steps, ...). Prints one JSON
object: {"responses": {index: {"error": msg} | {"file": OUT_DIR/index.npy, "shape": [...]}},
"stats": Triton's inference statistics of the model (as JSON), "seconds": wall time}. An error response
carries no request id, so requests that may fail are sent ``sequential``: each after the previous answer.
"""

import json
import queue
import sys
import time

import numpy as np
import tritonclient.grpc as grpcclient
from google.protobuf.json_format import MessageToDict

from runtime.requests import SampleRequest

# config.pbtxt's data type → the client's name for it and its numpy type
CLIENT_TYPES = {"TYPE_UINT64": ("UINT64", np.uint64), "TYPE_INT32": ("INT32", np.int32), "TYPE_STRING": ("BYTES", object),
                "TYPE_FP32": ("FP32", np.float32), "TYPE_BOOL": ("BOOL", np.bool_), "TYPE_INT64": ("INT64", np.int64),
                "TYPE_UINT8": ("UINT8", np.uint8)}
TYPES = {name: (*CLIENT_TYPES[kind], dims) for name, kind, dims in SampleRequest.triton_inputs()}


def main() -> int:
    url, model, requests, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    client = grpcclient.InferenceServerClient(url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    started = time.perf_counter()
    sequential = len(sys.argv) > 5 and sys.argv[5] == "sequential"
    responses = {}

    def receive() -> None:
        result, error = results.get(timeout=300)
        if error is not None:
            responses[str(len(responses))] = {"error": error.message()}  # sequential: the one outstanding request
            return
        i = result.get_response().id
        image = result.as_numpy("image")
        np.save(f"{out}/{i}.npy", image)
        responses[i] = {"file": f"{out}/{i}.npy", "shape": list(image.shape)}

    for i, request in enumerate(requests):
        inputs = []
        for name, value in request.items():
            dtype, np_dtype, dims = TYPES[name]
            array = np.array([value] if dims == (1,) else value, dtype=np_dtype)  # scalars as [1], the rest as given
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        client.async_stream_infer(model, inputs, request_id=str(i))
        if sequential:
            receive()
    while len(responses) < len(requests):
        receive()
    seconds = time.perf_counter() - started
    client.stop_stream()
    stats = MessageToDict(client.get_inference_statistics(model))
    print(json.dumps({"responses": responses, "stats": stats, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
