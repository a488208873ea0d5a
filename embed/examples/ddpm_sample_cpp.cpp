// ddpm_sample_cpp ENGINE [REQUEST_JSON] [OUT.ppm|OUT.pgm]: samples through the C ABI and writes the first
// image as a binary PPM (3 channels) or PGM (1 channel).
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "ddpm_runtime.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: ddpm_sample_cpp ENGINE [REQUEST_JSON] [OUT.ppm]\n%s\n", ddpm_version());
        return 2;
    }
    const char *request = argc > 2 ? argv[2] : "{}";
    std::string out_path = argc > 3 ? argv[3] : "ddpm_sample.ppm";
    ddpm_handle *handle = nullptr;
    if (ddpm_open(argv[1], "{}", &handle) != DDPM_OK) {
        std::fprintf(stderr, "ddpm_sample_cpp: %s\n", ddpm_last_error());
        return 2;
    }
    size_t h = 0, w = 0, c = 0;
    ddpm_image_shape(handle, &h, &w, &c);
    std::vector<uint8_t> images(64 * h * w * c);  // room for up to 64 images
    int status = ddpm_sample(handle, request, images.data(), images.size());
    if (status != DDPM_OK) {
        std::fprintf(stderr, "ddpm_sample_cpp: %s (code %d)\n", ddpm_last_error(), status);
        ddpm_close(handle);
        return 2;
    }
    std::ofstream out(out_path, std::ios::binary);
    out << (c == 1 ? "P5" : "P6") << "\n" << w << " " << h << "\n255\n";
    for (size_t i = 0; i < h * w; ++i) out.write(reinterpret_cast<const char *>(&images[i * c]), c == 1 ? 1 : 3);
    std::printf("wrote %s (%zux%zu, %zu channel(s))\n", out_path.c_str(), w, h, c);
    return ddpm_close(handle) == DDPM_OK ? 0 : 2;
}
