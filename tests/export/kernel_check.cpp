// Runs the int8 kernels whose SIMD / DSP paths have shape- and value-dependent edges on fixed
// pseudo-random data and writes every output byte to argv[1]: built portably (-O1) and for a
// SIMD target (-march=haswell; Cortex-M7 in QEMU), the files must be identical
// (tests/export/test_edge_int8_kernels.py). Static buffers: no heap on the board.
#include <cstdio>
#include <cstdint>

#include "d2seg_conv.h"

namespace {
uint32_t state = 12345;
uint32_t next() { return state = state * 1664525u + 1013904223u; }
int8_t weight() { return static_cast<int8_t>(static_cast<int>(next() >> 24) % 255 - 127); }

int8_t x[4096], w[512], y[4096];
int32_t acc[1024], bias[64], multiplier[64], shift[64];
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::FILE* out = std::fopen(argv[1], "wb");
  if (!out) return 1;
  // requantize_row: accumulators of every magnitude, right shifts 0-31 and left shifts 1-3
  // (values kept where x << left fits int32), rows of 16-lane steps plus a tail.
  for (int s = -31; s <= 3; ++s) {
    for (int i = 0; i < 37; ++i) {
      const int32_t v = static_cast<int32_t>(next());
      acc[i] = s > 0 ? v >> (s + 1) : v >> (next() % 31);
    }
    acc[0] = 0, acc[1] = -1, acc[2] = 1 << (30 - (s > 0 ? s : 0));
    const int32_t m = static_cast<int32_t>((1u << 30) + (next() >> 2));
    const int32_t zero = static_cast<int32_t>(next() % 41) - 20;
    d2seg_rt::requantize_row(acc, 37, static_cast<int32_t>(next() % 2001) - 1000, m, s, zero,
                             -128, 127, y);
    std::fwrite(y, 1, 37, out);
  }
  // depthwise_conv2d_s8: (channels, height, width, kernel, stride, pad): stride 1 with DSP tap
  // pairs 1-4,
  // stride 2 with tap quads 1-2, even and odd widths, rows too narrow for the DSP range,
  // kernels and rows wider than it takes (generic path).
  const int shapes[][6] = {{3, 9, 17, 3, 1, 1}, {2, 8, 16, 5, 1, 2}, {2, 7, 13, 7, 1, 3},
                           {2, 6, 11, 1, 1, 0}, {2, 5, 4, 3, 1, 1},  {2, 9, 15, 3, 2, 1},
                           {1, 6, 12, 5, 1, 0}, {2, 6, 10, 4, 1, 1}, {2, 6, 9, 9, 1, 4},
                           {2, 8, 16, 3, 2, 1}, {2, 9, 17, 5, 2, 2}, {1, 6, 7, 5, 2, 2},
                           {2, 5, 3, 3, 2, 1},  {2, 8, 20, 7, 2, 3}, {2, 6, 12, 2, 2, 0},
                           {1, 7, 23, 9, 2, 4},  {1, 3, 140, 3, 1, 1}};
  for (const auto& p : shapes) {
    const int c = p[0], h = p[1], wd = p[2], k = p[3], st = p[4], pad = p[5];
    const int oh = (h + 2 * pad - k) / st + 1, ow = (wd + 2 * pad - k) / st + 1;
    const d2seg_rt::ConvShape s{c, h, wd, c, oh, ow, k, k, st, st, pad, pad, 1, 1, c};
    for (int i = 0; i < c * h * wd; ++i) x[i] = static_cast<int8_t>(next() >> 24);
    for (int i = 0; i < c * k * k; ++i) w[i] = weight();
    for (int i = 0; i < c; ++i) {
      bias[i] = static_cast<int32_t>(next() % 4001) - 2000;
      multiplier[i] = static_cast<int32_t>((1u << 30) + (next() >> 2));
      shift[i] = -7 - static_cast<int32_t>(next() % 3);
    }
    const int32_t input_zero = static_cast<int32_t>(next() % 21) - 10;
    const d2seg_rt::ConvQuant q{input_zero, -3, -128, 127, multiplier, shift};
    d2seg_rt::depthwise_conv2d_s8(x, s, w, bias, q, y, acc);
    std::fwrite(y, 1, c * oh * ow, out);
  }
  return std::fclose(out) == 0 ? 0 : 1;
}
