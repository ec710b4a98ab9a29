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

constexpr int kConvRows = 6;     // output channels per packed weight panel (GEMM tile rows)
constexpr int kConvCols = 16;    // output pixels per GEMM tile (two AVX2 / four NEON vectors)
constexpr int kDepthBlock = 256; // reduction (K) block: a K-block of one tile stays in L1
constexpr int kColBlock = 256;   // output columns per block: a K x N block stays in L2

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

// Output rows whose im2col columns are built at once: about kColBlock columns, so the
// scratch stays small (K x rows*OW, not K x OH*OW) and a block of it stays in cache.
inline int conv_block_rows(const ConvShape& s) {
  return std::min(s.OH, std::max(1, kColBlock / s.OW));
}

// Elements of the im2col scratch buffer (0 when the input is used in place).
inline int conv_col_elements(const ConvShape& s) {
  return conv_is_pointwise(s) ? 0 : (s.C / s.groups) * s.kh * s.kw * conv_block_rows(s) * s.OW;
}

// col[(c*kh + ky)*kw + kx][(oy - oy0)*OW + ox] = x[c][oy*sh - pt + ky*dh][ox*sw - pl + kx*dw]
// (or pad outside the image) for output rows oy0 <= oy < oy1.
template <typename T>
inline void im2col(const T* __restrict x, int channels, const ConvShape& s, int oy0, int oy1,
                   T pad, T* __restrict col) {
  const int n = (oy1 - oy0) * s.OW;
  for (int c = 0; c < channels; ++c) {
    for (int ky = 0; ky < s.kh; ++ky) {
      for (int kx = 0; kx < s.kw; ++kx) {
        T* row = col + static_cast<long>((c * s.kh + ky) * s.kw + kx) * n;
        for (int oy = oy0; oy < oy1; ++oy) {
          T* out = row + (oy - oy0) * s.OW;
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

// acc[r][j] += sum_k a[k*kConvRows + r] * b[k*ldb + j] for k in [0, depth), j < Cols.
// The sums live in a local array the compiler keeps in vector registers across the k loop.
template <typename T, typename Acc, int Cols>
inline void gemm_tile(const T* __restrict a, const T* __restrict b, long ldb, int depth,
                      Acc (&acc)[kConvRows][kConvCols]) {
  Acc sum[kConvRows][Cols];
  for (int r = 0; r < kConvRows; ++r)
    for (int j = 0; j < Cols; ++j) sum[r][j] = acc[r][j];
  for (int k = 0; k < depth; ++k) {
    const T* ak = a + k * kConvRows;
    const T* bk = b + k * ldb;
    Acc bv[Cols];
    for (int j = 0; j < Cols; ++j) bv[j] = static_cast<Acc>(bk[j]);
    for (int r = 0; r < kConvRows; ++r) {
      const Acc ar = static_cast<Acc>(ak[r]);
      for (int j = 0; j < Cols; ++j) sum[r][j] += ar * bv[j];
    }
  }
  for (int r = 0; r < kConvRows; ++r)
    for (int j = 0; j < Cols; ++j) acc[r][j] = sum[r][j];
}

#if defined(__GNUC__)
// GCC/Clang generic vectors (SSE/AVX/NEON, or scalar code where there is no SIMD): the 16
// columns of a tile are two 8-lane registers per row, kConvRows x 2 accumulators in all.
typedef float F32x8 __attribute__((vector_size(32)));
typedef int32_t I32x8 __attribute__((vector_size(32)));
typedef int8_t I8x8 __attribute__((vector_size(8)));

template <>
inline void gemm_tile<float, float, 16>(const float* __restrict a, const float* __restrict b,
                                        long ldb, int depth,
                                        float (&acc)[kConvRows][kConvCols]) {
  F32x8 lo[kConvRows], hi[kConvRows];
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&lo[r], &acc[r][0], sizeof(F32x8));
    std::memcpy(&hi[r], &acc[r][8], sizeof(F32x8));
  }
  for (int k = 0; k < depth; ++k) {
    const float* ak = a + k * kConvRows;
    F32x8 b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(F32x8));
    std::memcpy(&b1, b + k * ldb + 8, sizeof(F32x8));
    for (int r = 0; r < kConvRows; ++r) {
      lo[r] += ak[r] * b0;
      hi[r] += ak[r] * b1;
    }
  }
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&acc[r][0], &lo[r], sizeof(F32x8));
    std::memcpy(&acc[r][8], &hi[r], sizeof(F32x8));
  }
}

template <>
inline void gemm_tile<int8_t, int32_t, 16>(const int8_t* __restrict a,
                                           const int8_t* __restrict b, long ldb, int depth,
                                           int32_t (&acc)[kConvRows][kConvCols]) {
  I32x8 lo[kConvRows], hi[kConvRows];
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&lo[r], &acc[r][0], sizeof(I32x8));
    std::memcpy(&hi[r], &acc[r][8], sizeof(I32x8));
  }
  for (int k = 0; k < depth; ++k) {
    const int8_t* ak = a + k * kConvRows;
    I8x8 b0, b1;
    std::memcpy(&b0, b + k * ldb, sizeof(I8x8));
    std::memcpy(&b1, b + k * ldb + 8, sizeof(I8x8));
    const I32x8 w0 = __builtin_convertvector(b0, I32x8);
    const I32x8 w1 = __builtin_convertvector(b1, I32x8);
    for (int r = 0; r < kConvRows; ++r) {
      const int32_t ar = ak[r];
      lo[r] += ar * w0;
      hi[r] += ar * w1;
    }
  }
  for (int r = 0; r < kConvRows; ++r) {
    std::memcpy(&acc[r][0], &lo[r], sizeof(I32x8));
    std::memcpy(&acc[r][8], &hi[r], sizeof(I32x8));
  }
}
#endif  // __GNUC__

