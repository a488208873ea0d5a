// Test driver for embed/include/ddpm_loop.hpp: replays recorded model outputs and noise through a plan.
// loop_replay PLAN.json N X.bin M.bin Z.bin OUT.bin: X holds the initial sample (N floats), M one block of
// N floats per step (2N for a guided plan: the unconditional then the conditional outputs), Z one block of
// N floats per step (read only on steps with noise), OUT receives x after each step.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "ddpm_loop.hpp"

static std::vector<float> read_floats(const char* path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    std::vector<float> v(static_cast<size_t>(in.tellg()) / sizeof(float));
    in.seekg(0);
    in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
    return v;
}

int main(int argc, char** argv) {
    if (argc != 7) {
        std::cerr << "usage: loop_replay PLAN.json N X.bin M.bin Z.bin OUT.bin\n";
        return 2;
    }
    try {
        ddpm::Plan plan = ddpm::load_plan(argv[1]);
        size_t n = std::stoul(argv[2]);
        std::vector<float> x = read_floats(argv[3]), m = read_floats(argv[4]), z = read_floats(argv[5]);
        std::vector<float> trace;
        size_t i = 0, calls = 0;
        const size_t rows = plan.guided() ? 2 : 1;
        ddpm::run(
            plan, x.data(), n,
            [&](const float* sample, float t, float* eps) {
                i = calls++;
                if (i > 0) trace.insert(trace.end(), sample, sample + n);  // x after the previous step
                if (t != static_cast<float>(plan.steps[i].timestep)) throw std::runtime_error("timestep mismatch");
                if (rows == 2 && !std::equal(sample, sample + n, sample + n)) throw std::runtime_error("guided rows differ");
                std::copy(m.begin() + i * rows * n, m.begin() + (i + 1) * rows * n, eps);
            },
            [&](float* noise, size_t count) { std::copy(z.begin() + i * n, z.begin() + i * n + count, noise); });
        trace.insert(trace.end(), x.begin(), x.end());
        std::ofstream(argv[6], std::ios::binary).write(reinterpret_cast<const char*>(trace.data()),
                                                       static_cast<std::streamsize>(trace.size() * sizeof(float)));
    } catch (const std::exception& e) {
        std::cerr << "loop_replay: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
