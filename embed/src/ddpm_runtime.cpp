// libddpm_runtime: the C ABI of embed/include/ddpm_runtime.h over the Python runtime (embed/host.py),
// hosted with pybind11's embedding API.
#include "ddpm_runtime.h"

#include <pybind11/embed.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>

namespace py = pybind11;

#ifndef DDPM_DEFAULT_PYTHONPATH
#define DDPM_DEFAULT_PYTHONPATH ""
#endif
#ifndef DDPM_VERSION
#define DDPM_VERSION "0.0.0"
#endif

namespace {

thread_local std::string last_error;

int fail(int code, std::string message) {
    last_error = std::move(message);
    return code;
}

int ok() {
    last_error.clear();
    return DDPM_OK;
}

// Handles are ids, never addresses: a closed (or made-up) handle is found missing, not dereferenced.
struct Entry {
    py::object host;  // embed.host.Host; touched only with the GIL held
    ~Entry() {
        if (host) {  // normally released by ddpm_close already
            py::gil_scoped_acquire gil;
            host = py::object();
        }
    }
};
std::mutex registry_mutex;
std::unordered_map<std::uintptr_t, std::shared_ptr<Entry>> registry;
std::atomic<std::uintptr_t> next_id{1};

std::shared_ptr<Entry> find(ddpm_handle *handle) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = registry.find(reinterpret_cast<std::uintptr_t>(handle));
    return it == registry.end() ? nullptr : it->second;
}

// The interpreter: started once, never finalized (threads of the runtime may outlive any caller).
std::once_flag started;
std::string start_error;
py::module_ *host_module = nullptr;

void start_interpreter() {
    // Our own interpreter (a C or C++ host): this thread holds the GIL after starting it, and gives it up at the
    // end. A host that is itself Python (ctypes, cffi) has an interpreter already: take its GIL for the imports.
    bool own = false;
    try {
        if (!Py_IsInitialized()) {
            py::initialize_interpreter(/*init_signal_handlers=*/false);
            own = true;
        }
        {
            std::optional<py::gil_scoped_acquire> gil;
            if (!own) gil.emplace();
            const char *env = std::getenv("DDPM_RUNTIME_PYTHONPATH");
            std::string paths = env && *env ? env : DDPM_DEFAULT_PYTHONPATH;
            py::module_ site = py::module_::import("site");
            py::list sys_path = py::module_::import("sys").attr("path");
            std::stringstream ss(paths);
            std::string path;
            while (std::getline(ss, path, ':')) {
                if (path.empty()) continue;
                site.attr("addsitedir")(path);  // runs the .pth files of a virtual environment
                sys_path.attr("insert")(0, path);
            }
            host_module = new py::module_(py::module_::import("embed.host"));
            py::module_::import("logging").attr("basicConfig")(py::arg("level") = 30);  // warnings on stderr
        }
        if (own) PyEval_SaveThread();  // other threads take the GIL when they need it
    } catch (const std::exception &e) {
        std::string what = e.what();
        start_error = "cannot start the Python runtime: " + what.substr(0, what.find('\n')) +
                      " (set DDPM_RUNTIME_PYTHONPATH to the virtual environment's site-packages and the ddpm-deploy checkout)";
        if (own && Py_IsInitialized() && PyGILState_Check()) PyEval_SaveThread();
    }
}

bool ensure_interpreter() {
    std::call_once(started, start_interpreter);
    if (!start_error.empty()) return fail(DDPM_ERR_FAILED, start_error), false;
    return true;
}

// A Python exception → (code, one line) through embed.host.describe; called with the GIL held.
int from_python(py::error_already_set &e) {
    try {
        py::tuple described = host_module->attr("describe")(e.value());
        return fail(described[0].cast<int>(), described[1].cast<std::string>());
    } catch (const std::exception &inner) {
        return fail(DDPM_ERR_FAILED, std::string("internal error: ") + inner.what());
    }
}

}  // namespace

extern "C" {

const char *ddpm_version(void) { return "ddpm-deploy " DDPM_VERSION " (C ABI 1)"; }

const char *ddpm_last_error(void) { return last_error.c_str(); }

int ddpm_open(const char *engine_path, const char *options_json, ddpm_handle **handle) {
    if (handle == nullptr) return fail(DDPM_ERR_INVALID_ARGUMENT, "handle is NULL: pass the address of a ddpm_handle*");
    *handle = nullptr;
    if (engine_path == nullptr) return fail(DDPM_ERR_INVALID_ARGUMENT, "engine_path is NULL: pass the path of an engine file");
    if (!ensure_interpreter()) return DDPM_ERR_FAILED;
    auto entry = std::make_shared<Entry>();
    {
        py::gil_scoped_acquire gil;
        try {
            // bytes, not str: text that is not UTF-8 is the request's problem (one line), not a conversion error
            entry->host = host_module->attr("Host")(py::bytes(engine_path), py::bytes(options_json ? options_json : ""));
        } catch (py::error_already_set &e) {
            return from_python(e);
        } catch (const std::exception &e) {
            return fail(DDPM_ERR_FAILED, std::string("internal error: ") + e.what());
        }
    }
    std::uintptr_t id = next_id++;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        registry[id] = entry;
    }
    *handle = reinterpret_cast<ddpm_handle *>(id);
    return ok();
}

