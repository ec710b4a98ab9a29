// Convolution kernels of the d2seg edge runtime: im2col (skipped for 1x1/stride-1 convolutions)
// + a cache-blocked GEMM whose inner loops run over contiguous output columns, so the compiler
// vectorises them at -O3. Weights are packed at generation time (d2seg/export/edge/emit.py) in
// panels of kConvRows output channels: panel p holds W[p*kConvRows + r][k] at [k*kConvRows + r],
// rows past M zero. Layout is NCHW, batch 1; nothing allocates.
#ifndef D2SEG_CONV_H
#define D2SEG_CONV_H

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "d2seg_quant.h"

namespace d2seg_rt {

constexpr int kConvRows = 4;     // output channels per packed weight panel (GEMM tile rows)
constexpr int kConvCols = 16;    // output pixels per GEMM tile (two AVX2 / four NEON vectors)
constexpr int kDepthBlock = 128; // reduction (K) block: a K-block of one tile stays in L1
constexpr int kColBlock = 512;   // output columns per block: a K x N block stays in L2

struct ConvShape {
  int C, H, W;          // input channels, height, width
  int M, OH, OW;        // output channels, height, width
  int kh, kw, sh, sw;   // kernel size and stride
  int pt, pl, dh, dw;   // top/left padding and dilation (bottom/right follow from OH/OW)
  int groups;
};

inline bool conv_is_pointwise(const ConvShape& s) {
  return s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 &&
         s.OH == s.H && s.OW == s.W;
}

// Elements of the im2col scratch buffer of one group (0 when the input is used in place).
inline int conv_col_elements(const ConvShape& s) {
  return conv_is_pointwise(s) ? 0 : (s.C / s.groups) * s.kh * s.kw * s.OH * s.OW;
}

// col[(c*kh + ky)*kw + kx][oy*OW + ox] = x[c][oy*sh - pt + ky*dh][ox*sw - pl + kx*dw], or pad.
template <typename T>
inline void im2col(const T* __restrict x, int channels, const ConvShape& s, T pad,
                   T* __restrict col) {
  const int n = s.OH * s.OW;
  for (int c = 0; c < channels; ++c) {
    for (int ky = 0; ky < s.kh; ++ky) {
      for (int kx = 0; kx < s.kw; ++kx) {
        T* row = col + static_cast<long>((c * s.kh + ky) * s.kw + kx) * n;
        for (int oy = 0; oy < s.OH; ++oy) {
          T* out = row + oy * s.OW;
          const int iy = oy * s.sh - s.pt + ky * s.dh;
          if (iy < 0 || iy >= s.H) {
            std::fill(out, out + s.OW, pad);
            continue;
          }
          const T* in = x + (static_cast<long>(c) * s.H + iy) * s.W;
          const int x0 = kx * s.dw - s.pl;
          for (int ox = 0; ox < s.OW; ++ox) {
            const int ix = ox * s.sw + x0;
            out[ox] = (ix >= 0 && ix < s.W) ? in[ix] : pad;
          }
        }
      }
    }
  }
}

// acc[r][j] += sum_k a[k*kConvRows + r] * b[k*ldb + j] for k in [0, depth), j < cols.
template <typename T, typename Acc, int Cols>
inline void gemm_tile(const T* __restrict a, const T* __restrict b, int ldb, int depth,
                      Acc (&acc)[kConvRows][kConvCols]) {
  for (int k = 0; k < depth; ++k) {
    const T* ak = a + k * kConvRows;
    const T* bk = b + static_cast<long>(k) * ldb;
    for (int r = 0; r < kConvRows; ++r) {
      const Acc ar = static_cast<Acc>(ak[r]);
      for (int j = 0; j < Cols; ++j) acc[r][j] += ar * static_cast<Acc>(bk[j]);
    }
  }
}

// acc = A (rows x K, packed) * B (K x N, row stride N), blocked over K and N. Each finished
// rows x cols tile is handed to store(row0, col0, cols, acc) with the full-K sums.
template <typename T, typename Acc, typename Store>
inline void gemm_blocked(const T* __restrict a_packed, const T* __restrict b, int M, int K, int N,
                         Store store) {
  for (int n0 = 0; n0 < N; n0 += kColBlock) {
    const int n1 = std::min(N, n0 + kColBlock);
    for (int m0 = 0; m0 < M; m0 += kConvRows) {
      const T* panel = a_packed + static_cast<long>(m0) * K;
      for (int j0 = n0; j0 < n1; j0 += kConvCols) {
        const int cols = std::min(kConvCols, n1 - j0);
        Acc acc[kConvRows][kConvCols] = {};
        for (int k0 = 0; k0 < K; k0 += kDepthBlock) {
          const int depth = std::min(kDepthBlock, K - k0);
          const T* a = panel + k0 * kConvRows;
          const T* bb = b + static_cast<long>(k0) * N + j0;
          if (cols == kConvCols) {
            gemm_tile<T, Acc, kConvCols>(a, bb, N, depth, acc);
          } else {
            for (int k = 0; k < depth; ++k)
              for (int r = 0; r < kConvRows; ++r)
                for (int j = 0; j < cols; ++j)
                  acc[r][j] += static_cast<Acc>(a[k * kConvRows + r]) *
                               static_cast<Acc>(bb[static_cast<long>(k) * N + j]);
          }
        }
        store(m0, j0, cols, acc);
      }
    }
  }
}

// y = act(conv(x, w) + bias [+ residual]); col: conv_col_elements(s) floats of scratch.
inline void conv2d_f32(const float* __restrict x, const ConvShape& s,
                       const float* __restrict w_packed, const float* __restrict bias,
                       const float* __restrict residual, bool relu, float* __restrict y,
                       float* __restrict col) {
  const int cg = s.C / s.groups, mg = s.M / s.groups;
  const int k = cg * s.kh * s.kw, n = s.OH * s.OW;
  const int panel_rows = (mg + kConvRows - 1) / kConvRows * kConvRows;
  for (int g = 0; g < s.groups; ++g) {
    const float* xg = x + static_cast<long>(g) * cg * s.H * s.W;
    const float* b = xg;
    if (!conv_is_pointwise(s)) {
      im2col<float>(xg, cg, s, 0.0f, col);
      b = col;
    }
    float* yg = y + static_cast<long>(g) * mg * n;
    const float* rg = residual ? residual + static_cast<long>(g) * mg * n : nullptr;
    const float* bg = bias + g * mg;
    auto store = [&](int m0, int j0, int cols, const float (&acc)[kConvRows][kConvCols]) {
      for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
        float* out = yg + static_cast<long>(m0 + r) * n + j0;
        const float* res = rg ? rg + static_cast<long>(m0 + r) * n + j0 : nullptr;
        const float bv = bg[m0 + r];
        for (int j = 0; j < cols; ++j) {
          float v = acc[r][j] + bv;
          if (res) v += res[j];
          out[j] = relu ? std::max(v, 0.0f) : v;
        }
      }
    };
    gemm_blocked<float, float>(w_packed + static_cast<long>(g) * panel_rows * k, b, mg, k, n, store);
  }
}

