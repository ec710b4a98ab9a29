// Non-convolution kernels of the d2seg edge runtime (NCHW, batch 1, no allocation). Kernels
// templated on T serve both the float and the int8 model: max pooling, resampling with
// interpolation tables computed at generation time, concatenation, padding and cropping.
#ifndef D2SEG_OPS_H
#define D2SEG_OPS_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace d2seg_rt {

struct PoolShape {
  int C, H, W, OH, OW, kh, kw, sh, sw, pt, pl, dh, dw;
};

// Max over each window; padded positions never win (as onnxruntime).
template <typename T>
inline void max_pool(const T* __restrict x, const PoolShape& s, T* __restrict y) {
  for (int c = 0; c < s.C; ++c) {
    const T* xc = x + static_cast<long>(c) * s.H * s.W;
    T* yc = y + static_cast<long>(c) * s.OH * s.OW;
    for (int oy = 0; oy < s.OH; ++oy) {
      for (int ox = 0; ox < s.OW; ++ox) {
        T best = std::numeric_limits<T>::lowest();
        for (int ky = 0; ky < s.kh; ++ky) {
          const int iy = oy * s.sh - s.pt + ky * s.dh;
          if (iy < 0 || iy >= s.H) continue;
          for (int kx = 0; kx < s.kw; ++kx) {
            const int ix = ox * s.sw - s.pl + kx * s.dw;
            if (ix >= 0 && ix < s.W) best = std::max(best, xc[iy * s.W + ix]);
          }
        }
        yc[oy * s.OW + ox] = best;
      }
    }
  }
}

// Resampling tables: output row oy reads input rows y0[oy], y1[oy] with weights wy0[oy],
// wy1[oy] (columns likewise). Nearest neighbour is y0 with weight 1.
template <typename Weight>
struct ResizeTables {
  int C, H, W, OH, OW;
  const int32_t* y0;
  const int32_t* y1;
  const Weight* wy0;
  const Weight* wy1;
  const int32_t* x0;
  const int32_t* x1;
  const Weight* wx0;
  const Weight* wx1;
};

// Bilinear in float: onnxruntime's weights and summation order.
inline void resize_bilinear_f32(const float* __restrict x, const ResizeTables<float>& t,
                                float* __restrict y) {
  for (int c = 0; c < t.C; ++c) {
    const float* xc = x + static_cast<long>(c) * t.H * t.W;
    float* yc = y + static_cast<long>(c) * t.OH * t.OW;
    for (int oy = 0; oy < t.OH; ++oy) {
      const float* r0 = xc + t.y0[oy] * t.W;
      const float* r1 = xc + t.y1[oy] * t.W;
      const float a = t.wy0[oy], b = t.wy1[oy];
      float* out = yc + oy * t.OW;
      for (int ox = 0; ox < t.OW; ++ox) {
        const float u = t.wx0[ox], v = t.wx1[ox];
        out[ox] = u * a * r0[t.x0[ox]] + v * a * r0[t.x1[ox]] + u * b * r1[t.x0[ox]] +
                  v * b * r1[t.x1[ox]];
      }
    }
  }
}

// Bilinear on int8 values with Q11 weights (each pair sums to 2048); the scale and zero point
// pass through unchanged because the weights sum to one. row: t.W int32 of scratch. Each
// output row blends its two input rows first (contiguous, vectorised), then reads the blended
// row at x0/x1: a*(u*p + v*q) + b*(u*r + v*s) == u*(a*p + b*r) + v*(a*q + b*s) exactly in
// int32 (|sum| <= 2048 * 2048 * 128), so the result is that of the 2x2 formula.
inline void resize_bilinear_s8(const int8_t* __restrict x, const ResizeTables<int16_t>& t,
                               int8_t* __restrict y, int32_t* __restrict row) {
  constexpr int32_t kRound = 1 << 21;
  const int in_w = t.W, out_w = t.OW;
  for (int c = 0; c < t.C; ++c) {
    const int8_t* xc = x + static_cast<long>(c) * t.H * in_w;
    int8_t* yc = y + static_cast<long>(c) * t.OH * out_w;
    for (int oy = 0; oy < t.OH; ++oy) {
      const int8_t* r0 = xc + t.y0[oy] * in_w;
      const int8_t* r1 = xc + t.y1[oy] * in_w;
      const int32_t a = t.wy0[oy], b = t.wy1[oy];
      for (int ix = 0; ix < in_w; ++ix) row[ix] = a * r0[ix] + b * r1[ix];
      int8_t* out = yc + oy * out_w;
      for (int ox = 0; ox < out_w; ++ox) {
        const int32_t sum = t.wx0[ox] * row[t.x0[ox]] + t.wx1[ox] * row[t.x1[ox]];
        // Round half away from zero, then divide by 2^22.
        out[ox] = static_cast<int8_t>(sum >= 0 ? (sum + kRound) >> 22 : -((-sum + kRound) >> 22));
      }
    }
  }
}

