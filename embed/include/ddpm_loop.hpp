// ddpm_loop.hpp: a sampling loop for C++ services that run the UNet themselves (e.g. a TensorRT plan),
// driven by a sampler exported as data with `python -m runtime.steps --out plan.json`. Header-only,
// C++17, no dependencies.
//
//   ddpm::Plan plan = ddpm::load_plan("plan.json");
//   std::vector<float> x(n), z(n);
//   noise(x.data(), n);                                    // the initial sample: standard normal noise
//   ddpm::run(plan, x.data(), n,
//             [&](const float* x, float t, float* eps) { /* the engine: eps = unet(x, t) */ },
//             [&](float* z, size_t n) { /* standard normal noise */ });
//   ddpm::to_uint8(x.data(), n, pixels);                    // [-1, 1] → 0..255, as the runtime does
//
// Arithmetic: float32, one rounding per operation in the order the numpy runtime rounds (see
// runtime/steps.py), so the loop reproduces the runtime's trajectory bit for bit given the same model
// outputs and noise. Compile it without floating-point contraction (-ffp-contract=off with GCC and
// Clang, /fp:precise with MSVC): a fused multiply-add rounds once where the runtime rounds twice.
// The sample x is in the engine's layout ([batch, C, H, W] for our ONNX and TensorRT engines); the
// loop is elementwise and does not care. For a batch, give every row the same timestep (one plan).
//
// Guided plans (`--guidance-scale S`, S > 1): the model is called on 2n values, the sample twice, and
// fills 2n outputs; the caller's engine feeds the first n with the unconditional input (null class, null
// or negative embedding) and the last n with the condition, as the runtime and diffusers' pipelines order
// them. The loop combines them as m = u + S * (c - u) before the step.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ddpm {

struct Step {
    std::int64_t timestep = 0;
    float x0_x = 0, x0_m = 0, x0_div = 1;  // x0 = (x0_x * x - x0_m * m) / x0_div
    bool clip = false;                     // clamp x0 to [-clip_range, clip_range]
    float c_x0 = 0, c_x = 0, c_m = 0;      // out = (c_x0 * x0 + c_x * x) + c_m * m
    float c_d = 0, c_r = 0;                // out += c_d * (c_r * (x0 - prev_x0))
    bool noise = false;                    // out += c_z * z, z drawn for this step
    float c_z = 0;
};

struct Plan {
    std::string sampler, prediction_type;
    float clip_range = 1;
    float init_noise_sigma = 1;
    float guidance_scale = 1;  // > 1: classifier-free guidance (2 rows per image per model call)
    std::vector<Step> steps;

    bool guided() const { return guidance_scale > 1; }
};

namespace detail {

// Just enough JSON for runtime.steps' files: objects, arrays, numbers, strings, true/false/null.
struct Value {
    enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<Value> array;
    std::map<std::string, Value> object;
};

class Parser {
  public:
    explicit Parser(const std::string& text) : s_(text) {}
    Value parse() {
        Value v = value();
        space();
        if (i_ != s_.size()) fail("trailing characters");
        return v;
    }