// A (M x K, packed panels) times columns [0, ncols) of B (K rows of stride ldb), blocked over
// K. Each finished tile is handed to store(row0, col0, cols, acc) with the full-K sums.
template <typename T, typename Acc, typename Store>
inline void gemm_blocked(const T* __restrict a_packed, const T* __restrict b, long ldb, int M,
                         int K, int ncols, Store store) {
  for (int n0 = 0; n0 < ncols; n0 += kColBlock) {
    const int n1 = std::min(ncols, n0 + kColBlock);
    for (int m0 = 0; m0 < M; m0 += kConvRows) {
      const T* panel = a_packed + static_cast<long>(m0) * K;
      for (int j0 = n0; j0 < n1; j0 += kConvCols) {
        const int cols = std::min(kConvCols, n1 - j0);
        Acc acc[kConvRows][kConvCols] = {};
        for (int k0 = 0; k0 < K; k0 += kDepthBlock) {
          const int depth = std::min(kDepthBlock, K - k0);
          const T* a = panel + k0 * kConvRows;
          const T* bb = b + k0 * ldb + j0;
          if (cols == kConvCols) {
            gemm_tile<T, Acc, kConvCols>(a, bb, ldb, depth, acc);
          } else {
            for (int k = 0; k < depth; ++k)
              for (int r = 0; r < kConvRows; ++r)
                for (int j = 0; j < cols; ++j)
                  acc[r][j] += static_cast<Acc>(a[k * kConvRows + r]) *
                               static_cast<Acc>(bb[k * ldb + j]);
          }
        }
        store(m0, j0, cols, acc);
      }
    }
  }
}

// Runs the convolution GEMM of each group over blocks of output rows: B is the input itself
// (pointwise) or the block's im2col columns. store(group, row0, col0, cols, acc) gets absolute
// output pixel indices.
template <typename T, typename Acc, typename Store>
inline void conv_gemm(const T* __restrict x, const ConvShape& s, const T* __restrict w_packed,
                      T pad, T* __restrict col, Store store) {
  const int cg = s.C / s.groups, mg = s.M / s.groups;
  const int k = cg * s.kh * s.kw, n = s.OH * s.OW;
  const int panel_rows = (mg + kConvRows - 1) / kConvRows * kConvRows;
  const bool pointwise = conv_is_pointwise(s);
  const int block_rows = pointwise ? s.OH : conv_block_rows(s);
  for (int g = 0; g < s.groups; ++g) {
    const T* xg = x + static_cast<long>(g) * cg * s.H * s.W;
    const T* wg = w_packed + static_cast<long>(g) * panel_rows * k;
    for (int oy0 = 0; oy0 < s.OH; oy0 += block_rows) {
      const int oy1 = std::min(s.OH, oy0 + block_rows);
      const int first = oy0 * s.OW, cols = (oy1 - oy0) * s.OW;
      if (!pointwise) im2col<T>(xg, cg, s, oy0, oy1, pad, col);
      const T* b = pointwise ? xg : col;
      const long ldb = pointwise ? n : cols;
      gemm_blocked<T, Acc>(wg, b, ldb, mg, k, cols,
                           [&](int m0, int j0, int width, const Acc(&acc)[kConvRows][kConvCols]) {
                             store(g, m0, first + j0, width, acc);
                           });
    }
  }
}

// y = act(conv(x, w) + bias [+ residual]); col: conv_col_elements(s) floats of scratch.
inline void conv2d_f32(const float* __restrict x, const ConvShape& s,
                       const float* __restrict w_packed, const float* __restrict bias,
                       const float* __restrict residual, bool relu, float* __restrict y,
                       float* __restrict col) {
  const int mg = s.M / s.groups;
  const long n = static_cast<long>(s.OH) * s.OW;
  conv_gemm<float, float>(
      x, s, w_packed, 0.0f, col,
      [&](int g, int m0, int j0, int cols, const float(&acc)[kConvRows][kConvCols]) {
        for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
          const int m = g * mg + m0 + r;
          float* out = y + m * n + j0;
          const float* res = residual ? residual + m * n + j0 : nullptr;
          const float bv = bias[m];
          for (int j = 0; j < cols; ++j) {
            float v = acc[r][j] + bv;
            if (res) v += res[j];
            out[j] = relu ? std::max(v, 0.0f) : v;
          }
        }
      });
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
  const int mg = s.M / s.groups;
  const long n = static_cast<long>(s.OH) * s.OW;
  conv_gemm<int8_t, int32_t>(
      x, s, w_packed, static_cast<int8_t>(q.input_zero), col,
      [&](int g, int m0, int j0, int cols, const int32_t(&acc)[kConvRows][kConvCols]) {
        for (int r = 0; r < kConvRows && m0 + r < mg; ++r) {
          const int m = g * mg + m0 + r;
          int8_t* out = y + m * n + j0;
          for (int j = 0; j < cols; ++j) {
            const int32_t v = multiply_by_quantized_multiplier(acc[r][j] + bias[m],
                                                               q.multiplier[m], q.shift[m]) +
                              q.output_zero;
            out[j] = static_cast<int8_t>(std::min(std::max(v, q.act_min), q.act_max));
          }
        }
      });
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