template <typename T, typename Weight>
inline void resize_nearest(const T* __restrict x, const ResizeTables<Weight>& t,
                           T* __restrict y) {
  for (int c = 0; c < t.C; ++c) {
    const T* xc = x + static_cast<long>(c) * t.H * t.W;
    T* yc = y + static_cast<long>(c) * t.OH * t.OW;
    for (int oy = 0; oy < t.OH; ++oy) {
      const T* row = xc + t.y0[oy] * t.W;
      for (int ox = 0; ox < t.OW; ++ox) yc[oy * t.OW + ox] = row[t.x0[ox]];
    }
  }
}

// Concatenation step: copy x (outer blocks of `block` elements) into y at `offset` within
// each output block of `out_block` elements.
template <typename T>
inline void concat_part(const T* __restrict x, int outer, int block, T* __restrict y,
                        int out_block, int offset) {
  for (int o = 0; o < outer; ++o)
    std::memcpy(y + static_cast<long>(o) * out_block + offset, x + static_cast<long>(o) * block,
                sizeof(T) * block);
}

// Output C x OH x OW of a window whose origin is input row `top`, column `left`.
struct WindowShape {
  int C, H, W, OH, OW, top, left;
};

// y[c][oy][ox] = x[c][oy + top][ox + left] where that lies inside x, `fill` elsewhere: a crop
// (Slice, top/left >= 0) or a constant pad (Pad, top/left <= 0; int8 fills with the zero point).
template <typename T>
inline void copy_window(const T* __restrict x, const WindowShape& s, T fill,
                        T* __restrict y) {
  const int begin = std::min(s.OW, std::max(0, -s.left));
  const int end = std::max(begin, std::min(s.OW, s.W - s.left));
  for (int c = 0; c < s.C; ++c) {
    const T* xc = x + static_cast<long>(c) * s.H * s.W;
    T* yc = y + static_cast<long>(c) * s.OH * s.OW;
    for (int oy = 0; oy < s.OH; ++oy) {
      T* out = yc + static_cast<long>(oy) * s.OW;
      const int iy = oy + s.top;
      if (iy < 0 || iy >= s.H) {
        std::fill(out, out + s.OW, fill);
        continue;
      }
      std::fill(out, out + begin, fill);
      std::memcpy(out + begin, xc + static_cast<long>(iy) * s.W + begin + s.left,
                  sizeof(T) * (end - begin));
      std::fill(out + end, out + s.OW, fill);
    }
  }
}

enum class BinaryOp { kAdd, kSub, kMul, kDiv };

template <BinaryOp Op>
inline float apply(float a, float b) {
  if constexpr (Op == BinaryOp::kAdd) return a + b;
  if constexpr (Op == BinaryOp::kSub) return a - b;
  if constexpr (Op == BinaryOp::kMul) return a * b;
  return a / b;
}

// y = a op b elementwise (same shapes); relu clamps at 0.
template <BinaryOp Op>
inline void binary_f32(const float* __restrict a, const float* __restrict b, int n, bool relu,
                       float* __restrict y) {
  for (int i = 0; i < n; ++i) {
    const float v = apply<Op>(a[i], b[i]);
    y[i] = relu ? std::max(v, 0.0f) : v;
  }
}