  private:
    const std::string& s_;
    size_t i_ = 0;
    [[noreturn]] void fail(const char* what) const {
        throw std::runtime_error(std::string("plan JSON: ") + what + " at offset " + std::to_string(i_));
    }
    void space() {
        while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
    }
    bool literal(const char* word) {
        size_t n = std::char_traits<char>::length(word);
        if (s_.compare(i_, n, word) != 0) return false;
        i_ += n;
        return true;
    }
    std::string text() {
        if (s_[i_] != '"') fail("expected a string");
        std::string out;
        for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_) {
            if (s_[i_] == '\\') {
                if (++i_ >= s_.size()) break;
                char c = s_[i_];
                out += c == 'n' ? '\n' : c == 't' ? '\t' : c;  // our files hold no other escapes
            } else {
                out += s_[i_];
            }
        }
        if (i_ >= s_.size()) fail("unterminated string");
        ++i_;
        return out;
    }
    Value value() {
        space();
        if (i_ >= s_.size()) fail("unexpected end");
        Value v;
        char c = s_[i_];
        if (c == '{') {
            v.kind = Value::Object;
            ++i_;
            space();
            if (s_[i_] == '}') return ++i_, v;
            for (;;) {
                space();
                std::string key = text();
                space();
                if (s_[i_++] != ':') fail("expected ':'");
                v.object[key] = value();
                space();
                if (s_[i_] == ',') { ++i_; continue; }
                if (s_[i_] == '}') { ++i_; return v; }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.kind = Value::Array;
            ++i_;
            space();
            if (s_[i_] == ']') return ++i_, v;
            for (;;) {
                v.array.push_back(value());
                space();
                if (s_[i_] == ',') { ++i_; continue; }
                if (s_[i_] == ']') { ++i_; return v; }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"') {
            v.kind = Value::String;
            v.string = text();
            return v;
        }
        if (literal("true")) { v.kind = Value::Bool; v.boolean = true; return v; }
        if (literal("false")) { v.kind = Value::Bool; return v; }
        if (literal("null")) return v;
        const char* start = s_.c_str() + i_;
        char* end = nullptr;
        v.number = std::strtod(start, &end);  // correctly rounded: a float32 written as a double comes back exact
        if (end == start) fail("expected a value");
        v.kind = Value::Number;
        i_ += static_cast<size_t>(end - start);
        return v;
    }
};

inline const Value* find(const Value& object, const std::string& key) {
    auto it = object.object.find(key);
    return object.kind == Value::Object && it != object.object.end() ? &it->second : nullptr;
}

inline const Value& member(const Value& object, const std::string& key) {
    auto it = object.object.find(key);
    if (object.kind != Value::Object || it == object.object.end()) throw std::runtime_error("plan JSON: no \"" + key + "\"");
    return it->second;
}

}  // namespace detail

inline Plan parse_plan(const std::string& json) {
    using detail::member;
    detail::Value root = detail::Parser(json).parse();
    if (member(root, "format").string != "ddpm-deploy.steps/1")
        throw std::runtime_error("not a ddpm-deploy.steps/1 plan; write one with `python -m runtime.steps`");
    Plan plan;
    plan.sampler = member(root, "sampler").string;
    plan.prediction_type = member(root, "prediction_type").string;
    const detail::Value& range = member(root, "clip_range");
    if (range.kind == detail::Value::Number) plan.clip_range = static_cast<float>(range.number);
    plan.init_noise_sigma = static_cast<float>(member(root, "init_noise_sigma").number);
    if (const detail::Value* g = detail::find(root, "guidance_scale"); g && g->kind == detail::Value::Number)
        plan.guidance_scale = static_cast<float>(g->number);  // absent in plans older than guidance: 1
    const detail::Value& cols = member(root, "columns");
    size_t n = static_cast<size_t>(member(root, "steps").number);
    plan.steps.resize(n);
    auto column = [&](const char* name, auto setter) {
        const detail::Value& c = member(cols, name);
        if (c.array.size() != n) throw std::runtime_error(std::string("plan JSON: column ") + name + " has the wrong length");
        for (size_t i = 0; i < n; ++i) setter(plan.steps[i], c.array[i]);
    };
    using V = detail::Value;
    column("timestep", [](Step& s, const V& v) { s.timestep = static_cast<std::int64_t>(v.number); });
    column("x0_x", [](Step& s, const V& v) { s.x0_x = static_cast<float>(v.number); });
    column("x0_m", [](Step& s, const V& v) { s.x0_m = static_cast<float>(v.number); });
    column("x0_div", [](Step& s, const V& v) { s.x0_div = static_cast<float>(v.number); });
    column("clip", [](Step& s, const V& v) { s.clip = v.boolean; });
    column("c_x0", [](Step& s, const V& v) { s.c_x0 = static_cast<float>(v.number); });
    column("c_x", [](Step& s, const V& v) { s.c_x = static_cast<float>(v.number); });
    column("c_m", [](Step& s, const V& v) { s.c_m = static_cast<float>(v.number); });
    column("c_d", [](Step& s, const V& v) { s.c_d = static_cast<float>(v.number); });
    column("c_r", [](Step& s, const V& v) { s.c_r = static_cast<float>(v.number); });
    column("noise", [](Step& s, const V& v) { s.noise = v.boolean; });
    column("c_z", [](Step& s, const V& v) { s.c_z = static_cast<float>(v.number); });
    return plan;
}

inline Plan load_plan(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open plan " + path + "; write one with `python -m runtime.steps`");
    std::stringstream buffer;
    buffer << in.rdbuf();
    return parse_plan(buffer.str());
}

// One step, elementwise over n values: x (in/out) from the model output m, noise z (only read where
// step.noise) and the previous step's x0 (in/out; only read where step.c_d != 0).
inline void step(const Step& s, float clip_range, float* x, const float* m, const float* z, float* prev_x0, size_t n) {
    for (size_t k = 0; k < n; ++k) {
        float x0 = (s.x0_x * x[k] - s.x0_m * m[k]) / s.x0_div;
        if (s.clip) x0 = x0 < -clip_range ? -clip_range : (x0 > clip_range ? clip_range : x0);
        float out = s.c_x0 * x0;
        if (s.c_x != 0) out = out + s.c_x * x[k];
        if (s.c_m != 0) out = out + s.c_m * m[k];
        if (s.c_d != 0) out = out + s.c_d * (s.c_r * (x0 - prev_x0[k]));
        if (s.noise) out = out + s.c_z * z[k];
        prev_x0[k] = x0;
        x[k] = out;
    }
}

// Classifier-free guidance on 2n model outputs (unconditional first): m = u + scale * (c - u), rounding as the runtime.
inline void guide(float scale, const float* m2, float* m, size_t n) {
    for (size_t k = 0; k < n; ++k) {
        float u = m2[k], c = m2[n + k];
        m[k] = u + scale * (c - u);
    }
}

// The whole loop. model(const float* x, float timestep, float* m) runs the engine on n values (2n for a
// guided plan: see above); noise(float* z, size_t n) fills standard normal noise (called only on steps
// that use it).
template <class Model, class Noise>
void run(const Plan& plan, float* x, size_t n, Model&& model, Noise&& noise) {
    const bool guided = plan.guided();
    std::vector<float> m(n), z(n), prev_x0(n), x2(guided ? 2 * n : 0), m2(guided ? 2 * n : 0);
    for (const Step& s : plan.steps) {
        const float t = static_cast<float>(s.timestep);
        if (guided) {
            std::copy(x, x + n, x2.begin());
            std::copy(x, x + n, x2.begin() + static_cast<std::ptrdiff_t>(n));
            model(static_cast<const float*>(x2.data()), t, m2.data());
            guide(plan.guidance_scale, m2.data(), m.data(), n);
        } else {
            model(static_cast<const float*>(x), t, m.data());
        }
        if (s.noise) noise(z.data(), n);
        step(s, plan.clip_range, x, m.data(), z.data(), prev_x0.data(), n);
    }
}

// [-1, 1] → 0..255 as the runtime (and diffusers) map a final sample: round(clamp(x / 2 + 0.5, 0, 1) * 255).
inline void to_uint8(const float* x, size_t n, std::uint8_t* out) {
    for (size_t k = 0; k < n; ++k) {
        float v = x[k] / 2.0f + 0.5f;
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        out[k] = static_cast<std::uint8_t>(std::nearbyint(v * 255.0f));  // round half to even, as numpy
    }
}

}  // namespace ddpm