int ddpm_image_shape(ddpm_handle *handle, size_t *height, size_t *width, size_t *channels) {
    auto entry = find(handle);
    if (!entry) return fail(DDPM_ERR_INVALID_ARGUMENT, "the handle is NULL, closed or not from ddpm_open");
    py::gil_scoped_acquire gil;
    try {
        py::tuple shape = entry->host.attr("image_shape")();
        if (height) *height = shape[0].cast<size_t>();
        if (width) *width = shape[1].cast<size_t>();
        if (channels) *channels = shape[2].cast<size_t>();
    } catch (py::error_already_set &e) {
        return from_python(e);
    }
    return ok();
}

namespace {

// A pixel buffer as (bytes, shape) for the Python side, or None; false (with the error set) when it is unusable.
bool pixels_arg(const ddpm_pixels *pixels, const char *what, py::object &bytes, py::object &shape) {
    bytes = py::none();
    shape = py::none();
    if (pixels == nullptr) return true;
    size_t size = 1;
    for (size_t d : {pixels->count, pixels->height, pixels->width, pixels->channels}) {
        if (d == 0 || size > SIZE_MAX / d) {
            fail(DDPM_ERR_INVALID_ARGUMENT, std::string(what) + " has a zero or overflowing dimension");
            return false;
        }
        size *= d;
    }
    if (pixels->data == nullptr) {
        fail(DDPM_ERR_INVALID_ARGUMENT, std::string(what) + ".data is NULL");
        return false;
    }
    bytes = py::bytes(reinterpret_cast<const char *>(pixels->data), size);
    shape = py::make_tuple(pixels->count, pixels->height, pixels->width, pixels->channels);
    return true;
}

int sample_into(ddpm_handle *handle, const char *request_json, const ddpm_pixels *image, const ddpm_pixels *mask,
                uint8_t *out, size_t out_len) {
    auto entry = find(handle);
    if (!entry) return fail(DDPM_ERR_INVALID_ARGUMENT, "the handle is NULL, closed or not from ddpm_open");
    if (out == nullptr) return fail(DDPM_ERR_INVALID_ARGUMENT, "out is NULL: pass a buffer of count * height * width * channels bytes");
    py::gil_scoped_acquire gil;
    try {
        py::object image_bytes, image_shape, mask_bytes, mask_shape;
        if (!pixels_arg(image, "image", image_bytes, image_shape) || !pixels_arg(mask, "mask", mask_bytes, mask_shape))
            return DDPM_ERR_INVALID_ARGUMENT;
        py::bytes images = entry->host.attr("sample")(py::bytes(request_json ? request_json : ""), out_len, image_bytes,
                                                      image_shape, mask_bytes, mask_shape);
        char *data = nullptr;
        Py_ssize_t size = 0;
        PyBytes_AsStringAndSize(images.ptr(), &data, &size);
        if (static_cast<size_t>(size) > out_len) return fail(DDPM_ERR_BUFFER_TOO_SMALL, "the output buffer is too small");
        std::memcpy(out, data, static_cast<size_t>(size));
    } catch (py::error_already_set &e) {
        return from_python(e);
    } catch (const std::exception &e) {
        return fail(DDPM_ERR_FAILED, std::string("internal error: ") + e.what());
    }
    return ok();
}

}  // namespace

int ddpm_sample(ddpm_handle *handle, const char *request_json, uint8_t *out, size_t out_len) {
    return sample_into(handle, request_json, nullptr, nullptr, out, out_len);
}

int ddpm_sample_images(ddpm_handle *handle, const char *request_json, const ddpm_pixels *image, const ddpm_pixels *mask,
                       uint8_t *out, size_t out_len) {
    if (image == nullptr && mask == nullptr)
        return fail(DDPM_ERR_INVALID_ARGUMENT, "image and mask are both NULL: use ddpm_sample for requests without images");
    return sample_into(handle, request_json, image, mask, out, out_len);
}

int ddpm_stats_json(ddpm_handle *handle, char *buf, size_t buf_len) {
    auto entry = find(handle);
    if (!entry) return fail(DDPM_ERR_INVALID_ARGUMENT, "the handle is NULL, closed or not from ddpm_open");
    if (buf == nullptr) return fail(DDPM_ERR_INVALID_ARGUMENT, "buf is NULL");
    std::string json;
    {
        py::gil_scoped_acquire gil;
        try {
            json = entry->host.attr("stats_json")().cast<std::string>();
        } catch (py::error_already_set &e) {
            return from_python(e);
        }
    }
    if (json.size() + 1 > buf_len)
        return fail(DDPM_ERR_BUFFER_TOO_SMALL, "buf holds " + std::to_string(buf_len) + " bytes; the statistics need " +
                                                   std::to_string(json.size() + 1));
    std::memcpy(buf, json.c_str(), json.size() + 1);
    return ok();
}

int ddpm_close(ddpm_handle *handle) {
    if (handle == nullptr) return ok();
    std::shared_ptr<Entry> entry;
    {
        std::lock_guard<std::mutex> lock(registry_mutex);
        auto it = registry.find(reinterpret_cast<std::uintptr_t>(handle));
        if (it == registry.end()) return fail(DDPM_ERR_INVALID_ARGUMENT, "the handle is closed or not from ddpm_open");
        entry = it->second;
        registry.erase(it);
    }
    py::gil_scoped_acquire gil;
    int status = DDPM_OK;
    try {
        entry->host.attr("close")();
    } catch (py::error_already_set &e) {
        status = from_python(e);
    }
    entry->host = py::object();  // released with the GIL held, whoever holds the last reference
    return status == DDPM_OK ? ok() : status;
}

}  // extern "C"