// y[i] = x[i] op c[(i / period) % count] (or c op x with constant_first): a scalar, per-channel
// or full constant operand.
template <BinaryOp Op>
inline void binary_const_f32(const float* __restrict x, const float* __restrict c, int count,
                             int period, int n, bool constant_first, bool relu,
                             float* __restrict y) {
  for (int start = 0, k = 0; start < n; start += period, k = (k + 1) % count) {
    const float cv = c[k];
    const int end = std::min(n, start + period);
    for (int i = start; i < end; ++i) {
      const float v = constant_first ? apply<Op>(cv, x[i]) : apply<Op>(x[i], cv);
      y[i] = relu ? std::max(v, 0.0f) : v;
    }
  }
}

inline void relu_f32(const float* __restrict x, int n, float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = std::max(x[i], 0.0f);
}

inline void sigmoid_f32(const float* __restrict x, int n, float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

// ONNX Clip with constant bounds (an unfused ReLU6).
inline void clip_f32(const float* __restrict x, int n, float lo, float hi, float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = std::min(std::max(x[i], lo), hi);
}

// ONNX HardSigmoid: max(0, min(1, alpha * x + beta)).
inline void hard_sigmoid_f32(const float* __restrict x, int n, float alpha, float beta,
                             float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = std::max(0.0f, std::min(1.0f, alpha * x[i] + beta));
}

// ONNX HardSwish: x * max(0, min(1, x / 6 + 1/2)).
inline void hard_swish_f32(const float* __restrict x, int n, float* __restrict y) {
  for (int i = 0; i < n; ++i)
    y[i] = x[i] * std::max(0.0f, std::min(1.0f, x[i] * (1.0f / 6.0f) + 0.5f));
}

// SiLU (Swish): x * sigmoid(x), the x * Sigmoid(x) pair of an EfficientNet export.
inline void silu_f32(const float* __restrict x, int n, float* __restrict y) {
  for (int i = 0; i < n; ++i) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}

// Mean over each channel's `pixels` positions (ONNX GlobalAveragePool): y has C values.
inline void global_avg_pool_f32(const float* __restrict x, int C, int pixels,
                                float* __restrict y) {
  for (int c = 0; c < C; ++c) {
    const float* xc = x + static_cast<long>(c) * pixels;
    float sum = 0.0f;
    for (int p = 0; p < pixels; ++p) sum += xc[p];
    y[c] = sum / static_cast<float>(pixels);
  }
}

// y[c][p] = x[c][p] * gate[c]: a squeeze-excite rescaling by an N x C x 1 x 1 tensor.
inline void mul_channel_f32(const float* __restrict x, const float* __restrict gate, int C,
                            int pixels, float* __restrict y) {
  for (int c = 0; c < C; ++c) {
    const float g = gate[c];
    const float* xc = x + static_cast<long>(c) * pixels;
    float* yc = y + static_cast<long>(c) * pixels;
    for (int p = 0; p < pixels; ++p) yc[p] = xc[p] * g;
  }
}

// Softmax over the C channels of each of the `pixels` positions.
inline void softmax_channels_f32(const float* __restrict x, int C, int pixels,
                                 float* __restrict y) {
  for (int p = 0; p < pixels; ++p) {
    float top = x[p];
    for (int c = 1; c < C; ++c) top = std::max(top, x[static_cast<long>(c) * pixels + p]);
    float sum = 0.0f;
    for (int c = 0; c < C; ++c) {
      const float e = std::exp(x[static_cast<long>(c) * pixels + p] - top);
      y[static_cast<long>(c) * pixels + p] = e;
      sum += e;
    }
    for (int c = 0; c < C; ++c) y[static_cast<long>(c) * pixels + p] /= sum;
  }
}

// Index of the largest channel (the first on ties), written as a float.
inline void argmax_channels_f32(const float* __restrict x, int C, int pixels,
                                float* __restrict y) {
  for (int p = 0; p < pixels; ++p) {
    int best = 0;
    for (int c = 1; c < C; ++c)
      if (x[static_cast<long>(c) * pixels + p] > x[static_cast<long>(best) * pixels + p]) best = c;
    y[p] = static_cast<float>(best);
  }
}

}  // namespace d2seg_rt

#endif  // D2SEG_OPS_H