// Per-output-channel requantisation of an int8 convolution (TFLite int8 spec).
struct ConvQuant {
  int32_t input_zero;           // input zero point (also the im2col padding value)
  int32_t output_zero;          // output zero point
  int32_t act_min, act_max;     // output clamp (act_min = output_zero with a fused ReLU)
  const int32_t* multiplier;    // per output channel, Q31
  const int32_t* shift;         // per output channel, power-of-two exponent
};

// int8 convolution: int32 accumulation of int8 x int8, bias (zero-point correction folded in
// at generation time) and fixed-point requantisation; no float. col: conv_col_elements(s).
inline void conv2d_s8(const int8_t* __restrict x, const ConvShape& s,
                      const int8_t* __restrict w_packed, const int32_t* __restrict bias,
                      const ConvQuant& q, int8_t* __restrict y, int8_t* __restrict col) {
  const int cg = s.C / s.groups, mg = s.M / s.groups;
  const int k = cg * s.kh * s.kw, n = s.OH * s.OW;
  const int panel_rows = (mg + kConvRows - 1) / kConvRows * kConvRows;
  for (int g = 0; g < s.groups; ++g) {
    const int8_t* xg = x + static_cast<long>(g) * cg * s.H * s.W;
    const int8_t* b = xg;
    if (!conv_is_pointwise(s)) {
      im2col<int8_t>(xg, cg, s, static_cast<int8_t>(q.input_zero), col);
      b = col;
    }
    int8_t* yg = y + static_cast<long>(g) * mg * n;
    const int m_base = g * mg;
    auto store = [&](int m0, int j0, int cols, const int32_t (&acc)[kConvRows][kConvCols]) {
      for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
        const int m = m_base + m0 + r;
        int8_t* out = yg + static_cast<long>(m0 + r) * n + j0;
        for (int j = 0; j < cols; ++j) {
          int32_t v = multiply_by_quantized_multiplier(acc[r][j] + bias[m], q.multiplier[m],
                                                       q.shift[m]) + q.output_zero;
          out[j] = static_cast<int8_t>(std::min(std::max(v, q.act_min), q.act_max));
        }
      }
    };
    gemm_blocked<int8_t, int32_t>(w_packed + static_cast<long>(g) * panel_rows * k, b, mg, k, n, store);
  }
}

// ConvTranspose (group 1): y[m][iy*sh - pt + ky*dh][ix*sw - pl + kx*dw] += x[c][iy][ix] *
// w[c][m][ky][kx], then + bias. w keeps ONNX's C x M x kh x kw layout.
inline void conv_transpose2d_f32(const float* __restrict x, const ConvShape& s,
                                 const float* __restrict w, const float* __restrict bias,
                                 float* __restrict y) {
  const long plane = static_cast<long>(s.OH) * s.OW;
  for (int m = 0; m < s.M; ++m) std::fill(y + m * plane, y + (m + 1) * plane, bias[m]);
  for (int c = 0; c < s.C; ++c) {
    for (int m = 0; m < s.M; ++m) {
      const float* wk = w + (static_cast<long>(c) * s.M + m) * s.kh * s.kw;
      float* ym = y + m * plane;
      for (int iy = 0; iy < s.H; ++iy) {
        const float* xr = x + (static_cast<long>(c) * s.H + iy) * s.W;
        for (int ky = 0; ky < s.kh; ++ky) {
          const int oy = iy * s.sh - s.pt + ky * s.dh;
          if (oy < 0 || oy >= s.OH) continue;
          for (int kx = 0; kx < s.kw; ++kx) {
            const float wv = wk[ky * s.kw + kx];
            for (int ix = 0; ix < s.W; ++ix) {
              const int ox = ix * s.sw - s.pl + kx * s.dw;
              if (ox >= 0 && ox < s.OW) ym[oy * s.OW + ox] += xr[ix] * wv;
            }
          }
        }
      }
    }
  }
}

}  // namespace d2seg_rt

#endif  // D2SEG_CONV_H
