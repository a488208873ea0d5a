/* ddpm_runtime.h: the ddpm-deploy runtime behind a C ABI (libddpm_runtime).
 *
 * The library hosts the Python runtime in-process (pybind11's embedding API): the interpreter starts
 * on the first ddpm_open and lives until the process ends. Requests from any number of threads are
 * served at once; on one handle they share every UNet call (step-level batching). While a call
 * waits for its images the GIL is released.
 *
 * Every function returns DDPM_OK (0) or an error code; ddpm_last_error() then gives a one-line
 * message for the calling thread. Nothing throws across this boundary and nothing aborts.
 *
 * Where Python finds the runtime: the paths baked in at build time (the virtual environment that
 * configured the build and this checkout), or DDPM_RUNTIME_PYTHONPATH (':'-separated) when set.
 */
#ifndef DDPM_RUNTIME_H
#define DDPM_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define DDPM_API __declspec(dllexport)
#else
#define DDPM_API __attribute__((visibility("default")))
#endif

enum ddpm_status {
    DDPM_OK = 0,
    DDPM_ERR_INVALID_ARGUMENT = 1,  /* NULL pointer, closed handle, bad JSON, values out of range */
    DDPM_ERR_BUFFER_TOO_SMALL = 2,  /* out_len < count * height * width * channels */
    DDPM_ERR_ENGINE = 3,            /* engine missing, unreadable or not what its manifest says */
    DDPM_ERR_BACKEND_UNAVAILABLE = 4,  /* e.g. a TensorRT plan without TensorRT */
    DDPM_ERR_BUSY = 5,              /* the request queue is full: retry later */
    DDPM_ERR_FAILED = 6             /* anything else (the interpreter could not start, an internal error) */
};

typedef struct ddpm_handle ddpm_handle;

/* "ddpm-deploy X.Y.Z (C ABI 1)"; needs no interpreter. */
DDPM_API const char *ddpm_version(void);

/* Opens an engine (unet.onnx, unet.fp16.onnx, unet.int8.onnx, unet.plan, unet.ov.xml; its manifest.json beside it),
 * or an engines folder: its engine of "precision" runs (runtime.selection).
 * options_json: NULL or a JSON object of runtime.host.HostOptions: "device" ("auto"|"cpu"|"cuda"), "precision"
 * ("auto": the fastest engine `python -m export.cpu` timed on this CPU, else FP32; "fp32"|"bf16"|"int8"|"fp16"), "threads",
 * "cache_dir" (string or null), "max_batch" (rows per UNet call, default 8 or the plan's profile max),
 * "max_queue" (default 64), "timeout_s" (a request's default deadline and its ceiling), "max_count", "max_steps". */
DDPM_API int ddpm_open(const char *engine_path, const char *options_json, ddpm_handle **handle);

/* The images' height, width and channels (3 for RGB models). Any pointer may be NULL. */
DDPM_API int ddpm_image_shape(ddpm_handle *handle, size_t *height, size_t *width, size_t *channels);

/* Samples as `python -m runtime.sample` does. request_json: NULL or a JSON object, runtime.requests.SampleRequest
 * (every field, its type, range and default: docs/request.schema.json), e.g. {"count": 2, "seed": 3, "steps": 25,
 * "scheduler": "dpmpp-2m"}; "timeout_s" defaults to the handle's option. Writes count images, uint8
 * [count, height, width, channels], into out. */
DDPM_API int ddpm_sample(ddpm_handle *handle, const char *request_json, uint8_t *out, size_t out_len);

/* Pixels: uint8 [count, height, width, channels], row-major and contiguous (a mask: channels 1, white keeps a pixel). */
typedef struct ddpm_pixels {
    const uint8_t *data;
    size_t count, height, width, channels;
} ddpm_pixels;

/* ddpm_sample with the request's image inputs as pixel buffers instead of base64 PNGs in the JSON: image (the
 * starting image of image-to-image, with "strength", or of inpainting; the model's height, width and channels, as
 * ddpm_image_shape says: no resizing) and mask (inpainting; NULL: none), each of count 1 (for every image) or the
 * request's count. request_json gives the rest and neither "image" nor "mask_image". */
DDPM_API int ddpm_sample_images(ddpm_handle *handle, const char *request_json, const ddpm_pixels *image,
                                const ddpm_pixels *mask, uint8_t *out, size_t out_len);

/* The handle's batching statistics as a JSON object ({"engine_calls", "rows", "mean_batch", "completed",
 * "cancelled", "timed_out", "failed"}), NUL-terminated into buf; DDPM_ERR_BUFFER_TOO_SMALL if it does not fit. */
DDPM_API int ddpm_stats_json(ddpm_handle *handle, char *buf, size_t buf_len);

/* Finishes the handle's requests in flight, then releases it. Using it afterwards is
 * DDPM_ERR_INVALID_ARGUMENT (handles are never reused). Closing NULL is DDPM_OK. */
DDPM_API int ddpm_close(ddpm_handle *handle);

/* The calling thread's last error message ("" after success); valid until its next call. */
DDPM_API const char *ddpm_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* DDPM_RUNTIME_H */
