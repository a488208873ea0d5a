// Test driver for libddpm_runtime (tests/embed/test_c_abi.py runs it).
//   c_abi_check ENGINE images OUTDIR REQUEST...         one request after another; OUTDIR/<i>.bin each
//   c_abi_check ENGINE threads OUTDIR T REQUEST...      T threads at once, thread t sending requests t,
//                                                       t + T, ... one after another; OUTDIR/<k>.bin
//   c_abi_check ENGINE errors                           bad inputs, one JSON line each, then a good call
//   c_abi_check ENGINE memory N REQUEST                 N calls; resident memory (kB) after each
// Prints JSON lines on stdout.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "ddpm_runtime.h"

static std::string quoted(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
    }
    return out + "\"";
}

static void report(const char *name, int code) {
    std::printf("{\"case\": %s, \"code\": %d, \"message\": %s}\n", quoted(name).c_str(), code, quoted(ddpm_last_error()).c_str());
    std::fflush(stdout);
}

static long rss_kb() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

static bool write_file(const std::string &path, const std::vector<uint8_t> &data) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char *>(data.data()), static_cast<std::streamsize>(data.size()));
    return static_cast<bool>(out);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *engine = argv[1];
    std::string mode = argv[2];
    ddpm_handle *h = nullptr;
    if (mode == "errors") {
        report("open: engine missing", ddpm_open("/nonexistent/unet.onnx", nullptr, &h));
        report("open: NULL handle pointer", ddpm_open(engine, nullptr, nullptr));
        report("open: NULL engine path", ddpm_open(nullptr, nullptr, &h));
        report("open: options not JSON", ddpm_open(engine, "{max_batch: 2", &h));
        report("open: unknown option", ddpm_open(engine, "{\"max_bach\": 2}", &h));
        report("open: max_batch 0", ddpm_open(engine, "{\"max_batch\": 0}", &h));
        int status = ddpm_open(engine, "{\"max_batch\": 4}", &h);
        report("open", status);
        if (status != DDPM_OK) return 1;
        size_t height = 0, width = 0, channels = 0;
        ddpm_image_shape(h, &height, &width, &channels);
        std::vector<uint8_t> out(8 * height * width * channels);
        report("sample: request not JSON", ddpm_sample(h, "{\"seed\": ", out.data(), out.size()));
        report("sample: request not an object", ddpm_sample(h, "[1, 2]", out.data(), out.size()));
        report("sample: unknown field", ddpm_sample(h, "{\"sed\": 1}", out.data(), out.size()));
        report("sample: wrong type", ddpm_sample(h, "{\"steps\": \"ten\"}", out.data(), out.size()));
        report("sample: unknown scheduler", ddpm_sample(h, "{\"scheduler\": \"euler\"}", out.data(), out.size()));
        report("sample: steps 0", ddpm_sample(h, "{\"steps\": 0}", out.data(), out.size()));
        report("sample: negative seed", ddpm_sample(h, "{\"seed\": -1}", out.data(), out.size()));
        report("sample: buffer too small", ddpm_sample(h, "{\"count\": 2, \"steps\": 2}", out.data(), height * width * channels));
        report("sample: count above max_batch", ddpm_sample(h, "{\"count\": 5, \"steps\": 2}", out.data(), out.size()));
        report("sample: NULL out", ddpm_sample(h, "{}", nullptr, out.size()));
        report("sample: made-up handle", ddpm_sample(reinterpret_cast<ddpm_handle *>(0x1234), "{}", out.data(), out.size()));
        report("sample: good", ddpm_sample(h, "{\"steps\": 3}", out.data(), out.size()));
        report("close", ddpm_close(h));
        report("sample: after close", ddpm_sample(h, "{\"steps\": 3}", out.data(), out.size()));
        report("shape: after close", ddpm_image_shape(h, &height, &width, &channels));
        report("close: twice", ddpm_close(h));
        report("close: NULL", ddpm_close(nullptr));
        status = ddpm_open(engine, nullptr, &h);  // the host still works
        report("reopen", status);
        if (status == DDPM_OK) report("sample: after reopen", ddpm_sample(h, "{\"steps\": 3}", out.data(), out.size()));
        ddpm_close(h);
        return 0;
    }
    if (ddpm_open(engine, "{\"max_batch\": 8}", &h) != DDPM_OK) {
        std::fprintf(stderr, "c_abi_check: %s\n", ddpm_last_error());
        return 1;
    }
    size_t height = 0, width = 0, channels = 0;
    ddpm_image_shape(h, &height, &width, &channels);
    size_t image_bytes = height * width * channels;
    int failures = 0;
    if (mode == "images") {
        std::string dir = argv[3];
        for (int i = 4; i < argc; ++i) {
            std::vector<uint8_t> out(8 * image_bytes);
            int status = ddpm_sample(h, argv[i], out.data(), out.size());
            report(argv[i], status);
            failures += status != DDPM_OK;
            write_file(dir + "/" + std::to_string(i - 4) + ".bin", out);
        }
    } else if (mode == "threads") {
        std::string dir = argv[3];
        int threads = std::stoi(argv[4]);
        std::vector<const char *> requests(argv + 5, argv + argc);
        std::vector<int> status(requests.size(), -1);
        auto started = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {  // thread t sends requests t, t + T, t + 2T, ... one after another
                for (size_t k = static_cast<size_t>(t); k < requests.size(); k += static_cast<size_t>(threads)) {
                    std::vector<uint8_t> out(image_bytes * 8);
                    status[k] = ddpm_sample(h, requests[k], out.data(), out.size());
                    write_file(dir + "/" + std::to_string(k) + ".bin", out);
                }
            });
        }
        for (auto &th : pool) th.join();
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        for (int s : status) failures += s != DDPM_OK;
        std::printf("{\"case\": \"threads\", \"failures\": %d, \"seconds\": %.3f}\n", failures, seconds);
    } else if (mode == "memory") {
        int n = std::stoi(argv[3]);
        std::vector<uint8_t> out(8 * image_bytes);
        for (int i = 0; i < n; ++i) {
            int status = ddpm_sample(h, argv[4], out.data(), out.size());
            failures += status != DDPM_OK;
            std::printf("{\"call\": %d, \"code\": %d, \"rss_kb\": %ld}\n", i, status, rss_kb());
        }
    }
    char stats[512] = {0};
    if (ddpm_stats_json(h, stats, sizeof stats) == DDPM_OK) std::printf("{\"case\": \"stats\", \"stats\": %s}\n", stats);
    ddpm_close(h);
    return failures == 0 ? 0 : 1;
}
